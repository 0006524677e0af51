"""API keys over a real socket: 401 (never a 500 or a redirect) for missing, wrong, revoked and expired
keys; 200 for a valid one on every protected route; health stays open; keys created and shown once
in the admin; the playground uses Django's login; CORS for configured origins."""

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.databases import ServerDatabase, server_database
from tests.devx_fixtures import SERVICE_PROJECT
from tests.support import ROOT, Running, project_config, service

pytestmark = pytest.mark.integration

PASSWORD = "api-keys-test-password"  # a throwaway superuser in a throwaway database
CACHE_TTL_S = 1.0
DEFAULT_IN_FLIGHT = 3  # API_KEY_DEFAULT_MAX_IN_FLIGHT of the module's server
ORIGIN = "https://app.example.com"
PROTECTED = [
    ("POST", "/EchoAsync", {"question": "hi"}),
    ("POST", "/EchoAsync/batch", {"inputs": [{"question": "hi"}]}),
    ("POST", "/EchoAsync/stream", {"question": "hi"}),
    ("GET", "/programs", None),
    ("GET", "/api/metrics", None),
    ("GET", "/api/metrics/EchoAsync", None),
    ("GET", "/api/logs/EchoAsync", None),
    ("GET", "/metrics", None),
]


@pytest.fixture(scope="module")
def keyed(devx_tmp: Path, llm: Running) -> Iterator[tuple[Running, ServerDatabase]]:
    config = project_config(SERVICE_PROJECT, devx_tmp, llm.url, server={"auth": True})
    with server_database(devx_tmp) as database:
        manage(database, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com")
        settings = {
            "API_KEY_CACHE_TTL_S": str(CACHE_TTL_S),
            "API_KEY_MISS_RELOAD_S": "0.2",
            "CORS_ALLOWED_ORIGINS": f"{ORIGIN},https://other.example.com",
            "API_KEY_DEFAULT_MAX_IN_FLIGHT": str(DEFAULT_IN_FLIGHT),
            "TELEMETRY_FLUSH_INTERVAL_S": "0.1",
        }
        with service(devx_tmp, SERVICE_PROJECT, config, **database.env(), **settings) as running:
            yield running, database


def manage(database: ServerDatabase, *args: str) -> str:
    env = {**os.environ, **database.env(), "DJANGO_SUPERUSER_PASSWORD": PASSWORD, "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def call(
    server: Running, method: str, path: str, body: object, key: str | None = None, **headers: str
) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=30)


def wait_for_status(server: Running, key: str, status: int, timeout_s: float) -> float:
    """Seconds until a keyed call answers ``status`` (fails after ``timeout_s``)."""
    started = time.monotonic()
    while True:
        if call(server, "POST", "/EchoAsync", {"question": "poll"}, key).status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"no {status} within {timeout_s} s"
        time.sleep(0.05)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.status_code, response.text[:200])
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_missing_or_wrong_keys_are_401(
    keyed: tuple[Running, ServerDatabase], method: str, path: str, body: object
) -> None:
    server, _ = keyed
    assert_unauthorized(call(server, method, path, body))
    assert_unauthorized(call(server, method, path, body, key=f"dsk_00000000_{uuid.uuid4().hex}"))
    assert_unauthorized(call(server, method, path, body, Authorization="Basic YWRtaW46YWRtaW4="))
    assert_unauthorized(call(server, method, path, body, Authorization="Bearer"))


def test_health_stays_open_and_the_docs_take_a_key(keyed: tuple[Running, ServerDatabase]) -> None:
    server, database = keyed
    assert httpx.get(f"{server.url}/health/live").status_code == 200
    assert httpx.get(f"{server.url}/health/ready").status_code == 200
    for path in ("/openapi.json", "/docs"):  # every program and its schemas: behind keys too
        assert_unauthorized(httpx.get(f"{server.url}{path}"))
    key = manage(database, "apikey", "create", f"docs-{uuid.uuid4().hex[:6]}")
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{server.url}/docs", headers=auth).status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json", headers=auth).json()
    assert spec["paths"]["/EchoAsync"]["post"]["security"]  # the docs' Authorize button
    assert "security" not in spec["paths"]["/health/live"]["get"]


