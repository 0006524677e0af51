"""dspy-cli's gateway API, so a dspy-cli project's modules run here unchanged.

A module declares how it is reached with a ``gateway`` class attribute: one class or a list of
them (none: :class:`IdentityGateway`, the plain ``POST /{Module}`` route). The classes are the ones
dspy-cli 0.1.13 documents (``dspy_cli.gateway``), with the same attributes and hooks:

* :class:`APIGateway`: an HTTP route (``path``, ``method``, ``request_model``, ``response_model``,
  ``requires_auth``) whose body is turned into ``forward()`` keyword arguments by
  :meth:`APIGateway.to_pipeline_inputs` and whose answer is :meth:`APIGateway.from_pipeline_output`
  of the program's outputs. Either hook may be a coroutine function here.
* :class:`CronGateway`: a scheduled job (``schedule``, ``get_pipeline_inputs``, ``on_complete``,
  ``on_error``, ``use_batch``, ``num_threads``, ``max_errors``); run by :mod:`scheduling`.

``from dspy_cli.gateway import APIGateway`` must work in a user's module whether or not dspy-cli is
installed beside this server. When it is installed, its own classes are the ones used (a module and
this server must agree on the class objects for ``isinstance`` to mean anything). When it is not,
:func:`install_import_alias` registers this module under that name, before the user's modules are
imported. No package named ``dspy_cli`` is shipped: it would clash with the real one on install.
"""

import importlib.util
import inspect
import logging
import sys
import types
from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger(__name__)

PipelineInputs = dict[str, Any]  # forward() keyword arguments; no "_"-prefixed keys
PipelineOutput = dict[str, Any]  # a program's outputs as the JSON object its route answers


def _real_dspy_cli_installed() -> bool:
    try:
        return importlib.util.find_spec("dspy_cli.gateway") is not None
    except ImportError:  # a parent that is not a package
        return False


if _real_dspy_cli_installed():  # pragma: no cover - exercised when dspy-cli is installed beside us
    from dspy_cli.gateway import APIGateway, CronGateway, Gateway, IdentityGateway  # type: ignore[no-redef]
else:

    class Gateway(ABC):  # type: ignore[no-redef]  # noqa: B024 - abstract in dspy-cli too, hooks optional
        """How data enters and leaves a program. ``setup`` at start-up, ``shutdown`` at exit."""

        def setup(self) -> None:  # noqa: B027 - an optional hook, empty by design
            """Called once at start-up; raising stops the server with the gateway's name."""

        def shutdown(self) -> None:  # noqa: B027
            """Called once when the server stops."""

    class APIGateway(Gateway):  # type: ignore[no-redef]
        """An HTTP route in front of a program, with its own request and response shapes."""

        request_model: type[BaseModel] | None = None
        response_model: type[BaseModel] | None = None
        path: str | None = None  # default: /{Module} (IdentityGateway) or /{Module}/{GatewayClass}
        method: str = "POST"
        requires_auth: bool = True

        def to_pipeline_inputs(self, request: Any) -> PipelineInputs:
            if isinstance(request, BaseModel):
                return request.model_dump()
            return dict(request) if request else {}

        def from_pipeline_output(self, output: PipelineOutput) -> Any:
            return output

    class IdentityGateway(APIGateway):  # type: ignore[no-redef]
        """The default: the request body is the inputs, the outputs are the answer."""

    class CronGateway(Gateway):  # type: ignore[no-redef]
        """A program run on a schedule, over inputs the gateway fetches itself."""

        schedule: str  # 5-field crontab
        use_batch: bool = False
        num_threads: int | None = None
        max_errors: int | None = None

        @abstractmethod
        async def get_pipeline_inputs(self) -> list[dict[str, Any]]:
            """The inputs of one run; ``_``-prefixed keys (``_meta``) reach the hooks only."""

        @abstractmethod
        async def on_complete(self, inputs: dict[str, Any], output: PipelineOutput) -> None:
            """After each successful item, with its original inputs."""

        async def on_error(self, inputs: dict[str, Any], error: Exception) -> None:
            """After each failed item."""

        @staticmethod
        def extract_pipeline_kwargs(inputs: dict[str, Any]) -> PipelineInputs:
            return {key: value for key, value in inputs.items() if not key.startswith("_")}


__all__ = [
    "APIGateway",
    "CronGateway",
    "Gateway",
    "IdentityGateway",
    "PipelineInputs",
    "PipelineOutput",
    "install_import_alias",
]


def install_import_alias() -> None:
    """Make ``import dspy_cli.gateway`` resolve to this module when dspy-cli is not installed."""
    if _real_dspy_cli_installed() or "dspy_cli.gateway" in sys.modules:
        return
    package = types.ModuleType("dspy_cli", "dspy-cli's gateway API, provided by dspy-django")
    package.__path__ = []  # a package, so ``dspy_cli.gateway`` is importable under it
    package.gateway = sys.modules[__name__]  # type: ignore[attr-defined]
    sys.modules.setdefault("dspy_cli", package)
    sys.modules["dspy_cli.gateway"] = sys.modules[__name__]


def declared_gateways(cls: type) -> tuple[type[Gateway], ...]:
    """The gateway classes a module declares (``gateway = G`` or a list), as dspy-cli reads them.

    An entry that is not a gateway class is skipped with a warning, as in dspy-cli. None declared:
    ``(IdentityGateway,)``.
    """
    declared = getattr(cls, "gateway", None)
    if declared is None:
        return (IdentityGateway,)
    entries = declared if isinstance(declared, list | tuple) else [declared]
    found = []
    for entry in entries:
        if isinstance(entry, type) and issubclass(entry, Gateway):
            found.append(entry)
        else:
            logger.warning("%s.gateway: %r is not a Gateway subclass; ignored", cls.__name__, entry)
    return tuple(found) or (IdentityGateway,)


def route_path(module_name: str, gateway: APIGateway) -> str:
    """dspy-cli's rule: the gateway's ``path``, else ``/{Module}`` or ``/{Module}/{GatewayClass}``."""
    if gateway.path:
        return gateway.path
    if isinstance(gateway, IdentityGateway):
        return f"/{module_name}"
    return f"/{module_name}/{type(gateway).__name__}"


async def maybe_await(value: Any) -> Any:
    """A hook's result: awaited when the hook was a coroutine function (dspy-cli's are sync)."""
    if inspect.isawaitable(value):
        return await value
    return value
