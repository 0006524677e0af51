"""The version resolver installed in the serving core (``programs.program.install_resolver``):
which version answers a call, from this worker's in-memory view of the registry."""

from typing import Any

from apikeys.context import current_caller
from programs.instances import InstanceSource
from programs.program import Program, UnknownVersion, VersionAsk
from versions import live
from versions.loaded import LoadedVersions
from versions.routing import STICKY_KEY, STICKY_NONE

PRODUCTION = "production"


class Resolver:
    def __init__(self) -> None:
        self.loaded: dict[str, LoadedVersions] = {}  # program -> its built versions (set at start-up)

    def __call__(self, program: Program, ask: VersionAsk) -> InstanceSource:
        registry = live.current
        routes = registry.routes.get(program.name)
        loaded = self.loaded.get(program.name)
        if routes is None or loaded is None:  # not registered (yet): the start-up version, unnamed
            if ask.asked is not None:
                raise UnknownVersion(f"{program.name} has no versions yet (asked for {ask.asked!r})")
            return program.instances
        versions = registry.versions.get(program.name, {})
        asked = ask.asked or PRODUCTION
        route = routes.get(asked)
        if route is not None and not ask.shadow:
            label = (
                route.pick(_sticky_value(route.sticky, ask)) if len(route.versions) > 1 else route.versions[0]
            )
            if route.shadow and route.shadowed():
                ask.shadow_version = route.shadow
        elif asked in versions:
            label = asked
        else:
            raise UnknownVersion(_unknown(program.name, asked, versions, routes))
        ask.version = label
        return loaded.source(label, versions[label])

    def describe(self, program: Program) -> dict[str, Any]:
        registry = live.current
        return {
            "versions": sorted(registry.versions.get(program.name, {}), key=lambda label: int(label[1:])),
            "aliases": registry.targets.get(program.name, {}),
        }


def _sticky_value(sticky: str, ask: VersionAsk) -> str | None:
    if sticky == STICKY_NONE:
        return None
    if sticky == STICKY_KEY:
        caller = current_caller.get()
        return f"key:{caller.key_id}" if caller is not None and caller.key_id is not None else None
    return ask.headers.get(sticky) if ask.headers is not None else None


def _unknown(program: str, asked: str, versions: dict[str, Any], routes: dict[str, Any]) -> str:
    known = ", ".join(sorted(versions, key=lambda label: int(label[1:])))
    aliases = ", ".join(sorted(routes))
    return f"{program} has no version or alias {asked!r} (versions: {known}; aliases: {aliases})"


resolver = Resolver()
