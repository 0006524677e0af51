"""The route table (programs.routes.RouteTable): the one answer to which program a method and path
call, through which door; the routes, the API keys and telemetry all ask it."""

from types import SimpleNamespace
from typing import Any

import pytest

from programs.discovery import DiscoveryError
from programs.gateways import APIGateway, CronGateway, IdentityGateway
from programs.routes import RouteTable


class Hook(APIGateway):
    pass


class Lookup(APIGateway):
    method = "GET"
    path = "/v2/lookup"


class Nightly(CronGateway):
    schedule = "0 3 * * *"

    async def get_pipeline_inputs(self) -> list[dict[str, Any]]:
        return []

    async def on_complete(self, inputs: dict[str, Any], output: dict[str, Any]) -> None:
        return None


def program(name: str, *gateways: Any) -> Any:
    return SimpleNamespace(name=name, gateways=gateways)


def test_every_door_of_every_program_by_method_and_path() -> None:
    plain, gated, cron = (
        program("Plain", IdentityGateway()),
        program("Gated", Hook(), Lookup()),
        program("Nightly", Nightly()),
    )
    table = RouteTable([plain, gated, cron])
    doors = {(door.method, door.path): (door.program.name, door.kind) for door in table}
    assert doors == {
        ("POST", "/Plain"): ("Plain", "route"),
        ("POST", "/Gated/Hook"): ("Gated", "route"),
        ("GET", "/v2/lookup"): ("Gated", "route"),
        ("POST", "/Plain/batch"): ("Plain", "batch"),
        ("POST", "/Plain/stream"): ("Plain", "stream"),
    }
    batch = table.door("POST", "/Plain/batch")
    assert batch is not None and batch.batch and batch.route is None
    route = table.gateway_route("GET", "/v2/lookup")
    assert route is not None and route.entry == "Lookup" and route.source == "gateway"
    assert table.door("POST", "/v2/lookup") is None  # another method: not that door
    assert table.door("POST", "/Gated/batch") is None  # no plain route, no batch
    for path in ("/programs", "/api/metrics", "/Nightly", "/mcp"):
        assert table.door("POST", path) is None and table.door("GET", path) is None


def test_path_parameters_are_refused_at_start_up() -> None:
    class Item(APIGateway):
        path = "/items/{id}"

    with pytest.raises(DiscoveryError, match="path parameters are not supported"):
        RouteTable([program("Items", Item())])


class OnRuns(APIGateway):
    path = "/Gated/runs"


def test_a_gateway_on_a_programs_runs_path_is_refused_at_start_up() -> None:
    """``POST /{P}/runs`` is the background runs' route (jobs/api.py), for every program."""
    with pytest.raises(DiscoveryError, match="/Gated/runs is one of the service's own routes"):
        RouteTable([program("Gated", OnRuns())])
