"""Safe by default (issue 21): what a production server (DEBUG off) refuses and what it answers.

Start-up refusals of uvicorn and of gunicorn's master (before any worker forks), API keys on by
default and the one warning line when they are turned off; the HTTP tests run against two gunicorn
workers, as in production.
"""

import json
import os
import secrets
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dspysite.safety import DEVELOPMENT_SECRET_KEY, project_secret_key
from tests.databases import ServerDatabase
from tests.support import FIXTURES, ROOT, Running, free_port, project_config, service
from tests.telemetry.conftest import wait_for
from tests.workers import gunicorn_workers

pytestmark = pytest.mark.integration

SERVICE_PROJECT = FIXTURES / "service_project"
UVICORN = [sys.executable, "-m", "uvicorn", "dspysite.asgi:application", "--host", "127.0.0.1"]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]
UNSAFE_KEYS = {
    "unset": (None, "SECRET_KEY is not set"),
    "development": (DEVELOPMENT_SECRET_KEY, "SECRET_KEY is the public development value"),
    "short": ("k3y-" + secrets.token_hex(10), "SECRET_KEY is weak (Django's security.W009): 24 characters"),
    "few unique": ("abcd" * 20, "SECRET_KEY is weak (Django's security.W009): 80 characters, 4 unique"),
    "django-insecure": ("django-insecure-" + secrets.token_urlsafe(48), "SECRET_KEY is weak"),
}


