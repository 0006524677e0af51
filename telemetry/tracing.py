"""OpenTelemetry traces: off unless an OTLP endpoint is configured (docs/TELEMETRY.md, "Traces").

The standard variables decide everything: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` turns tracing on, ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keeps it off, and the SDK itself reads the rest (service name,
resource attributes, sampler, batch processor, exporter headers and timeout). Off, nothing here
runs on the request path: no subscriber, no ASGI layer, no span object.

On, each process builds the SDK's pipeline at its lifespan start-up, so under gunicorn every
worker has its own (after the fork: an exporter thread never survives one). Spans are exported by
a ``BatchSpanProcessor`` on its own thread and flushed at the lifespan shutdown.

The spans (the server span is :mod:`telemetry.server_spans`'s):

* ``program <P>`` per program call, from the core's ``request_started``/``request_finished``
  events (every door: routes, batch items, streams, MCP tools, cron runs). It is made the
  current span while the call runs, so the sync pool's worker threads (which get a copy of the
  context) and the LM calls see it as their parent.
* ``chat <model>`` per LM call (GenAI semantic conventions), from ``lm_call_started`` /
  ``lm_call_finished``, current while the call runs.
* Span events on whatever span is current: ``dspy.admission.wait`` when a call waited for a slot,
  ``dspy.lm.retry`` for each failed upstream attempt when the core emits ``lm_retry``.
"""

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from programs import events
from programs.runtime import Runtime, get_runtime

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTRUMENTATION_SCOPE = "dspy-django"
ERROR_DESCRIPTION_MAX = 500

# The first part of a DSPy/LiteLLM model string -> the GenAI conventions' gen_ai.provider.name.
PROVIDERS = {
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}

# Core events shown as span events on the current span: name in programs.events -> span event.
# ``lm_retry`` comes with the upstream retries; while the core has no such event it is skipped.
SPAN_EVENTS = {"admission_waited": "dspy.admission.wait", "lm_retry": "dspy.lm.retry"}
SCALARS = (str, bool, int, float)  # what a span attribute can hold (besides sequences of them)


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process exports traces: an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


class Tracing:
    """This process's pipeline (provider, tracer), the model names for LM spans, the subscriptions."""

    def __init__(self, provider: "TracerProvider", models: dict[str, tuple[str, str, str]]) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION_SCOPE)
        self.models = models  # lm.model -> (alias, provider name, request model)
        self.subscriptions: list[events.Subscription[Any]] = []
        # In-flight LM spans by DSPy's call id (their end comes on the same thread and context).
        self.lm_spans: dict[str, tuple[Span, object]] = {}


_tracing: Tracing | None = None
# The program span of the call running in this context, its context token and the outer call's.
_program_span: ContextVar[tuple[Span, object, Any] | None] = ContextVar("dspy_program_span", default=None)


def active_tracer() -> trace.Tracer | None:
    """The tracer once the lifespan start-up built it; None with tracing off."""
    return None if _tracing is None else _tracing.tracer


def current_trace_id() -> str | None:
    """The current sampled trace's id (32 hex digits) for the log row; None when not traced."""
    if _tracing is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return format(span_context.trace_id, "032x")


# -- start-up and shutdown (lifespan hooks) ------------------------------------------------------


async def tracing_startup() -> None:
    """Lifespan start-up, in each worker process: build the SDK's pipeline if tracing is on."""
    global _tracing
    if _tracing is not None or not configured():
        return
    if not sdk_installed():
        logger.error(
            "Tracing off: the OpenTelemetry SDK is not installed: pip install 'dspy-django[tracing]'"
        )
        return
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
        logger.warning("Tracing: OTEL_EXPORTER_OTLP_PROTOCOL is ignored: spans go as OTLP/HTTP protobuf")
    runtime = get_runtime()
    provider = _build_provider(runtime.config.config.app_id)
    trace.set_tracer_provider(provider)  # spans of other instrumentation (the MCP SDK's) join in
    _tracing = Tracing(provider, model_names(runtime))
    _tracing.subscriptions = _subscribe()
    endpoint = next(os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name, "").strip())
    logger.info(
        "Tracing: OTLP/HTTP to %s as %s, sampler %s",
        endpoint,
        provider.resource.attributes.get("service.name"),
        provider.sampler.get_description(),
    )


def sdk_installed() -> bool:
    """The ``tracing`` extra: the SDK and its OTLP/HTTP exporter (the API alone is a dependency)."""
    modules = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
    try:
        return all(importlib.util.find_spec(module) is not None for module in modules)
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _build_provider(app_id: str) -> "TracerProvider":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES; service.instance.id: a UUID per worker process.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: app_id}))  # the config's app_id by default
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_BSP_*, OTEL_EXPORTER_OTLP_*
    return provider


async def tracing_shutdown() -> None:
    """Lifespan shutdown: stop making spans, export those still queued (bounded by the exporter)."""
    global _tracing
    tracing, _tracing = _tracing, None
    if tracing is None:
        return
    for subscription in tracing.subscriptions:
        subscription.close()
    await asyncio.to_thread(tracing.provider.shutdown)


