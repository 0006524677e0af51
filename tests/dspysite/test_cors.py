"""CORS (django-cors-headers through dspysite/cors.py), in-process: the headers, the paths, and no
thread hop on the API path (the stack stays async-only)."""

import pytest
from corsheaders.middleware import CorsMiddleware as LibraryCorsMiddleware
from django.test import override_settings

from tests.dspysite.handler_request import request

ORIGIN = "https://app.example.com"


class SyncOnlyCors(LibraryCorsMiddleware):
    """The control: the same library middleware, sync-only, as a MiddlewareMixin class would be."""

    async_capable = False


PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", f"{ORIGIN}/,https://other.example.com")


@pytest.mark.django_db
@pytest.mark.usefixtures("configured")
def test_an_allowed_origins_preflight_is_answered_here_without_a_thread() -> None:
    answer = request("OPTIONS", "/health/live", PREFLIGHT)
    headers = answer.headers
    assert answer.status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert headers["access-control-allow-headers"] == "Authorization, Content-Type, X-Request-ID"
    assert headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in headers
    assert answer.threads_started == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("configured")
def test_an_api_answer_to_an_allowed_origin_exposes_the_headers_without_a_thread() -> None:
    answer = request("GET", "/health/live", {"Origin": ORIGIN})
    assert answer.status == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["access-control-expose-headers"] == "X-Request-ID, Retry-After, WWW-Authenticate"
    assert "origin" in answer.headers["vary"].lower()
    assert answer.threads_started == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("configured")
def test_other_origins_and_browser_paths_get_no_cors_headers() -> None:
    evil = {**PREFLIGHT, "Origin": "https://evil.example.com"}
    answer = request("OPTIONS", "/health/live", evil)
    assert answer.status == 405  # not answered as a preflight: the route refuses the method
    assert "access-control-allow-origin" not in answer.headers
    answer = request("GET", "/health/live", {"Origin": "https://evil.example.com"})
    assert answer.status == 200 and "access-control-allow-origin" not in answer.headers
    answer = request("GET", "/admin/login/", {"Origin": ORIGIN})  # a browser path
    assert answer.status == 200 and "access-control-allow-origin" not in answer.headers


@pytest.mark.django_db
def test_any_origin_with_a_star(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "*")
    answer = request("OPTIONS", "/health/live", {**PREFLIGHT, "Origin": "https://any.example"})
    assert answer.status == 204 and answer.headers["access-control-allow-origin"] == "https://any.example"


@pytest.mark.django_db
def test_without_origins_the_middleware_is_not_in_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORS_ALLOWED_ORIGINS", raising=False)
    answer = request("OPTIONS", "/health/live", PREFLIGHT)
    assert answer.status == 405
    assert "access-control-allow-origin" not in answer.headers
    assert "vary" not in answer.headers  # django-cors-headers adds Vary: origin wherever it runs


@pytest.mark.django_db
def test_the_thread_count_sees_a_sync_only_middleware() -> None:
    """The control for the tests above: the library middleware made sync-only costs thread hops."""
    from django.conf import settings

    middleware = [
        f"{__name__}.SyncOnlyCors" if path == "dspysite.cors.CorsMiddleware" else path
        for path in settings.MIDDLEWARE
    ]
    with override_settings(MIDDLEWARE=middleware, CORS_ALLOWED_ORIGINS=[ORIGIN]):
        answer = request("GET", "/health/live", {"Origin": ORIGIN})
    assert answer.status == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.threads_started >= 1
