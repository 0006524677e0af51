"""The one NinjaAPI of the service: assembles the routers of each app and the JSON error handlers;
the URL patterns around it (dspysite/urls.py holds the process's)."""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver, include, path
from ninja import NinjaAPI

from apikeys.auth import api_key_auth, docs_decorator
from apikeys.auth import install as install_api_key_errors
from apikeys.context import ADMIN, INVOKE, READ
from dspysite.openapi import ServiceAPI
from jobs import api as jobs_api
from loop import api as loop_api
from loop import dataset_api, run_api
from programs.api import build_router, report_refused
from programs.runtime import Runtime
from telemetry import api as telemetry_api
from versions import api as versions_api


class API(ServiceAPI):
    def on_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        """Every error answer, whichever handler gave it; one for a program route is reported as its
        call (a log row for a 400/413/422 too): ninja answers those before the view runs."""
        response = super().on_exception(request, exc)
        report_refused(request, exc, response)
        return response


def build_api(runtime: Runtime) -> NinjaAPI:
    """The API of ``runtime``'s programs (dspysite/urls.py builds the process's; the tests' in-process
    client builds one per fixture project: tests/inprocess.py)."""
    api = API(
        title=runtime.config.config.app_id,
        version="1.0.0",
        description="DSPy programs served as HTTP endpoints. GET /programs lists them with their schemas.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        docs_decorator=docs_decorator(),  # behind keys when keys are on, unless DSPY_PUBLIC_DOCS
    )

    @api.exception_handler(RequestDataTooBig)
    def body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> JsonResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse({"detail": f"Request body is larger than {limit} bytes"}, status=413)

    install_api_key_errors(api)  # 401 with WWW-Authenticate: Bearer, 403 naming the scope, 429
    api.add_router("", build_router(runtime))
    # None unless server.auth is on; a key needs `read` (its own calls and spend) or `admin` there.
    api.add_router("", telemetry_api.router, auth=api_key_auth(READ))
    # The version registry's management API: `admin` only (docs/VERSIONS.md).
    api.add_router("", versions_api.router, auth=api_key_auth(ADMIN))
    # The loop (docs/LOOP.md): own calls with `read`, feedback with any key, the rest `admin`.
    api.add_router("", loop_api.calls_router, auth=api_key_auth(READ))
    api.add_router("", loop_api.feedback_router, auth=api_key_auth())
    api.add_router("", dataset_api.router, auth=api_key_auth(ADMIN))
    api.add_router("", run_api.router, auth=api_key_auth(ADMIN))
    # Batch jobs: `invoke`; a key reads its own jobs, an `admin` key every job (docs/JOBS.md).
    api.add_router("", jobs_api.router, auth=api_key_auth(INVOKE))
    api.add_router("", jobs_api.runs_router(runtime), auth=api_key_auth(INVOKE))
    return api


def build_urlpatterns(api: NinjaAPI) -> list[URLPattern | URLResolver]:
    """The routes around ``api``: the admin, the playground's browser paths, the API."""
    return [
        path("admin/", admin.site.urls),
        path("", include("loop.urls")),  # the call page: /ui/calls/<request id>
        path("", include("ui.urls")),  # the playground: GET / and /ui/<Program> (browser paths)
        path("", api.urls),
    ]