def model_names(runtime: Runtime) -> dict[str, tuple[str, str, str]]:
    """Each served LM's model string -> (alias, gen_ai.provider.name, gen_ai.request.model).

    From the config's ``model`` (``openai/gpt-4o-mini``), not the LM's: a declared endpoint's LM
    is named after the provider it was registered as (``served-<alias>/...``).
    """
    names: dict[str, tuple[str, str, str]] = {}
    registry = runtime.config.config.models.registry
    for alias, lm in runtime.lms.items():
        entry = registry.get(alias)
        names.setdefault(lm.model, (alias, *split_model(entry.model if entry else lm.model)))
    return names


def split_model(model: str) -> tuple[str, str]:
    """``openai/gpt-4o-mini`` -> (``openai``, ``gpt-4o-mini``); no prefix: (``openai``, model)."""
    prefix, _, name = model.partition("/")
    if not name:
        return "openai", prefix  # DSPy's default provider
    return PROVIDERS.get(prefix, prefix), name


def _subscribe() -> list[events.Subscription[Any]]:
    subscriptions = [
        events.subscribe(events.request_started, on_request_started),
        events.subscribe(events.request_finished, on_request_finished),
        events.subscribe(events.lm_call_started, on_lm_call_started),
        events.subscribe(events.lm_call_finished, on_lm_call_finished),
    ]
    for event_name, span_event in SPAN_EVENTS.items():
        event = getattr(events, event_name, None)
        if isinstance(event, events.Event):
            subscriptions.append(events.subscribe(event, span_event_adder(span_event)))
    return subscriptions


# -- program spans -------------------------------------------------------------------------------


def on_request_started(started: events.RequestStarted) -> None:
    if _tracing is None:
        return
    attributes = {
        "dspy.program": started.program,
        "dspy.request_id": started.request_id,
        "dspy.source": started.source,
    }
    if started.entry:
        attributes["dspy.entry"] = started.entry
    span = _tracing.tracer.start_span(f"program {started.program}", attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    _program_span.set((span, token, _program_span.get()))


def on_request_finished(done: events.RequestFinished) -> None:
    current = _program_span.get()
    if current is None:
        return
    span, token, outer = current
    _program_span.set(outer)
    try:
        if span.is_recording():
            attributes: dict[str, Any] = {
                "dspy.status_code": done.status_code,
                "dspy.model_alias": done.model_alias,
                "dspy.usage.input_tokens": done.prompt_tokens,
                "dspy.usage.output_tokens": done.completion_tokens,
                "dspy.lm_calls": len(done.lm_calls),
                "dspy.program.version": done.version,
                "dspy.shadow": done.shadow,
            }
            if done.cost_usd is not None:
                attributes["dspy.cost_usd"] = done.cost_usd
            if not done.success:
                attributes["error.type"] = done.error_type or str(done.status_code)
                span.set_status(Status(StatusCode.ERROR, _description(done.error_detail)))
            span.set_attributes(attributes)
        span.end()
    finally:
        otel_context.detach(token)


def _description(detail: Any) -> str:
    return (detail if isinstance(detail, str) else repr(detail))[:ERROR_DESCRIPTION_MAX]


# -- LM call spans (GenAI semantic conventions) --------------------------------------------------


def on_lm_call_started(started: events.LMCallStarted) -> None:
    if _tracing is None:
        return
    alias, provider, model = _tracing.models.get(started.model) or ("", *split_model(started.model))
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if alias:
        attributes["dspy.model_alias"] = alias
    span = _tracing.tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    _tracing.lm_spans[started.call_id] = (span, token)


def on_lm_call_finished(done: events.LMCallFinished) -> None:
    entry = None if _tracing is None else _tracing.lm_spans.pop(done.call_id, None)
    if entry is None:
        return
    span, token = entry
    try:
        if span.is_recording():
            attributes: dict[str, Any] = {
                "gen_ai.usage.input_tokens": done.prompt_tokens,
                "gen_ai.usage.output_tokens": done.completion_tokens,
            }
            if done.response_model:
                attributes["gen_ai.response.model"] = done.response_model
            if done.cost_usd is not None:
                attributes["dspy.cost_usd"] = done.cost_usd
            if done.error:
                attributes["error.type"] = done.error
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()
    finally:
        otel_context.detach(token)


# -- span events ---------------------------------------------------------------------------------


def span_event_adder(name: str) -> Callable[[Any], None]:
    """A subscriber that adds each payload (a dataclass) as span event ``name`` on the current span.

    Its scalar fields become ``dspy.<field>`` attributes, whatever the event carries.
    """

    def add(payload: Any) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            values = ((field.name, getattr(payload, field.name)) for field in fields(payload))
            scalars = {f"dspy.{key}": value for key, value in values if isinstance(value, SCALARS)}
            span.add_event(name, scalars)

    return add