def start_and_stop(
    argv: list[str], tmp_path: Path, config: Path, **env: str | None
) -> subprocess.CompletedProcess:
    """A server that must refuse to start: it exits by itself (bounded by the timeout)."""
    environment = {
        **os.environ,
        "DSPY_PROJECT_DIR": str(SERVICE_PROJECT),
        "DSPY_CONFIG": str(config),
        "BIND": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'refused.sqlite3'}",
    }
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
@pytest.mark.parametrize("case", list(UNSAFE_KEYS))
def test_debug_off_refuses_an_unsafe_secret_key_with_one_line(
    server: str, case: str, tmp_path: Path, mock: Running
) -> None:
    key, says = UNSAFE_KEYS[case]
    # uvicorn reads WEB_CONCURRENCY as its --workers: only gunicorn gets it.
    argv = [*UVICORN, "--port", str(free_port())] if server == "uvicorn" else GUNICORN
    gunicorn = server == "gunicorn"
    workers = {"WEB_CONCURRENCY": "2" if gunicorn else None,
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus") if gunicorn else None}  # fmt: skip
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    result = start_and_stop(argv, tmp_path, config, SECRET_KEY=key, DEBUG=None, DSPY_AUTH="false", **workers)
    assert result.returncode == 2, result.stderr[-2000:]
    refusals = [line for line in result.stderr.splitlines() if line.startswith("dspy-django: cannot start:")]
    assert len(refusals) == 1, result.stderr[-2000:]
    assert says in refusals[0]
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr  # gunicorn's master refused before forking


def test_debug_on_starts_without_a_key(tmp_path: Path, mock: Running) -> None:
    """Development (runserver sets DEBUG on): no key needed; bounded by a readiness poll."""
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    port = free_port()
    environment = {**os.environ, "DSPY_PROJECT_DIR": str(SERVICE_PROJECT), "DSPY_CONFIG": str(config),
                   "DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.sqlite3'}"}  # fmt: skip
    environment.pop("SECRET_KEY", None)
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen([*UVICORN, "--port", str(port)], cwd=ROOT, env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        from tests.support import wait_until_ready

        wait_until_ready(f"http://127.0.0.1:{port}/health/live", process)
        # Keys are off with DEBUG on: the program answers without one, and nothing warns.
        answer = httpx.post(f"http://127.0.0.1:{port}/EchoSync", json={"question": "dev"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert "API keys are off" not in log.read_text()
    finally:
        from tests.support import stop

        stop(process)


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, mock: Running
) -> Iterator[tuple[Running, ServerDatabase]]:
    """Two gunicorn workers, DEBUG off, nothing said about keys: keys are on."""
    tmp = tmp_path_factory.mktemp("keyed")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    # DSPY_AUTH="" is no override (the helpers open the API for the other tests): the default decides.
    with gunicorn_workers(tmp, SERVICE_PROJECT, config, DSPY_AUTH="", MAX_BODY_BYTES="65536") as running:
        yield running


def api_key(database: ServerDatabase, name: str, scopes: str = "invoke,read") -> str:
    env = {**os.environ, **database.env(), "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "manage.py", "apikey", "create", name, "--scopes", scopes]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_api_keys_are_on_by_default_with_debug_off(keyed: tuple[Running, ServerDatabase]) -> None:
    server, database = keyed
    refused = httpx.post(f"{server.url}/EchoSync", json={"question": "no key"}, timeout=30)
    assert refused.status_code == 401, refused.text
    key = api_key(database, "default-on")
    headers = {"Authorization": f"Bearer {key}"}
    answered = httpx.post(f"{server.url}/EchoSync", json={"question": "key"}, headers=headers, timeout=30)
    assert answered.status_code == 200, answered.text
    assert "API keys are off" not in server.log()


def test_dspy_auth_false_opens_the_api_with_one_warning_line(tmp_path: Path, mock: Running) -> None:
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    with gunicorn_workers(tmp_path, SERVICE_PROJECT, config, DSPY_AUTH="false") as (server, _database):
        answered = httpx.post(f"{server.url}/EchoSync", json={"question": "open"}, timeout=30)
        assert answered.status_code == 200, answered.text
        warnings = [line for line in server.log().splitlines() if "API keys are off" in line]
        assert len(warnings) == 1, server.log()  # said by the master, once, not by each worker


def test_the_project_secret_is_made_once_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / ".dspy-django"
    first = project_secret_key(state)
    assert len(first) >= 50 and len(set(first)) >= 5
    assert stat.S_IMODE((state / "secret_key").stat().st_mode) == 0o600
    assert project_secret_key(state) == first


def bearer(keyed: tuple[Running, ServerDatabase]) -> dict[str, str]:
    """One key for the module's server (created on first use)."""
    server, database = keyed
    if not hasattr(server, "key"):
        server.key = api_key(database, "http-tests")  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {server.key}"}  # type: ignore[attr-defined]


FOREIGN = "rebound.example.com"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/EchoSync"), ("GET", "/api/logs/EchoSync"), ("GET", "/programs"), ("GET", "/openapi.json"),
     ("GET", "/admin/login/"), ("GET", "/ui/EchoSync"), ("GET", "/static/admin/css/base.css")],
)  # fmt: skip
def test_a_foreign_host_is_400_json_on_every_path(
    keyed: tuple[Running, ServerDatabase], method: str, path: str
) -> None:
    server, _ = keyed
    headers = {"Host": FOREIGN, **bearer(keyed)}
    response = httpx.request(
        method, f"{server.url}{path}", json={"question": "x"}, headers=headers, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert FOREIGN in response.json()["detail"]


def test_allowed_hosts_with_any_port_and_the_exempt_paths_pass(keyed: tuple[Running, ServerDatabase]) -> None:
    server, _ = keyed
    for host in ("127.0.0.1", "localhost:1234", "[::1]:80", "LOCALHOST"):
        response = httpx.get(f"{server.url}/programs", headers={"Host": host, **bearer(keyed)}, timeout=30)
        assert response.status_code == 200, (host, response.text)
    # Probes come by IP address; /mcp keeps the MCP SDK's own check (421).
    assert httpx.get(f"{server.url}/health/live", headers={"Host": FOREIGN}, timeout=30).status_code == 200
    mcp = httpx.post(f"{server.url}/mcp", json={}, headers={"Host": FOREIGN}, timeout=30)
    assert mcp.status_code == 421, mcp.text


@pytest.mark.parametrize("path", ["/EchoSync", "/EchoSync/batch", "/EchoSync/stream"])
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_program_body_that_is_not_json_is_415(
    keyed: tuple[Running, ServerDatabase], path: str, content_type: str | None
) -> None:
    server, _ = keyed
    headers = {**bearer(keyed), **({"Content-Type": content_type} if content_type else {})}
    response = httpx.post(f"{server.url}{path}", content=b'{"question": "x"}', headers=headers, timeout=30)
    assert response.status_code == 415, response.text
    assert "Content-Type: application/json" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/x+json"],
)
def test_json_content_types_are_served(keyed: tuple[Running, ServerDatabase], content_type: str) -> None:
    server, _ = keyed
    headers = {**bearer(keyed), "Content-Type": content_type}
    response = httpx.post(
        f"{server.url}/EchoSync", content=b'{"question": "ct"}', headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text


def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all(
    keyed: tuple[Running, ServerDatabase],
) -> None:
    """300 MiB offered in chunks, limit 64 KiB: the 413 comes after a few MiB at most (socket buffers),
    then the server closes the connection instead of reading (or spooling) the rest.

    The server closes with the rest of the body unread, so its kernel may reset the connection
    before this client has read the 413 (no lingering close): the 413 is then read from the
    request's log row, which the refusal writes."""
    server, _ = keyed
    port = int(server.url.rsplit(":", 1)[1])
    request_id = f"chunked-{time.time_ns()}"
    chunk = b"x" * 65536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    offered = 300 * 1024 * 1024
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /EchoSync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"X-Request-ID: {request_id}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            while sent < offered:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
                sock.sendall(frame)
                sent += len(chunk)
            while data := sock.recv(65536):  # the rest of the answer, then the close (bounded)
                answer += data
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 64 * 1024 * 1024, f"{sent} bytes were taken before the connection closed"
    if answer:  # as much of the 413 as arrived before the reset: its head, maybe its body
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower()
        if b"content-length: %d" % len(body) in head.lower():  # the whole body arrived
            assert json.loads(body)["detail"] == "Request body is larger than 65536 bytes"
    # Refused before any key was read, the row belongs to no key: only an admin key reads it.
    auth = {"Authorization": f"Bearer {api_key(keyed[1], 'chunked-admin', 'invoke,read,admin')}"}
    logged = wait_for(lambda: logged_status(server, request_id, auth), 30, "the 413's log row")
    assert logged == 413


def logged_status(server: Running, request_id: str, headers: dict[str, str]) -> int | None:
    """The status of the call's log row, once the writer has flushed it (keys are on: a key reads it)."""
    logs = httpx.get(f"{server.url}/api/logs/EchoSync", params={"limit": 50}, headers=headers, timeout=30)
    for row in logs.json().get("logs", []):
        if row["request_id"] == request_id:
            return row["status_code"]
    return None


def raw_get(server: Running, target: str) -> bytes:
    """A GET sent as written (an HTTP client would normalise the dot segments away)."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer


@pytest.mark.parametrize(
    "target",
    ["/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd",
     "/static/admin/../../../../../etc/passwd", "/static/%2E%2E%5C%2E%2E%5Cetc%5Cpasswd"],
)  # fmt: skip
def test_a_static_path_out_of_the_static_directories_is_404(
    keyed: tuple[Running, ServerDatabase], target: str
) -> None:
    server, _ = keyed
    answer = raw_get(server, target)
    assert answer.startswith(b"HTTP/1.1 404"), answer[:300]
    assert b"root:" not in answer
    assert raw_get(server, "/static/admin/css/base.css").startswith(b"HTTP/1.1 200")  # files still served


def test_the_openapi_document_and_docs_need_a_key_when_keys_are_on(
    keyed: tuple[Running, ServerDatabase],
) -> None:
    server, _ = keyed
    for path in ("/openapi.json", "/docs"):
        refused = httpx.get(f"{server.url}{path}", timeout=30)
        assert refused.status_code == 401, refused.text[:200]
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "EchoSync" not in refused.text
    document = httpx.get(f"{server.url}/openapi.json", headers=bearer(keyed), timeout=30)
    assert document.status_code == 200
    assert "/EchoSync" in document.json()["paths"]
    assert httpx.get(f"{server.url}/docs", headers=bearer(keyed), timeout=30).status_code == 200


def test_dspy_public_docs_publishes_them(tmp_path: Path, mock: Running) -> None:
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url, server={"auth": True})
    with service(tmp_path, SERVICE_PROJECT, config, DSPY_PUBLIC_DOCS="true") as server:
        assert httpx.get(f"{server.url}/openapi.json", timeout=30).status_code == 200
        assert httpx.post(f"{server.url}/EchoSync", json={"question": "x"}, timeout=30).status_code == 401


HTTPS = {
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
}


def check_deploy(tmp_path: Path, **env: str) -> str:
    environment = {**os.environ, "ALLOWED_HOSTS": "api.example.com", "LOG_LEVEL": "WARNING",
                   "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}", **env}  # fmt: skip
    environment.pop("DEBUG", None)
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return done.stdout + done.stderr


def test_check_deploy_is_clean_in_the_documented_set_up(tmp_path: Path) -> None:
    """docs/DEPLOYMENT.md's production settings; without the HTTPS ones the browser-path checks fire
    (they are run with BROWSER_MIDDLEWARE in place, not skipped)."""
    key = secrets.token_urlsafe(50)
    assert "System check identified no issues (6 silenced)." in check_deploy(
        tmp_path, SECRET_KEY=key, **HTTPS
    )
    bare = check_deploy(tmp_path, SECRET_KEY=key)
    for warning in ("security.W004", "security.W008", "security.W010", "security.W016"):
        assert warning in bare
    assert "security.W009" in check_deploy(tmp_path, SECRET_KEY="short", **HTTPS)