def test_a_valid_key_opens_every_protected_route_and_revocation_closes_them(
    keyed: tuple[Running, ServerDatabase],
) -> None:
    server, database = keyed
    name = f"ci-{uuid.uuid4().hex[:6]}"
    key = manage(database, "apikey", "create", name)
    assert re.fullmatch(r"dsk_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}", key)
    stored = database.query("SELECT key_hash, prefix FROM apikeys_apikey WHERE name = %s", [name])
    assert len(stored) == 1 and key not in stored[0] and stored[0][1] in key  # only the hash is stored
    wait_for_status(server, key, 200, timeout_s=5)  # a key made a moment ago works within a reload
    for method, path, body in PROTECTED:
        response = call(server, method, path, body, key)
        assert response.status_code == 200, (path, response.text[:300])
    assert "event: final" in call(server, "POST", "/EchoAsync/stream", {"question": "s"}, key).text

    manage(database, "apikey", "revoke", name)
    revoked_after = wait_for_status(server, key, 401, timeout_s=CACHE_TTL_S + 3)
    assert revoked_after <= CACHE_TTL_S + 1.5
    for method, path, body in PROTECTED:
        assert_unauthorized(call(server, method, path, body, key))


def test_an_expired_key_is_refused(keyed: tuple[Running, ServerDatabase]) -> None:
    server, database = keyed
    expired = manage(database, "apikey", "create", "old", "--expires-in-days", "-1")
    assert_unauthorized(call(server, "POST", "/EchoAsync", {"question": "x"}, expired))
    short = manage(database, "apikey", "create", "short", "--expires-in-days", str(3 / 86400))  # 3 s
    wait_for_status(server, short, 200, timeout_s=2.5)
    wait_for_status(server, short, 401, timeout_s=5)  # checked on every request, no reload needed


def test_each_log_row_records_the_key_that_called(keyed: tuple[Running, ServerDatabase]) -> None:
    server, database = keyed
    name = f"logged-{uuid.uuid4().hex[:6]}"
    key = manage(database, "apikey", "create", name)
    wait_for_status(server, key, 200, timeout_s=5)
    rid = f"keyed-{uuid.uuid4().hex[:8]}"
    assert (
        call(server, "POST", "/EchoSync", {"question": "who"}, key, **{"X-Request-ID": rid}).status_code
        == 200
    )
    prefix = key.split("_")[1]
    deadline = time.monotonic() + 15
    while not (
        rows := database.query("SELECT api_key_name FROM telemetry_inferencelog WHERE request_id = %s", [rid])
    ):
        assert time.monotonic() < deadline, "the call was never written"
        time.sleep(0.05)
    assert rows == [(f"{name} (dsk_{prefix})",)]


