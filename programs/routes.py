"""The route table: every HTTP door to a program, built once; the routes are built from it.

A module without a ``gateway`` has the identity gateway, ``POST /{Module}``; ``gateway = G`` or a
list replaces it with the routes of those gateways (a ``CronGateway`` has none), dspy-cli's rules.
Beside the plain route: ``POST /{Module}/batch`` and ``POST /{Module}/stream``. Two gateways on
one route, or a gateway on one of the service's own routes, stop start-up with one line naming both.

:class:`RouteTable` is the only answer to "which program does this method and path call, through
which door": ``programs.api`` registers the ninja operations from it, and the API keys (quotas,
scopes) and telemetry (rows for refused requests) ask it. A new HTTP door is a new :class:`Door`
kind here and a view in ``programs.api``; nothing else maps paths.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from programs.discovery import DiscoveryError
from programs.gateways import APIGateway, Gateway, IdentityGateway, route_path

if TYPE_CHECKING:
    from programs.program import Program

# The service's own routes (programs.api, telemetry.api, the admin, the playground, MCP).
SERVICE_PATHS = frozenset(
    {"/", "/programs", "/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"}
)
SERVICE_PREFIXES = ("/api/", "/admin/", "/static/", "/ui/", "/mcp")


@dataclass(frozen=True)
class GatewayRoute:
    program: "Program"
    gateway: APIGateway
    path: str
    method: str

    @property
    def entry(self) -> str:
        """The door, on the log row: empty for the plain identity route, else the gateway class."""
        return "" if self.plain else type(self.gateway).__name__

    @property
    def source(self) -> str:
        return "http" if self.plain else "gateway"

    @property
    def plain(self) -> bool:
        """The identity gateway as dspy-cli ships it: the body is the inputs, the outputs the answer."""
        return _is_plain(self.program, self.gateway)

    @property
    def name(self) -> str:
        return f"{self.program.name}.{type(self.gateway).__name__}"


def api_routes(programs: "list[Program]") -> list[GatewayRoute]:
    """Every program's gateway routes, checked for clashes. Raises :class:`DiscoveryError`."""
    routes: list[GatewayRoute] = []
    taken: dict[tuple[str, str], GatewayRoute] = {}
    owned = _owned_paths(programs)
    for program in programs:
        for gateway in program.gateways:
            if not isinstance(gateway, APIGateway):
                continue
            path = _normalised(route_path(program.name, gateway))
            route = GatewayRoute(program, gateway, path, gateway.method.upper())
            if (clash := taken.get((route.method, path))) is not None:
                raise DiscoveryError(
                    f"gateways {clash.name} and {route.name} both serve {route.method} {path}; "
                    "set an explicit `path` on one of them"
                )
            if path in SERVICE_PATHS or path.startswith(SERVICE_PREFIXES) or path in owned:
                raise DiscoveryError(f"gateway {route.name}: {path} is one of the service's own routes")
            taken[(route.method, path)] = route
            routes.append(route)
    return routes


def _owned_paths(programs: "list[Program]") -> set[str]:
    """``/{P}/batch`` and ``/{P}/stream`` beside every program that has its plain route, and
    ``/{P}/runs`` (the background runs, an app's route: docs/JOBS.md) beside every program."""
    owned = {f"/{p.name}/{suffix}" for p in programs if has_plain_route(p) for suffix in ("batch", "stream")}
    return owned | {f"/{p.name}/runs" for p in programs}


def has_plain_route(program: "Program") -> bool:
    return any(_is_plain(program, gateway) for gateway in program.gateways)


def _is_plain(program: "Program", gateway: Gateway) -> bool:
    """One rule for the plain route, so the route itself and its /batch and /stream agree."""
    if type(gateway) is not IdentityGateway:
        return False
    return _normalised(route_path(program.name, gateway)) == f"/{program.name}"


def _normalised(path: str) -> str:
    path = "/" + path.strip("/")
    if "{" in path:
        raise DiscoveryError(f"gateway path {path}: path parameters are not supported")
    return path


DoorKind = Literal["route", "batch", "stream"]


@dataclass(frozen=True, slots=True)
class Door:
    """One HTTP door to a program: a gateway route (the plain one included), or a plain route's
    ``/batch`` or ``/stream``."""

    method: str
    path: str
    program: "Program"
    kind: DoorKind
    route: GatewayRoute | None = None  # the gateway route (kind "route")

    @property
    def batch(self) -> bool:
        """The body is a batch of items (``{"inputs": [...]}``)."""
        return self.kind == "batch"


class RouteTable:
    """Every HTTP door of the served programs by method and path (one dict lookup)."""

    def __init__(self, programs: "list[Program]") -> None:
        self.gateway_routes = api_routes(programs)
        doors = [
            Door(route.method, route.path, route.program, "route", route) for route in self.gateway_routes
        ]
        for program in programs:
            if has_plain_route(program):
                doors.append(Door("POST", f"/{program.name}/batch", program, "batch"))
                doors.append(Door("POST", f"/{program.name}/stream", program, "stream"))
        self._doors = {(door.method, door.path): door for door in doors}

    def __iter__(self) -> Iterator[Door]:
        return iter(self._doors.values())

    def door(self, method: str, path: str) -> Door | None:
        """The door ``method path`` opens, or None (``/programs``, ``/api/...``, an unknown path)."""
        return self._doors.get((method, path))

    def gateway_route(self, method: str, path: str) -> GatewayRoute | None:
        door = self._doors.get((method, path))
        return door.route if door is not None else None
