"""The ASGI application around Django's handler, for one runtime: the pure ASGI layers in their
order, the MCP endpoint, and the start-up and shutdown hooks.

``dspysite/asgi.py`` builds the process's (Django set up, the production settings checked, the
runtime loaded, exit 2 on a bad one); the tests' in-process client builds one per fixture project
(tests/inprocess.py), so the layers a request crosses are the same in both.
"""

from django.conf import settings

from dspysite.guards import JsonBodies, StaticFiles, TrustedHosts, allowed_hosts
from dspysite.handler import ServiceASGIHandler
from dspysite.lifespan import ASGIApp, BodyLimitMiddleware, LifespanMiddleware
from loop.lifecycle import loop_shutdown, loop_startup
from mcp_tools.endpoint import mcp_endpoint
from programs.api import report_body_too_large
from programs.runtime import Runtime
from scheduling.scheduler import Scheduler
from telemetry.lifecycle import telemetry_shutdown, telemetry_startup
from telemetry.server_spans import traced
from telemetry.tracing import tracing_shutdown, tracing_startup
from versions.lifecycle import versions_shutdown, versions_startup


def build_application(runtime: Runtime, scheduler: Scheduler) -> ASGIApp:
    """Every layer a request crosses, outermost first; Django's URLconf is ``settings.ROOT_URLCONF``."""
    # /mcp is answered by the MCP SDK in front of Django (docs/MCP.md); every other path goes on.
    mcp = mcp_endpoint(StaticFiles(ServiceASGIHandler()), runtime)

    def program_call(method: str, path: str) -> bool:
        return runtime.routes.door(method, path) is not None

    # A program call's body must be JSON (415); /mcp and the browser paths are not program calls.
    api = JsonBodies(mcp, program_call)
    return LifespanMiddleware(
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
            versions_startup,  # the loaded states registered, the registry read and polled
            loop_startup,
            scheduler.start,
        ],
        # Telemetry last: calls still finishing (sync pool, cron runs) are recorded before the flush.
        on_shutdown=[
            scheduler.stop,
            versions_shutdown,
            runtime.stop_gateways,
            runtime.aclose,
            telemetry_shutdown,
            loop_shutdown,
            tracing_shutdown,
        ],
        contexts=[mcp.running],  # left before the shutdown hooks: no MCP call outlives the LM pools
    )
