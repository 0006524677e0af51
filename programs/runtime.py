"""The loaded service: config, programs ready to call, load failures and the sync thread pool.

Built once per process (at ASGI start-up, or by the first caller) and then only read.
"""

import asyncio
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import dspy
from django.conf import settings

from programs import dspy_patches, upstream
from programs.adapters import build_adapter, describe
from programs.config import (
    ConfigError,
    LoadedConfig,
    ModelEntry,
    ServiceConfig,
    config_path,
    fallback_chain,
    load_config,
)
from programs.discovery import Discovery, DiscoveryError, LoadFailure, ProgramSpec, discover, module_sources
from programs.gateways import IdentityGateway
from programs.instances import build_instances
from programs.limits import Limiter
from programs.lms import build_lm, configure_dspy, settings_snapshot
from programs.model_policies import build_policy
from programs.program import Program
from programs.schemas import build_input_schema, build_output_schema, entry_point
from programs.upstream import attach, policy_of

logger = logging.getLogger(__name__)

# Upper bound on upstream connections per LM and event loop; the server's own limits bind first.
MIN_UPSTREAM_CONNECTIONS = 1024


@dataclass
class Runtime:
    config: LoadedConfig
    programs: dict[str, Program]
    failures: list[LoadFailure]
    executor: ThreadPoolExecutor
    # Admission to the executor: a sync call is refused rather than queued behind busy threads.
    pool_limiter: Limiter
    # Streamed sync calls run on AnyIO's worker threads (programs.execution), as many as the pool's.
    stream_threads: anyio.CapacityLimiter
    lms: dict[str, dspy.LM] = field(default_factory=dict)
    # The route table (programs.routes.RouteTable): every HTTP door, checked for clashes at build time.
    routes: Any = None
    # Set on SIGTERM: new program calls get 503 and readiness fails while in-flight calls finish.
    draining: bool = False

    @property
    def sync_threads(self) -> int:
        return self.config.config.server.sync_worker_threads

    async def drain_on_sigterm(self) -> None:
        """Lifespan start-up hook: on SIGTERM, refuse new program calls (503) and fail readiness.

        The server's own SIGTERM handler still runs right after, so it stops accepting
        connections and lets in-flight calls finish as usual.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self.draining = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    async def start_gateways(self) -> None:
        """Lifespan start-up: every gateway's ``setup()``; one that raises stops the server."""
        for program in self.programs.values():
            for gateway in program.gateways:
                try:
                    gateway.setup()
                except Exception as exc:
                    where = f"{program.name}.{type(gateway).__name__}"
                    raise RuntimeError(
                        f"gateway {where}: setup() failed: {type(exc).__name__}: {exc}"
                    ) from exc

    async def stop_gateways(self) -> None:
        """Lifespan shutdown: every gateway's ``shutdown()``; a failure is logged, the others still run."""
        for program in self.programs.values():
            for gateway in program.gateways:
                try:
                    gateway.shutdown()
                except Exception:
                    logger.exception("gateway %s.%s: shutdown() failed", program.name, type(gateway).__name__)

    async def aclose(self) -> None:
        """Let running sync calls finish, then release the pool's threads and the LM connections."""
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)
        for lm in self.lms.values():
            close = getattr(lm, "aclose", None)  # DSPy 3.3's LM has no pools of its own (LiteLLM's)
            if close is not None:
                await close()  # this loop's pools and the sync pools


def build_runtime(config: LoadedConfig, discovery: Discovery) -> Runtime:
    server = config.config.server
    configure_dspy(max(MIN_UPSTREAM_CONNECTIONS, server.sync_worker_threads))
    runtime = Runtime(
        config=config,
        programs={},
        failures=list(discovery.failures),
        executor=ThreadPoolExecutor(max_workers=server.sync_worker_threads, thread_name_prefix="dspy-sync"),
        pool_limiter=Limiter("sync worker threads", server.sync_worker_threads, server.max_queue_ms / 1000),
        stream_threads=anyio.CapacityLimiter(server.sync_worker_threads),
    )
    base_settings = settings_snapshot()
    for spec in discovery.specs:
        try:
            runtime.programs[spec.name] = _build_program(spec, runtime, base_settings)
        except Exception as exc:
            logger.exception("Program %s failed to load", spec.name)
            error = f"{type(exc).__name__}: {exc}"
            runtime.failures.append(LoadFailure(spec.module_file.name, (spec.name,), error))
    from programs.routes import RouteTable  # programs.routes types its arguments with Program

    runtime.routes = RouteTable(list(runtime.programs.values()))
    return runtime


