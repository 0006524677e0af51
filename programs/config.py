"""``dspy.config.yaml``: the dspy-cli schema plus this server's ``server`` and ``programs`` sections.

The file is validated once at start-up. Any problem becomes a :class:`ConfigError` whose message
is a single line naming the file and the key, so a bad config stops the server with one clear
sentence instead of a traceback.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from dotenv import load_dotenv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_FILENAME = "dspy.config.yaml"

# An I/O-bound LLM call holds its thread for the whole upstream round trip, so the pool must be as
# wide as the number of sync calls meant to be in flight: 6 threads (asyncio's default here) cap
# a 50 ms model at 120 requests/s. Threads waiting on sockets cost memory, not CPU.
DEFAULT_SYNC_WORKER_THREADS = 256
DEFAULT_REQUEST_TIMEOUT_S = 120.0
DEFAULT_MAX_CONCURRENT = 256
DEFAULT_MAX_BATCH_ITEMS = 100

# Server settings that may be overridden by an environment variable (and a runserver flag).
ENV_OVERRIDES = {
    "sync_worker_threads": "DSPY_SYNC_WORKER_THREADS",
    "request_timeout_s": "DSPY_REQUEST_TIMEOUT_S",
    "max_concurrent_per_program": "DSPY_MAX_CONCURRENT_PER_PROGRAM",
    "max_queue_ms": "DSPY_MAX_QUEUE_MS",
    "max_batch_items": "DSPY_MAX_BATCH_ITEMS",
    "auth": "DSPY_AUTH",
}


class ConfigError(Exception):
    """A problem with the configuration, phrased as one line for the operator."""


class CircuitBreaker(BaseModel):
    """``circuit_breaker``: ``failures`` consecutive upstream failures open it for ``cooldown_s``."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(ge=1)
    cooldown_s: float = Field(gt=0)