def test_a_key_reads_only_its_own_calls_and_spend_and_scopes_gate_each_route(
    keyed: tuple[Running, ServerDatabase],
) -> None:
    """Issue 21, finding 1: key A read key B's inputs (an SSN, verbatim) in /api/logs and every key's
    name and spend in /api/metrics. Now a key reads its own; admin keys and staff read everything."""
    server, database = keyed
    tag = uuid.uuid4().hex[:6]
    a, b, admin, reader, invoker = (
        manage(database, "apikey", "create", f"{role}-{tag}", *scopes)
        for role, scopes in (
            ("a", ()),
            ("b", ()),
            ("admin", ("--scopes", "invoke,read,admin")),
            ("reader", ("--scopes", "read")),
            ("invoker", ("--scopes", "invoke")),
        )
    )
    rids = {}
    for name, key, question in (("a", a, "mine"), ("b", b, "my SSN is 078-05-1120")):
        rids[name] = f"scoped-{name}-{tag}"
        wait_for_status(server, key, 200, timeout_s=5)
        answered = call(
            server, "POST", "/EchoSync", {"question": question}, key, **{"X-Request-ID": rids[name]}
        )
        assert answered.status_code == 200

    def logged(key: str) -> set[str]:
        response = call(server, "GET", "/api/logs/EchoSync?limit=1000", None, key)
        assert response.status_code == 200, response.text
        return {entry["request_id"] for entry in response.json()["logs"]}

    deadline = time.monotonic() + 15
    while not set(rids.values()) <= logged(admin):  # written, and admin reads every key's
        assert time.monotonic() < deadline, "the calls were never written"
        time.sleep(0.05)
    assert rids["a"] in logged(a) and rids["b"] not in logged(a)  # before: B's SSN came back to A
    assert rids["b"] in logged(b) and rids["a"] not in logged(b)
    assert "078-05-1120" not in call(server, "GET", "/api/logs/EchoSync?limit=1000", None, a).text

    def spend_names(key: str) -> set[str]:
        response = call(server, "GET", "/api/metrics", None, key)
        assert response.status_code == 200, response.text
        return {entry["name"] for entry in response.json()["api_keys"]}

    deadline = time.monotonic() + 15
    while not {f"a-{tag}", f"b-{tag}"} <= spend_names(admin):
        assert time.monotonic() < deadline, "the spend never reached /api/metrics"
        time.sleep(0.05)
    assert spend_names(a) == {f"a-{tag}"}  # before: every key's name and spend
    assert spend_names(b) == {f"b-{tag}"}
    with admin_client(server) as staff:  # a staff session counts as admin
        listing = staff.get("/api/logs/EchoSync", params={"limit": 1000}).json()["logs"]
        assert set(rids.values()) <= {entry["request_id"] for entry in listing}

    # read without invoke: 403 at every program door, its (empty) logs readable
    wait_for_status(server, reader, 403, timeout_s=5)
    for method, path, body in PROTECTED[:3]:
        refused = call(server, method, path, body, reader)
        assert refused.status_code == 403 and "`invoke` scope" in refused.json()["detail"], refused.text
    assert logged(reader) == set()
    # invoke without read: programs run, telemetry is 403; /programs needs any valid key
    wait_for_status(server, invoker, 200, timeout_s=5)
    for path in ("/api/logs/EchoSync", "/api/metrics", "/api/metrics/EchoSync", "/metrics"):
        refused = call(server, "GET", path, None, invoker)
        assert refused.status_code == 403 and "`read` scope" in refused.json()["detail"], refused.text
    assert call(server, "GET", "/programs", None, invoker).status_code == 200


def test_a_key_without_its_own_max_in_flight_gets_the_default(keyed: tuple[Running, ServerDatabase]) -> None:
    """Issue 21: one client could take all 256 slots of a program. API_KEY_DEFAULT_MAX_IN_FLIGHT=3."""
    server, database = keyed
    plain = manage(database, "apikey", "create", f"plain-{uuid.uuid4().hex[:6]}")
    wider = manage(database, "apikey", "create", f"wider-{uuid.uuid4().hex[:6]}", "--max-in-flight", "5")
    for key in (plain, wider):
        wait_for_status(server, key, 200, timeout_s=5)

    async def burst(key: str) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            bodies = [{"question": f"slow {i} [delay=1500]"} for i in range(DEFAULT_IN_FLIGHT + 1)]
            return await asyncio.gather(*(client.post("/EchoAsync", json=body) for body in bodies))

    statuses = sorted(r.status_code for r in asyncio.run(burst(plain)))
    assert statuses == [200] * DEFAULT_IN_FLIGHT + [429]  # before: no cap, all 4 ran
    answered = asyncio.run(burst(plain))[0]
    assert (
        answered.headers["RateLimit-Policy"] == f'"in-flight";q={DEFAULT_IN_FLIGHT};qu="concurrent-requests"'
    )
    assert [r.status_code for r in asyncio.run(burst(wider))] == [200] * (DEFAULT_IN_FLIGHT + 1)


