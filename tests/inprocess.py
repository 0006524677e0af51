"""The service in this test process, no socket: a fixture project's runtime, URLconf and ASGI
application, for the route-contract tests (paths, methods, schemas, the OpenAPI document, the JSON
answers and errors) where no socket, process or lifecycle behaviour is under test.

The process's runtime is built once, from ``settings.DSPY_CONFIG`` (``programs.runtime``), and the
URLconf from it; pytest-xdist (``--dist loadfile``) runs files with different fixture projects in
one process. :func:`served_in_process` therefore builds the project's own runtime and installs it
as the process's, its API and routes as ``ROOT_URLCONF`` (``override_settings`` clears the URL
caches and ``set_urlconf`` on entry and exit), and the application ``dspysite/application.py``
builds for the server; all of it is put back on exit.

Requests go through ``httpx.ASGITransport`` on one event loop in a thread (anyio's blocking
portal): the runtime's async LM clients belong to the loop that first used them, and the tests stay
plain functions. The lifespan is not run: no gateway ``setup()``, cron scheduler, telemetry writer
or SIGTERM handler (tests of those start a real server). Program calls reach the session's mock
LLM over its real socket.
"""

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from django.test import override_settings

from loadtest.servers import production_env


class InProcess:
    """Sync requests to the in-process application: ``get``, ``post``, ``request`` like httpx's."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@contextmanager
def served_in_process(project: Path, config: Path, **env: str) -> Iterator[InProcess]:
    """``project`` served with ``config`` in this process; ``env`` as a server's environment would set."""
    from programs import runtime as runtime_module

    environment = {**production_env(config), "DSPY_PROJECT_DIR": str(project), "DSPY_CONFIG": str(config)}
    with (
        mock.patch.dict(os.environ, {**environment, **env}),  # what the config loader reads (DSPY_AUTH...)
        override_settings(DSPY_CONFIG=str(config), DSPY_PROJECT_DIR=str(project)),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(runtime_module, "_runtime", None)  # the next get_runtime() loads this project
        runtime = runtime_module.get_runtime()
        with override_settings(ROOT_URLCONF=_urlconf(runtime)), start_blocking_portal() as portal:
            client = portal.call(_client, runtime)
            try:
                yield InProcess(portal, client)
            finally:
                portal.call(client.aclose)
                portal.call(runtime.aclose)  # its worker threads and LM connections


def _urlconf(runtime: Any) -> ModuleType:
    """A URLconf module of the runtime's routes (what dspysite/urls.py builds for the process)."""
    from dspysite.api import build_api, build_urlpatterns

    urls = ModuleType(f"inprocess_urls_{id(runtime)}")
    urls.urlpatterns = build_urlpatterns(build_api(runtime))  # type: ignore[attr-defined]
    return urls


async def _client(runtime: Any) -> httpx.AsyncClient:
    """Made on the portal's loop, which then runs every request."""
    from dspysite.application import build_application
    from scheduling.scheduler import build_scheduler_or_exit

    application = build_application(runtime, build_scheduler_or_exit(runtime))
    transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)