class ModelEntry(BaseModel):
    """One entry of ``models.registry``. Unknown keys are passed to ``dspy.LM`` as they are.

    The upstream policy keys (``rpm``, ``tpm``, ``num_retries``, ``circuit_breaker``,
    ``fallbacks``, prices) are this server's (programs/upstream.py), never handed to ``dspy.LM``.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: str | None = None
    env: str | None = None
    model_type: Literal["chat", "text", "responses"] = "chat"
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    # Off unless asked for: a served program answering from a cache hides upstream behaviour
    # and makes load tests measure the cache.
    cache: bool = False
    # Upstream 429/5xx/timeouts retried by the server (DSPy's own retries are off), within the
    # request's deadline, honouring Retry-After.
    num_retries: int = Field(default=3, ge=0)
    # Requests and tokens per minute to this model across every worker and machine.
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    circuit_breaker: CircuitBreaker | None = None
    # Aliases tried in order when this model fails, is over its budget or its circuit is open.
    fallbacks: list[str] = Field(default_factory=list)
    # USD per million tokens: the price of every call to this model, DSPy's own price list ignored
    # (programs/pricing.py says why).
    input_cost_per_1m_tokens: float | None = Field(default=None, ge=0)
    output_cost_per_1m_tokens: float | None = Field(default=None, ge=0)

    def lm_kwargs(self) -> dict[str, Any]:
        """Extra keys given in the file, for ``dspy.LM(**kwargs)``."""
        return dict(self.model_extra or {})


class ModelsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str | None = None
    registry: dict[str, ModelEntry] = Field(min_length=1)


class DeclaredModel(BaseModel):
    """What a model behind an OpenAI-compatible endpoint supports, stated by the operator.

    The endpoint is declared to DSPy's native engine with these capabilities. It is not a speed
    switch: an undeclared model costs the same per call (DSPy's metadata is read once per model).
    ``None`` means "not stated": DSPy's own metadata decides, and unknown counts as unsupported.
    """

    model_config = ConfigDict(extra="forbid")

    response_schema: bool | None = None
    function_calling: bool | None = None
    reasoning: bool | None = None


FailMode = Literal["fail_open", "fail_closed"]


class LimitsOnRedisError(BaseModel):
    """What each kind of limit does while Redis (the shared limit store) is down (ratelimit/failures.py).

    ``fail_open``: the limit is skipped; ``fail_closed``: the request gets 503 with ``Retry-After``.
    Key quotas fail closed by default (a tenant's budget is a promise), model budgets fail open
    (the provider still enforces its own limit, and its 429s are retried and answered 503).
    """

    model_config = ConfigDict(extra="forbid")

    keys: FailMode = "fail_closed"
    models: FailMode = "fail_open"


class ServerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sync_worker_threads: int = Field(default=DEFAULT_SYNC_WORKER_THREADS, ge=1, le=4096)
    request_timeout_s: float = Field(default=DEFAULT_REQUEST_TIMEOUT_S, gt=0)
    # Calls in flight per program and process; the next one gets 429 (after max_queue_ms at most).
    max_concurrent_per_program: int = Field(default=DEFAULT_MAX_CONCURRENT, ge=1)
    max_queue_ms: float = Field(default=0, ge=0)
    # POST /{Program}/batch: a request with more items than this gets 413.
    max_batch_items: int = Field(default=DEFAULT_MAX_BATCH_ITEMS, ge=1)
    # Program versions built into instances per program and process (the registry app, versions/):
    # the least recently used one is dropped beyond this (the start-up one is always kept).
    max_loaded_versions: int = Field(default=8, ge=1)
    # API keys (Authorization: Bearer) on the program and metrics routes; see docs/DEVELOPING.md.
    # Unset: on when DEBUG is off (production), off with DEBUG on (runserver); load_config decides.
    auth: bool = False
    # Origins allowed to call the API from a browser (CORS); env CORS_ALLOWED_ORIGINS adds to them.
    cors_allowed_origins: list[str] = Field(default_factory=list)
    # Per limit kind (keys, models): fail_open or fail_closed while Redis is unreachable.
    limits_on_redis_error: LimitsOnRedisError = Field(default_factory=LimitsOnRedisError)


class ProgramOptions(BaseModel):
    """Per-program settings under ``programs.<Name>``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    request_timeout_s: float | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    state: str | None = None
    # Store this program's inputs and outputs in the inference log (default: TELEMETRY_CAPTURE_IO).
    capture_io: bool | None = None
    # How prompts are formatted (programs/adapters.py): DSPy's chat or JSON adapter, and whether a
    # JSON request may carry a JSON schema when the model supports it (native structured outputs).
    adapter: Literal["chat", "json"] = "chat"
    native_structured_outputs: bool = True
    # Which module instance serves a call (programs/instances.py): the loaded one for every call,
    # one of pool_size pre-built copies (default: max_concurrent), or a fresh copy per call.
    instance_mode: Literal["shared", "pool", "per_request"] = "shared"
    pool_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _pool_size_needs_a_pool(self) -> "ProgramOptions":
        if self.pool_size is not None and self.instance_mode != "pool":
            raise ValueError("pool_size is only used with instance_mode: pool")
        return self


class ServiceConfig(BaseModel):
    """The whole file. Unknown top-level keys are ignored so dspy-cli files load unchanged."""

    model_config = ConfigDict(extra="ignore")

    app_id: str = "dspy-django"
    models: ModelsSection
    program_models: dict[str, str] = Field(default_factory=dict)
    programs: dict[str, ProgramOptions] = Field(default_factory=dict)
    server: ServerSection = Field(default_factory=ServerSection)
    # This server's own section (dspy-cli ignores it): model aliases declared to DSPy's native engine.
    declared_models: dict[str, DeclaredModel] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aliases_exist(self) -> "ServiceConfig":
        known = self.models.registry
        if self.models.default is not None and self.models.default not in known:
            raise ValueError(f"models.default: unknown model alias {self.models.default!r}")
        for program, alias in self.program_models.items():
            if alias not in known:
                raise ValueError(f"program_models.{program}: unknown model alias {alias!r}")
        for program, options in self.programs.items():
            if options.model is not None and options.model not in known:
                raise ValueError(f"programs.{program}.model: unknown model alias {options.model!r}")
        _check_fallbacks(known)
        for alias in self.declared_models:
            if alias not in known:
                raise ValueError(f"declared_models.{alias}: unknown model alias {alias!r}")
            if not known[alias].api_base or known[alias].model_type != "chat":
                raise ValueError(
                    f"declared_models.{alias}: only chat models with an api_base can be declared"
                )
        return self

    def alias_for(self, program: str) -> str:
        """The model alias a program uses: ``programs.<P>.model``, ``program_models``, the default."""
        options = self.programs.get(program)
        alias = (options and options.model) or self.program_models.get(program) or self.models.default
        if alias is None:
            if len(self.models.registry) == 1:
                return next(iter(self.models.registry))
            raise ConfigError(f"{program}: no model alias (set models.default or program_models.{program})")
        return alias

    def max_concurrent_for(self, program: str) -> int:
        options = self.programs.get(program)
        if options and options.max_concurrent:
            return options.max_concurrent
        return self.server.max_concurrent_per_program

    def options_for(self, program: str) -> ProgramOptions:
        """``programs.<P>``, or the defaults when the program has no section."""
        return self.programs.get(program) or _DEFAULT_OPTIONS

    def timeout_for(self, program: str) -> float:
        options = self.programs.get(program)
        if options and options.request_timeout_s:
            return options.request_timeout_s
        return self.server.request_timeout_s


_DEFAULT_OPTIONS = ProgramOptions()


def _check_fallbacks(registry: dict[str, ModelEntry]) -> None:
    """Every fallback names a known alias, and no chain of fallbacks comes back to where it began."""
    for alias, entry in registry.items():
        for fallback in entry.fallbacks:
            if fallback not in registry:
                raise ValueError(f"models.registry.{alias}.fallbacks: unknown model alias {fallback!r}")
    for alias in registry:
        cycle = _fallback_cycle(registry, [alias])
        if cycle:
            raise ValueError(f"models.registry.{alias}.fallbacks: cycle {' -> '.join(cycle)}")


def _fallback_cycle(registry: dict[str, ModelEntry], path: list[str]) -> list[str]:
    """The first cycle reachable from ``path``'s last alias (``[]`` when there is none)."""
    for fallback in registry[path[-1]].fallbacks:
        if fallback in path:
            return [*path[path.index(fallback) :], fallback]
        cycle = _fallback_cycle(registry, [*path, fallback])
        if cycle:
            return cycle
    return []


def fallback_chain(registry: dict[str, ModelEntry], alias: str) -> list[str]:
    """The aliases tried after ``alias``, in order: each fallback, then its own fallbacks (depth
    first), each alias once. The config was checked for cycles."""
    chain: list[str] = []
    for fallback in registry[alias].fallbacks:
        for name in [fallback, *fallback_chain(registry, fallback)]:
            if name != alias and name not in chain:
                chain.append(name)
    return chain


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: ServiceConfig

    @property
    def directory(self) -> Path:
        return self.path.parent


def config_path(explicit: str, project_dir: str, base_dir: Path) -> Path:
    """Where the config lives: ``DSPY_CONFIG``, else the dspy-cli project's, else the repo's."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    if project_dir:
        return Path(project_dir).expanduser().resolve() / CONFIG_FILENAME
    return base_dir / CONFIG_FILENAME


def load_config(path: Path) -> LoadedConfig:
    """Read, validate and apply environment overrides. Raises :class:`ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (set DSPY_CONFIG or DSPY_PROJECT_DIR)")
    # .env beside the config supplies API keys; real environment variables win.
    load_dotenv(path.parent / ".env", override=False)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("server", {})
    if not isinstance(raw["server"], dict):
        raise ConfigError(f"{path}: server: must be a mapping")
    for key, var in ENV_OVERRIDES.items():
        if os.environ.get(var):
            raw["server"][key] = os.environ[var]
    raw["server"].setdefault("auth", not _debug())
    try:
        config = ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None
    return LoadedConfig(path=path, config=config)


def _debug() -> bool:
    """Django's DEBUG once settings are configured (the server), else the environment's."""
    from django.conf import settings

    if settings.configured:
        return bool(settings.DEBUG)
    from dspysite.env import env_bool

    return env_bool("DEBUG", False)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    text = f"{key}: {message}" if key else message
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


def resolve_api_key(alias: str, entry: ModelEntry, path: Path) -> str | None:
    """The key for a model: ``api_key`` as written, or the variable named by ``env``."""
    if entry.api_key is not None:
        return entry.api_key
    if entry.env is None:
        return None
    value = os.environ.get(entry.env)
    if not value:
        raise ConfigError(
            f"{path}: models.registry.{alias}.env: environment variable {entry.env} is not set "
            f"(export it or put it in {path.parent / '.env'})"
        )
    return value