def _build_program(spec: ProgramSpec, runtime: Runtime, base_settings: dict[str, Any]) -> Program:
    service = runtime.config.config
    options = service.options_for(spec.name)
    alias = service.alias_for(spec.name)
    lm = _lm_for(runtime, alias)
    instance = spec.cls()
    state = _state_file(spec, runtime)
    if state is not None:
        instance.load(str(state))
        logger.info("Program %s: loaded optimized state from %s", spec.name, state)
    method = entry_point(spec.cls, spec.is_async)
    adapter = build_adapter(options.adapter, lm, options.native_structured_outputs)
    limit = service.max_concurrent_for(spec.name)
    if options.instance_mode == "pool":
        limit = min(limit, options.pool_size or limit)  # one instance per call in flight
    instances = build_instances(options.instance_mode, instance, limit, shared=runtime.lms.values())
    logger.info("Program %s: %s, %s instance", spec.name, describe(adapter), options.instance_mode)
    return Program(
        name=spec.name,
        instance=instance,
        is_async=spec.is_async,
        model_alias=alias,
        lm=lm,
        adapter=adapter,
        timeout_s=service.timeout_for(spec.name),
        static_credentials=_has_static_key(service.models.registry[alias]),
        inputs=build_input_schema(spec.name, method),
        outputs=build_output_schema(spec.name, method, instance),
        module_file=spec.module_file,
        description=(spec.cls.__doc__ or "").strip(),
        limiter=Limiter(spec.name, limit, service.server.max_queue_ms / 1000),
        dspy_settings={
            **base_settings,
            "lm": lm,
            "adapter": adapter,
            "trace": None,
            "track_usage": True,
            "caller_predict": None,  # a request is a top-level call
            "caller_modules": None,
        },
        instances=instances,
        gateways=tuple(gateway() for gateway in spec.gateways or (IdentityGateway,)),
        instance_mode=options.instance_mode,
        pool_size=limit,
    )


def _lm_for(runtime: Runtime, alias: str) -> dspy.LM:
    """The alias's shared LM, with its upstream policy and the LMs of its fallbacks."""
    if alias in runtime.lms:
        return runtime.lms[alias]
    service = runtime.config.config
    registry = service.models.registry
    entry = registry[alias]
    declared = service.declared_models.get(alias)
    lm = build_lm(alias, entry, runtime.config.path, _longest_timeout(service), declared)
    chain = tuple(policy_of(_lm_for(runtime, name)) for name in fallback_chain(registry, alias))
    server = service.server
    on_store_error = server.limits_on_redis_error.models
    policy = build_policy(alias, entry, lm, chain, server.max_queue_ms / 1000, on_store_error)
    if policy.guarded and not dspy_patches.active(upstream.PATCH):
        # Never served without the limits the config asks for: they live in the upstream wrapper.
        raise ConfigError(
            f"models.registry.{alias}: circuit_breaker, rpm/tpm and fallbacks need the upstream "
            f"wrapper, which is off on DSPy {dspy.__version__} (see the start-up log line that says why)"
        )
    attach(policy)
    runtime.lms[alias] = lm  # only now: a model refused above is refused to every program
    return lm


def _has_static_key(entry: ModelEntry) -> bool:
    return entry.api_key is not None or entry.env is not None


def _longest_timeout(service: ServiceConfig) -> float:
    """An LM is shared, so its HTTP timeout is the longest request timeout of any program."""
    timeouts = [opts.request_timeout_s for opts in service.programs.values() if opts.request_timeout_s]
    return max([service.server.request_timeout_s, *timeouts])


def _state_file(spec: ProgramSpec, runtime: Runtime) -> Path | None:
    """Saved (optimized) state: ``programs.<P>.state`` in the config, else ``<module stem>.json``."""
    options = runtime.config.config.programs.get(spec.name)
    if options and options.state:
        path = Path(options.state)
        return path if path.is_absolute() else runtime.config.directory / path
    beside = spec.module_file.with_suffix(".json")
    return beside if beside.is_file() else None


def get_runtime_or_exit() -> Runtime:
    """For process entry points: a bad config or a name clash is one line on stderr, then exit 2."""
    try:
        return get_runtime()
    except (ConfigError, DiscoveryError) as exc:
        sys.stderr.write(f"dspy-django: cannot start: {exc}\n")
        raise SystemExit(2) from None


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, built on first use. Raises ConfigError / DiscoveryError."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                path = config_path(settings.DSPY_CONFIG, settings.DSPY_PROJECT_DIR, settings.BASE_DIR)
                config = load_config(path)
                discovery = discover(module_sources(settings.BASE_DIR, settings.DSPY_PROJECT_DIR))
                _runtime = build_runtime(config, discovery)
                logger.info("Serving %d program(s) with config %s", len(_runtime.programs), path)
                logger.info("Sync executor: %d threads", _runtime.sync_threads)
    return _runtime
