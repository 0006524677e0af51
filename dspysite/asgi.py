"""ASGI entry point: ``uvicorn dspysite.asgi:application --timeout-keep-alive 65`` or gunicorn's
uvicorn workers (docs/DEPLOYMENT.md).

The programs are loaded here, at import, so a bad config or a name clash stops the process with
one line before it accepts traffic.
"""

import os

import django
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")
django.setup(set_prefix=False)

from dspysite.safety import check_or_exit  # noqa: E402

check_or_exit()  # DEBUG off with a missing, development or weak SECRET_KEY: one line each, exit 2

from dspysite.guards import JsonBodies, StaticFiles, TrustedHosts, allowed_hosts  # noqa: E402
from dspysite.handler import ServiceASGIHandler  # noqa: E402
from dspysite.lifespan import BodyLimitMiddleware, LifespanMiddleware  # noqa: E402
from programs.runtime import get_runtime_or_exit  # noqa: E402
from scheduling.scheduler import build_scheduler_or_exit  # noqa: E402

runtime = get_runtime_or_exit()
scheduler = build_scheduler_or_exit(runtime)  # an invalid cron schedule stops start-up here

import dspysite.urls  # noqa: E402,F401 - build the routes now, not on the first request
from mcp_tools.endpoint import mcp_endpoint  # noqa: E402
from programs.api import report_body_too_large  # noqa: E402
from telemetry.lifecycle import telemetry_shutdown, telemetry_startup  # noqa: E402
from telemetry.server_spans import traced  # noqa: E402
from telemetry.tracing import tracing_shutdown, tracing_startup  # noqa: E402

# /mcp is answered by the MCP SDK in front of Django (docs/MCP.md); every other path goes on.
mcp = mcp_endpoint(StaticFiles(ServiceASGIHandler()), runtime)


def _program_call(method: str, path: str) -> bool:
    return runtime.routes.door(method, path) is not None


# A program call's body must be JSON (415); /mcp and the browser paths are not program calls.
api = JsonBodies(mcp, _program_call)
application = LifespanMiddleware(
    # Host against ALLOWED_HOSTS first, on every path but /mcp's own check and the health probes (400).
    TrustedHosts(
        # The server span of each request (only when OTEL_* configures tracing), around all the rest.
        traced(
            BodyLimitMiddleware(
                api,
                settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                on_refused=report_body_too_large,
                larger={"/api/jobs": settings.JOBS_MAX_BODY_BYTES},  # JSONL uploads (docs/JOBS.md)
            )
        ),
        allowed_hosts(settings.ALLOWED_HOSTS, settings.DEBUG),
    ),
    # Cron jobs start after the gateways' setup() and stop before their shutdown() (runs call their
    # hooks). Tracing starts in each worker process (after gunicorn's fork), before any call.
    on_startup=[
        runtime.drain_on_sigterm,
        tracing_startup,
        runtime.start_gateways,
        telemetry_startup,
        scheduler.start,
    ],
    # Telemetry last: calls still finishing (sync pool, cron runs) are recorded before the flush.
    on_shutdown=[scheduler.stop, runtime.stop_gateways, runtime.aclose, telemetry_shutdown, tracing_shutdown],
    contexts=[mcp.running],  # left before the shutdown hooks: no MCP call outlives the LM pools
)