@contextmanager
def admin_client(server: Running) -> Iterator[httpx.Client]:
    """A client logged in to the admin as the superuser (a session cookie and a CSRF cookie)."""
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as client:
        client.get("/admin/login/")
        token = client.cookies["csrftoken"]
        login = client.post(
            "/admin/login/?next=/admin/",
            data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"},
            headers={"Referer": f"{server.url}/admin/login/"},
        )
        assert login.status_code == 302, login.text[:500]
        yield client


def test_keys_are_created_in_the_admin_and_shown_once(keyed: tuple[Running, ServerDatabase]) -> None:
    server, _ = keyed
    with admin_client(server) as admin:
        add = admin.get("/admin/apikeys/apikey/add/")
        assert add.status_code == 200
        created = admin.post(
            "/admin/apikeys/apikey/add/",
            data={"name": "from the admin", "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
        )
        assert created.status_code == 200, created.text[:500]
        assert "no-store" in created.headers["cache-control"]
        key = re.search(r'id="new-api-key"[^>]*value="(dsk_[^"]+)"', created.text).group(1)
        assert wait_for_status(server, key, 200, timeout_s=5) < 5
        listing = admin.get("/admin/apikeys/apikey/")
        assert "from the admin" in listing.text
        assert key not in listing.text  # never shown again
        assert key.split("_")[1] in listing.text  # but its public prefix is
        key_id = re.search(r'href="/admin/apikeys/apikey/(\d+)/change/"', listing.text).group(1)
        assert key not in admin.get(f"/admin/apikeys/apikey/{key_id}/change/").text
        revoked = admin.post(
            "/admin/apikeys/apikey/",
            data={
                "action": "revoke",
                "_selected_action": key_id,
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            },
        )
        assert revoked.status_code == 302
    wait_for_status(server, key, 401, timeout_s=CACHE_TTL_S + 3)


def test_the_playground_needs_a_login_and_its_session_calls_the_api(
    keyed: tuple[Running, ServerDatabase],
) -> None:
    server, _ = keyed
    anonymous = httpx.get(f"{server.url}/ui/EchoAsync")
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/admin/login/?next=/ui/EchoAsync")
    assert httpx.get(f"{server.url}/").status_code == 302
    with admin_client(server) as browser:
        page = browser.get("/ui/EchoAsync")
        assert page.status_code == 200
        csrf = re.search(r'"csrf": "([^"]+)"', page.text).group(1)
        answered = browser.post(
            "/EchoAsync", json={"question": "from the page"}, headers={"X-CSRFToken": csrf}
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["answer"] == "Echo: from the page"
        # The session alone is not enough: without the page's CSRF token it is a forgery.
        assert_unauthorized(browser.post("/EchoAsync", json={"question": "forged"}))
        assert_unauthorized(
            browser.post(
                "/EchoAsync", json={"question": "forged"}, headers={"X-CSRFToken": csrf, "Origin": ORIGIN}
            )
        )


def test_cors_for_configured_origins_only(keyed: tuple[Running, ServerDatabase]) -> None:
    server, database = keyed
    preflight = httpx.options(
        f"{server.url}/EchoAsync",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in preflight.headers
    refused = call(server, "POST", "/EchoAsync", {"question": "x"}, Origin=ORIGIN)
    assert refused.status_code == 401  # CORS does not bypass the key
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    key = manage(database, "apikey", "create", "cors")
    wait_for_status(server, key, 200, timeout_s=5)
    allowed = call(server, "POST", "/EchoAsync", {"question": "x"}, key, Origin=ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Request-ID" in allowed.headers["access-control-expose-headers"]
    other = call(server, "POST", "/EchoAsync", {"question": "x"}, key, Origin="https://evil.example.com")
    assert other.status_code == 200  # not a browser: CORS only tells browsers what to expose
    assert "access-control-allow-origin" not in other.headers
    assert httpx.options(f"{server.url}/EchoAsync", headers={"Origin": "https://evil.example.com",
                         "Access-Control-Request-Method": "POST"}).status_code == 405  # fmt: skip


def test_the_playground_runs_in_a_browser_after_login(keyed: tuple[Running, ServerDatabase]) -> None:
    import asyncio

    from tests.telemetry.browser import chromium_or_skip, headless_page, screenshot, submit
    from tests.ui.test_playground_browser import ARTIFACTS, outputs, set_value, wait_for_result

    binary = chromium_or_skip()
    server, _ = keyed

    async def session() -> tuple[str, str, dict[str, str]]:
        async with headless_page(binary) as page:
            await page.goto(f"{server.url}/ui/EchoAsync")  # redirected to the admin's login
            landed = await page.evaluate("location.pathname")
            await submit(
                page,
                f"document.getElementById('id_username').value = 'admin';"
                f"document.getElementById('id_password').value = '{PASSWORD}';"
                "document.getElementById('login-form').submit();",
            )
            await page.evaluate(
                set_value("question", "behind a login") + "document.getElementById('run').click();"
            )
            state = await wait_for_result(page)
            (ARTIFACTS / "playground-logged-in.png").write_bytes(await screenshot(page))
            return landed, state, await outputs(page)

    ARTIFACTS.mkdir(exist_ok=True)
    landed, state, answer = asyncio.run(session())
    assert landed == "/admin/login/"
    assert state == "done"
    assert answer["answer"] == "Echo: behind a login"


def test_quotas_are_set_and_edited_in_the_admin_and_spend_is_listed(
    keyed: tuple[Running, ServerDatabase],
) -> None:
    """One process, no Redis: the in-process store enforces a key's rpm set in the admin."""
    server, _ = keyed
    with admin_client(server) as admin:
        created = admin.post(
            "/admin/apikeys/apikey/add/",
            data={"name": "quota admin", "rpm": "2", "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
        )
        key = re.search(r'id="new-api-key"[^>]*value="(dsk_[^"]+)"', created.text).group(1)
        wait_for_status(server, key, 200, timeout_s=5)  # the first of its 2 requests this minute
        assert call(server, "POST", "/EchoAsync", {"question": "second"}, key).status_code == 200
        refused = call(server, "POST", "/EchoAsync", {"question": "third"}, key)
        assert refused.status_code == 429, refused.text
        assert refused.headers["RateLimit-Policy"] == (
            f'"rpm";q=2;w=60, "in-flight";q={DEFAULT_IN_FLIGHT};qu="concurrent-requests"'
        )
        assert refused.headers["RateLimit"].startswith('"rpm";r=0;t=')
        assert int(refused.headers["Retry-After"]) >= 1

        listing = admin.get("/admin/apikeys/apikey/?q=quota+admin")
        key_id = re.search(r'href="/admin/apikeys/apikey/(\d+)/change/', listing.text).group(1)
        edited = admin.post(
            f"/admin/apikeys/apikey/{key_id}/change/",
            data={"name": "quota admin", "rpm": "5", "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
        )
        assert edited.status_code == 302, edited.text[:1000]
        wait_for_status(server, key, 200, timeout_s=CACHE_TTL_S + 3)  # the new quota, within the TTL

        def spend() -> re.Match | None:
            page = admin.get("/admin/apikeys/apikey/?q=quota+admin").text
            match = re.search(r"(\d+) requests, (\d+) tokens, \$([0-9.]+)", page)
            return match if match and int(match.group(1)) >= 3 else None

        deadline = time.monotonic() + 10
        while (match := spend()) is None:
            assert time.monotonic() < deadline, "the key's spend never reached the admin list"
            time.sleep(0.1)
        assert int(match.group(2)) > 0
