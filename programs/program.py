"""A served program: what discovery found and start-up built, ready to call (``Program``)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from programs.gateways import Gateway
from programs.instances import Instances
from programs.limits import Limiter
from programs.schemas import InputSchema, OutputSchema


@dataclass(frozen=True)
class Program:
    name: str
    instance: dspy.Module
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
    # instance_mode pool or per_request: where a call gets its instance (None: ``instance``).
    instances: Instances | None = None
    # The module's dspy-cli gateways (instances, in declaration order): its routes and cron jobs.
    gateways: tuple[Gateway, ...] = ()
