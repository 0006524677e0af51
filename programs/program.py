"""A served program (``Program``: what discovery found and start-up built) and the instance a call
runs on (``program.lease()``).

The lease is the one place that decides which module instance runs a call, whatever the program's
``instance_mode`` (shared, pool, per_request: :mod:`programs.instances`) and, once programs have
versions, whichever version the call gets: it asks the installed :class:`VersionResolver`. The core
has one version per program, the one loaded at start-up (:func:`loaded_version`); an app that
keeps versions installs its own resolver at ``ready()`` (:func:`install_resolver`), the way
telemetry subscribes to the core's events. The core never imports that app.

What a call asks for (``X-Program-Version``, its headers for a sticky split) is bound for the call
in :data:`current_ask` by :func:`programs.calls.call_program`; the resolver writes back on the same
:class:`VersionAsk` which version answered and which one shadows it.
"""

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dspy

from programs.gateways import Gateway
from programs.instances import InstanceSource, Lease, SharedInstance, build_instances, lms_in
from programs.limits import Limiter
from programs.schemas import InputSchema, OutputSchema


@dataclass(frozen=True)
class Program:
    name: str
    instance: dspy.Module  # the instance loaded at start-up (a call's instance: ``lease()``)
    is_async: bool
    model_alias: str
    lm: dspy.LM
    adapter: dspy.Adapter
    timeout_s: float
    # The LM authenticates with a key from the config: no credential refresh can do I/O.
    static_credentials: bool
    inputs: InputSchema
    outputs: OutputSchema
    module_file: Path
    description: str
    limiter: Limiter
    # The DSPy settings of every call (the LM and adapter above included), fixed at start-up.
    dspy_settings: dict[str, Any] = field(default_factory=dict)
    # Where a call of the loaded version gets its instance (instance_mode); None: ``instance``, shared.
    instances: InstanceSource = None  # type: ignore[assignment]
    # The module's dspy-cli gateways (instances, in declaration order): its routes and cron jobs.
    gateways: tuple[Gateway, ...] = ()
    # How a version's instances are built (``instances_for``): the program's instance_mode and the
    # number of instances a pool holds.
    instance_mode: str = "shared"
    pool_size: int = 1

    def __post_init__(self) -> None:
        if self.instances is None:
            object.__setattr__(self, "instances", SharedInstance(self.instance))

    def lease(self) -> Lease:
        """The instance one call runs on: ``async with program.lease() as lease: lease.instance``.

        Raises :class:`~programs.instances.InstancesBusy` (entering) when every instance of its
        pool is in use. A sync call hands it to its worker thread with ``lease.in_thread(...)``.
        """
        return _resolver(self, current_ask.get() or VersionAsk()).lease()

    def instances_for(self, state: dict[str, Any]) -> InstanceSource:
        """A version's instances: this program's code with ``state`` loaded, built like the loaded
        one (same instance_mode, same LMs shared). Slow (it builds modules): never on the event loop."""
        instance = type(self.instance)()
        instance.load_state(state)
        return build_instances(
            self.instance_mode,  # type: ignore[arg-type]
            instance,
            self.pool_size,
            [*lms_in(self.instance), self.lm],
        )


class UnknownVersion(LookupError):
    """The version a call asked for does not exist (the caller answers 404 naming it)."""


@dataclass(slots=True)
class VersionAsk:
    """One call's version question and the resolver's answer.

    ``asked``: ``v3``, an alias name, or None for ``production``; ``headers``: the request's, for a
    split sticky by a header; ``shadow``: True when this call is itself a shadow run (pinned, never
    split or shadowed again). The resolver sets ``version`` (what answers) and ``shadow_version``
    (the version that also runs this call, off the answer's path).
    """

    asked: str | None = None
    headers: Mapping[str, str] | None = None
    shadow: bool = False
    version: str = ""
    shadow_version: str = ""


current_ask: contextvars.ContextVar[VersionAsk | None] = contextvars.ContextVar("version_ask", default=None)


class VersionResolver(Protocol):
    """Which version of ``program`` a call runs: the source its instance is leased from.

    Asked once per call, on the request path: it answers from memory, sets ``ask.version`` (and
    ``ask.shadow_version``), or raises :class:`UnknownVersion`. The source's ``release`` may be
    called from a worker thread. ``describe`` is the program's versions and aliases for ``/programs``.
    """

    def __call__(self, program: Program, ask: VersionAsk) -> InstanceSource: ...

    def describe(self, program: Program) -> dict[str, Any]: ...


class LoadedVersion:
    """The default: every call runs the version loaded at start-up (unversioned: ``version`` "")."""

    def __call__(self, program: Program, ask: VersionAsk) -> InstanceSource:
        return program.instances

    def describe(self, program: Program) -> dict[str, Any]:
        return {}


loaded_version = LoadedVersion()
_resolver: VersionResolver = loaded_version


def describe_versions(program: Program) -> dict[str, Any]:
    """The program's versions and aliases as the installed resolver knows them (``/programs``)."""
    return _resolver.describe(program)


def check_version(program: Program, asked: str | None, headers: Mapping[str, str] | None = None) -> None:
    """Raise :class:`UnknownVersion` when ``asked`` names no version or alias of ``program``.

    For a door whose one request holds many calls (batch): the header is the whole request's, so
    an unknown one refuses the request before any call runs. Memory only (a probe ask; builds
    nothing, leases nothing)."""
    if asked is not None:
        _resolver(program, VersionAsk(asked, headers))


def install_resolver(resolver: VersionResolver | None) -> None:
    """Make ``resolver`` decide every call's version from now on (None: back to the loaded one)."""
    global _resolver
    _resolver = resolver or loaded_version
