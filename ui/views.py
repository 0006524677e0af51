"""The playground's pages. They run on the browser path (sessions, CSRF, auth middleware).

``GET /`` lists the programs with their stats; ``GET /ui/<Program>`` is a form built from the
program's input schema whose Run button calls the real API (``POST /<Program>`` or its
``/stream``), plus the program's stats, its versions side by side, and recent calls. A versioned
program's form picks the version to call (``X-Program-Version``) and shows the one that answered.
With API keys on (``server.auth``), both pages need a staff login (the admin's), and the page's
calls authenticate with that session.
"""

import json
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from programs.program import Program, describe_versions
from programs.routes import GatewayRoute
from programs.runtime import Runtime, get_runtime
from telemetry import selectors
from telemetry.api import version_board
from ui.forms import form_fields

RECENT_CALLS = 15


def login_required(request: HttpRequest) -> HttpResponse | None:
    if not get_runtime().config.config.server.auth:
        return None
    user = request.user
    if user.is_active and user.is_staff:
        return None
    return redirect_to_login(request.get_full_path(), reverse("admin:login"))


def _describe(program: Program) -> dict[str, Any]:
    return {
        "name": program.name,
        "model": program.model_alias,
        "execution": "async" if program.is_async else "sync",
        "description": program.description,
        "file": program.module_file.name,
    }


def _with_json(call: dict[str, Any]) -> dict[str, Any]:
    """A log entry with its inputs and outputs as JSON text (the template shows them as they were sent)."""
    dump = lambda value: "" if value is None else json.dumps(value, ensure_ascii=False)  # noqa: E731
    return {**call, "inputs_json": dump(call["inputs"]), "outputs_json": dump(call["outputs"])}


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    if (login := login_required(request)) is not None:
        return login
    runtime = get_runtime()
    stats = {
        counters.program: counters.as_dict()
        for counters in selectors.program_stats_list(list(runtime.programs))
    }
    programs = [{**_describe(p), "stats": stats.get(p.name, {})} for p in runtime.programs.values()]
    context = {
        "title": runtime.config.config.app_id,
        "programs": sorted(programs, key=lambda p: p["name"]),
        "failures": runtime.failures,
        "auth": runtime.config.config.server.auth,
    }
    return render(request, "ui/index.html", context)


@require_safe
def program_page(request: HttpRequest, name: str) -> HttpResponse:
    if (login := login_required(request)) is not None:
        return login
    runtime = get_runtime()
    program = runtime.programs.get(name)
    if program is None:
        raise Http404(f"No program named {name}")
    route = _playground_route(runtime, program)
    model = route.gateway.request_model if route is not None and not route.plain else None
    schema = (model or program.inputs.model).model_json_schema()
    context = {
        "title": runtime.config.config.app_id,
        "program": _describe(program),
        "fields": form_fields(schema),
        "stats": selectors.program_stats_get(name).as_dict(),
        "calls": [_with_json(call) for call in selectors.inference_log_list(name, RECENT_CALLS)],
        "auth": runtime.config.config.server.auth,
        "route": route,
        "versions": version_board(name),
        "version_choices": _version_choices(program),
        "config": {
            "program": program.name,
            # The plain route, else the program's first POST gateway (None: only cron jobs reach it).
            "endpoint": route.path if route is not None else None,
            "stream": route is not None and route.plain,
            "auth": runtime.config.config.server.auth,
            # With API keys on, the page's calls authenticate with this session (and this token).
            "csrf": get_token(request),
        },
    }
    return render(request, "ui/program.html", context)


def _version_choices(program: Program) -> list[str]:
    """What the page's version picker offers (sent as ``X-Program-Version``): the aliases, then the
    versions, oldest first; empty for an unversioned program (no picker)."""
    known = describe_versions(program)
    return [*sorted(known.get("aliases", {})), *known.get("versions", [])]


def _playground_route(runtime: Runtime, program: Program) -> GatewayRoute | None:
    """The route the page's form calls: the plain one, else the first POST gateway route."""
    routes = [r for r in runtime.routes.gateway_routes if r.program is program and r.method == "POST"]
    return next((r for r in routes if r.plain), routes[0] if routes else None)
