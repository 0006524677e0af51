"""The one NinjaAPI of the service: assembles the routers of each app and the JSON error handlers."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI

from apikeys.auth import api_key_auth, docs_decorator
from apikeys.auth import install as install_api_key_errors
from apikeys.context import INVOKE, READ
from dspysite.openapi import ServiceAPI
from jobs import api as jobs_api
from programs.api import build_router, report_refused
from programs.runtime import get_runtime_or_exit
from telemetry import api as telemetry_api


class API(ServiceAPI):
    def on_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        """Every error answer, whichever handler gave it; one for a program route is reported as its
        call (a log row for a 400/413/422 too): ninja answers those before the view runs."""
        response = super().on_exception(request, exc)
        report_refused(request, exc, response)
        return response


def build_api() -> NinjaAPI:
    runtime = get_runtime_or_exit()
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
    # Batch jobs: `invoke`; a key reads its own jobs, an `admin` key every job (docs/JOBS.md).
    api.add_router("", jobs_api.router, auth=api_key_auth(INVOKE))
    api.add_router("", jobs_api.runs_router(runtime), auth=api_key_auth(INVOKE))
    return api


api = build_api()
