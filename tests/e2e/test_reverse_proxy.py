"""The reference reverse proxy (docs/DEPLOYMENT.md, "Reverse proxy"): nginx in front of two gunicorn
workers. Slow headers and slow bodies are cut after nginx's timeouts, never reaching a worker; the
body limit is enforced at the proxy (413 JSON); ``X-Forwarded-*`` is trusted from the proxy's
address only (``FORWARDED_ALLOW_IPS``).
"""

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.nginx import Proxy, nginx
from tests.support import FIXTURES, Running, project_config
from tests.workers import gunicorn_workers

pytestmark = pytest.mark.integration

SERVICE_PROJECT = FIXTURES / "service_project"
PROXY_ADDRESS = "127.0.0.2"  # nginx connects from here: the only address the service trusts
TIMEOUT_S = 2  # nginx's client_header_timeout and client_body_timeout in this test
LIMIT = 65536


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mock: Running) -> Iterator[tuple[Proxy, Running]]:
    tmp = tmp_path_factory.mktemp("proxy")
    config = project_config(SERVICE_PROJECT, tmp, mock.url)
    settings = {
        "FORWARDED_ALLOW_IPS": PROXY_ADDRESS,
        "SECURE_SSL_REDIRECT": "true",
        "MAX_BODY_BYTES": str(LIMIT),
    }
    with gunicorn_workers(tmp, SERVICE_PROJECT, config, **settings) as (server, _database):
        upstream = server.url.removeprefix("http://")
        with nginx(tmp / "nginx", upstream, PROXY_ADDRESS, "https", TIMEOUT_S, TIMEOUT_S, LIMIT) as proxy:
            yield proxy, server


def closed_within(sock: socket.socket, bound_s: float) -> tuple[float, bytes]:
    """Seconds until the peer closes (reads whatever it says first), failing after ``bound_s``."""
    sock.settimeout(bound_s)
    started = time.monotonic()
    said = b""
    try:
        while data := sock.recv(65536):
            said += data
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {bound_s} s")
    return time.monotonic() - started, said


def test_a_program_answers_through_the_proxy(stack: tuple[Proxy, Running]) -> None:
    proxy, _ = stack
    response = httpx.post(f"{proxy.url}/EchoSync", json={"question": "proxied"}, timeout=30)
    assert response.status_code == 200, response.text
    assert "proxied" in response.json()["answer"]


def test_slow_headers_are_cut_and_do_not_starve_other_clients(stack: tuple[Proxy, Running]) -> None:
    proxy, _ = stack
    slow = []
    for _ in range(100):  # half-sent headers, held open
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(sock)
    try:
        assert httpx.get(f"{proxy.url}/health/live", timeout=10).status_code == 200  # others still served
        waited, said = closed_within(slow[0], TIMEOUT_S + 8)
        assert waited < TIMEOUT_S + 8
        assert not said.startswith(b"HTTP/1.1 200")
        for sock in slow[1:]:
            closed_within(sock, TIMEOUT_S + 8)
    finally:
        for sock in slow:
            sock.close()


def test_a_slow_body_is_cut_before_it_reaches_a_worker(stack: tuple[Proxy, Running]) -> None:
    proxy, server = stack
    marker = f"slow-body-{time.time_ns()}"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        body = f'{{"question": "{marker}"}}'.encode()
        sock.sendall(
            b"POST /EchoSync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body) + 1000}\r\n\r\n".encode()
            + body
        )
        _, said = closed_within(sock, TIMEOUT_S + 8)
    assert not said.startswith(b"HTTP/1.1 200"), said[:200]
    assert said == b"" or said.startswith(b"HTTP/1.1 408"), said[:200]
    assert marker not in server.log()


def test_the_body_limit_is_enforced_at_the_proxy(stack: tuple[Proxy, Running]) -> None:
    proxy, _ = stack
    big = {"question": "x" * (LIMIT + 1)}
    declared = httpx.post(f"{proxy.url}/EchoSync", json=big, timeout=30)
    assert declared.status_code == 413
    assert declared.json() == {"detail": f"Request body is larger than {LIMIT} bytes"}

    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB offered in chunks (no Content-Length)
            yield b"x" * 65536

    chunked = httpx.post(
        f"{proxy.url}/EchoSync", content=chunks(), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert chunked.status_code == 413


def test_forwarded_headers_are_trusted_from_the_proxy_only(stack: tuple[Proxy, Running]) -> None:
    """SECURE_SSL_REDIRECT on: the admin redirects plain HTTP to HTTPS. Through the proxy (which says
    https, as a TLS terminator does) it is served; a client claiming https directly is not believed."""
    proxy, server = stack
    direct = httpx.get(f"{server.url}/admin/login/", headers={"X-Forwarded-Proto": "https"}, timeout=30)
    assert direct.status_code == 301
    assert direct.headers["location"].startswith("https://")
    proxied = httpx.get(f"{proxy.url}/admin/login/", timeout=30)
    assert proxied.status_code == 200, proxied.text[:300]
