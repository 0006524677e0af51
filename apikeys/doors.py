"""Which program a request path calls: the quotas' estimate needs the program's model.

Built once from the runtime's routes: a dict lookup for the fixed paths (the plain routes and
their ``/batch`` and ``/stream``), a regex for gateway paths with parameters (``/items/{id}``).
"""

import re
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from programs.runtime import Program

Door = tuple["Program", bool]  # the program, and whether the body is a batch of items


def program_door(path: str) -> Door | None:
    """The program ``path`` calls, or None when it calls none (``/programs``, ``/api/metrics``)."""
    exact, patterns = _doors()
    door = exact.get(path)
    if door is not None:
        return door
    for pattern, program in patterns:
        if pattern.fullmatch(path):
            return program, False
    return None


@cache
def _doors() -> tuple[dict[str, Door], list[tuple[re.Pattern[str], "Program"]]]:
    from programs.runtime import get_runtime

    runtime = get_runtime()
    exact: dict[str, Door] = {}
    patterns: list[tuple[re.Pattern[str], Program]] = []
    for route in runtime.routes:
        if "{" in route.path:
            parts = re.split(r"\{[^}]*\}", route.path)
            patterns.append((re.compile("[^/]+".join(re.escape(part) for part in parts)), route.program))
        else:
            exact[route.path] = (route.program, False)
    for program in runtime.programs.values():
        exact[f"/{program.name}/batch"] = (program, True)
        exact[f"/{program.name}/stream"] = (program, False)
    return exact, patterns
