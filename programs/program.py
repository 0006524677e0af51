"""A served program (``Program``: what discovery found and start-up built) and the instance a call
runs on (``program.lease()``).

The lease is the one place that decides which module instance runs a call, whatever the program's
``instance_mode`` (shared, pool, per_request: :mod:`programs.instances`) and, once programs have
versions, whichever version the call gets: it asks the installed :class:`VersionResolver`. The core
has one version per program, the one loaded at start-up (:func:`loaded_version`); an app that
keeps versions installs its own resolver at ``ready()`` (:func:`install_resolver`), the way
telemetry subscribes to the core's events. The core never imports that app.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dspy

from programs.gateways import Gateway
from programs.instances import InstanceSource, Lease, SharedInstance
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

    def __post_init__(self) -> None:
        if self.instances is None:
            object.__setattr__(self, "instances", SharedInstance(self.instance))

    def lease(self) -> Lease:
        """The instance one call runs on: ``async with program.lease() as lease: lease.instance``.

        Raises :class:`~programs.instances.InstancesBusy` (entering) when every instance of its
        pool is in use. A sync call hands it to its worker thread with ``lease.in_thread(...)``.
        """
        return _resolver(self).lease()


class VersionResolver(Protocol):
    """Which version of ``program`` a call runs: the source its instance is leased from.

    Asked once per call, on the request path: it answers from memory. The source's ``release``
    may be called from a worker thread.
    """

    def __call__(self, program: Program) -> InstanceSource: ...


def loaded_version(program: Program) -> InstanceSource:
    """The default: every call runs the version loaded at start-up."""
    return program.instances


_resolver: VersionResolver = loaded_version


def install_resolver(resolver: VersionResolver | None) -> None:
    """Make ``resolver`` decide every call's version from now on (None: back to the loaded one)."""
    global _resolver
    _resolver = resolver or loaded_version
