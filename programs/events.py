"""A small event API: request started / finished, LM call finished. Telemetry and users subscribe.

::

    from programs import events

    def log_cost(call: events.LMCallFinished) -> None:
        logger.info("LM call %s: %s tokens", call.model, call.prompt_tokens + call.completion_tokens)

    events.subscribe(events.lm_call_finished, log_cost)              # for the life of the process

    class Dashboard:
        def __init__(self) -> None:                                  # held weakly: a collected
            events.subscribe(events.request_finished, self.on_done)   # Dashboard is dropped
        def on_done(self, request: events.RequestFinished) -> None: ...

    subscription = events.subscribe(events.request_started, handler)
    subscription.close()                                             # explicit end (idempotent)

Rules, so a subscription can never leak or slow a request down:

* A bound method is held through ``weakref.WeakMethod``: when its object is garbage-collected the
  subscription is removed by itself and the method is never called again. Plain functions (and
  other callables) are held strongly unless ``weak=True``. ``Subscription.close()`` (or ``with``)
  ends a subscription explicitly, for long-running code that outlives what it subscribed.
* Emitting reads an immutable tuple of subscriptions: no lock on the hot path, and subscribing or
  closing during an emit is safe (it takes effect for the next emit). Emitters test the event's
  truth value first, so an event nobody listens to costs one attribute read.
* A subscriber that raises is logged (with the traceback) and skipped; the request goes on.
* Subscribers run synchronously where the event happens: ``request_*`` and ``admission_waited``
  on the event loop, ``lm_call_*`` on the thread of the LM call (a worker thread for sync
  programs), always in the request's context (:data:`programs.context.current_request_id` is
  set). A ``*_started`` event and its ``*_finished`` one are emitted in the same context, so a
  subscriber may set a contextvar at the start (the current OpenTelemetry span: telemetry.tracing)
  and reset it at the end. Keep them quick; hand slow work to a queue.

Why not ``django.dispatch.Signal``? It holds receivers weakly too, and ``send_robust`` logs and
skips a failing one as ``emit`` does, but each emit costs several times more. Measured with
``timeit`` (best of 7 runs of 1,000,000 emits; Django 5.2.19, Python 3.11, the shared 2-core
development machine under load, so read the ratios): one function subscribed, ``Event.emit``
0.30 µs, ``Signal.send_robust`` 3.5-4.6 µs (``send`` 3.7-4.0 µs); one bound method held weakly,
1.2 µs against 4.4-5.3 µs; nobody subscribed, 0.07-0.24 µs against 0.35-0.67 µs. A request emits
``request_started`` and ``request_finished`` to three subscriptions (telemetry, API keys; more
with tracing and per LM call): about 1 µs here, 11 µs or more with Signals.

DSPy callbacks follow the same rule at their own level: the server registers them once at
start-up (on the LMs it builds); a request never appends to a global list (``docs/ARCHITECTURE.md``,
"Concurrency guarantees").
"""

import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber of one event; :meth:`close` ends it (also as a context manager)."""

    __slots__ = ("__weakref__", "_ref", "_weak", "event")

    def __init__(self, event: "Event[T]", callback: Callable[[T], object], weak: bool) -> None:
        self.event = event
        self._weak = weak
        if not weak:
            self._ref: Any = callback
        else:
            this = weakref.ref(self)

            def collected(_: object) -> None:  # the subscriber's object is gone: drop the subscription
                subscription = this()
                if subscription is not None:
                    subscription.close()

            is_method = inspect.ismethod(callback)
            self._ref = (weakref.WeakMethod if is_method else weakref.ref)(callback, collected)  # type: ignore[arg-type]

    def callback(self) -> Callable[[T], object] | None:
        """The subscriber, or None once it was collected."""
        return self._ref() if self._weak else self._ref

    @property
    def active(self) -> bool:
        return self in self.event._subscriptions

    def close(self) -> None:
        self.event._remove(self)

    def __enter__(self) -> "Subscription[T]":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription to {self.event.name}: {self.callback()!r}>"


class Event(Generic[T]):
    """A named event. ``subscribe`` to it; the code where it happens calls ``emit``."""

    __slots__ = ("_lock", "_subscriptions", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscriptions: tuple[Subscription[T], ...] = ()
        # Reentrant: a weak subscriber may be collected (and removed) while this thread holds it.
        self._lock = threading.RLock()

    def subscribe(self, callback: Callable[[T], object], *, weak: bool | None = None) -> Subscription[T]:
        """Call ``callback(payload)`` on every emit until the subscription ends.

        ``weak`` defaults to True for bound methods (the subscription ends when their object is
        collected) and to False for anything else.
        """
        if not callable(callback):
            raise TypeError(f"{self.name}: subscriber {callback!r} is not callable")
        subscription = Subscription(self, callback, inspect.ismethod(callback) if weak is None else weak)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def emit(self, payload: T) -> None:
        for subscription in self._subscriptions:
            callback = subscription.callback()
            if callback is None:
                continue  # collected; its removal is on its way
            try:
                callback(payload)
            except Exception:
                logger.exception("%s subscriber %r failed", self.name, callback)

    def _remove(self, subscription: Subscription[T]) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def __len__(self) -> int:
        return len(self._subscriptions)

    def __bool__(self) -> bool:
        return bool(self._subscriptions)

    def __repr__(self) -> str:
        return f"<Event {self.name}: {len(self)} subscriber(s)>"


def subscribe(
    event: Event[T], callback: Callable[[T], object], *, weak: bool | None = None
) -> Subscription[T]:
    """``subscribe(events.request_finished, handler)``: see :meth:`Event.subscribe`."""
    return event.subscribe(callback, weak=weak)


# -- the events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestStarted:
    program: str
    request_id: str
    source: str = "http"  # the kind of front door: http, gateway, batch, stream, mcp, cron
    entry: str = ""  # which door of that kind: a gateway class, a job, a tool ("" for the plain route)


@dataclass(frozen=True, slots=True)
class RequestFinished:
    program: str
    request_id: str
    status_code: int
    duration_ms: float | None  # None for requests refused without running the program (429, 503)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: LM calls were made but none had a known price
    lm_calls: tuple[dict[str, Any], ...]
    source: str = "http"
    entry: str = ""
    model_alias: str = ""
    model: str = ""
    inputs: bytes | None = None  # the request body (or the inputs as JSON) the call was made with
    outputs: bytes | None = None  # the JSON outputs, on success
    error_type: str = ""
    error_detail: Any = ""  # a message, or a list of validation errors
    finished_at: float = 0.0  # time.time()
    # The model alias that answered the last LM call (a fallback's when one answered; "" when the
    # call made no LM call), and the upstream requests all its LM calls took (retries included).
    answered_by: str = ""
    attempts: int = 0
    # The program version that ran the call ("": unversioned), and whether it ran as a shadow (a
    # sampled copy of a call off the answer's path).
    version: str = ""
    shadow: bool = False
    # The program's calls are captured (programs.capture): each LM call in order, its ``lm_calls``
    # entry plus ``messages`` (as DSPy sent them) and ``completion`` (DSPy's outputs), raw and
    # unbounded: a subscriber keeps them off the request path. Empty when capture is off.
    lm_traces: tuple[dict[str, Any], ...] = ()

    @property
    def success(self) -> bool:
        return self.status_code == 200


@dataclass(frozen=True, slots=True)
class LMCallStarted:
    request_id: str
    model: str
    call_id: str  # DSPy's id of the call, the same on its LMCallFinished


@dataclass(frozen=True, slots=True)
class LMCallFinished:
    request_id: str
    model: str
    duration_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    error: str | None  # the exception's class name when the call failed
    call_id: str = ""
    response_model: str = ""  # the model the upstream says answered, when it says


@dataclass(frozen=True, slots=True)
class AdmissionWaited:
    """A call waited for a slot (``server.max_queue_ms``): admitted in the end, or refused."""

    request_id: str
    limiter: str  # the program's name, or the sync worker threads' limiter
    waited_ms: float
    admitted: bool


@dataclass(frozen=True, slots=True)
class LMRetry:
    """One failed upstream attempt of an LM call (programs/upstream.py)."""

    request_id: str
    model_alias: str
    attempt: int  # 1 for the first request to this model in this LM call
    status: int | None  # the upstream's HTTP status, None for timeouts and connection failures
    wait_s: float  # how long before the next attempt; 0.0 when none follows on this model
    error_type: str  # the exception's class name
    retrying: bool  # another attempt on the same model follows


@dataclass(frozen=True, slots=True)
class CircuitChanged:
    model_alias: str
    state: str  # "open" (failures tripped it, or its trial call failed) or "closed" (a call succeeded)


#: Every program call, through any front door (programs.calls), as it starts: after validation.
request_started: Event[RequestStarted] = Event("request_started")
#: The same requests when they end, whatever the outcome, with their own tokens and cost.
request_finished: Event[RequestFinished] = Event("request_finished")
#: The same LM calls as they start, on the thread and in the context their end is reported in.
lm_call_started: Event[LMCallStarted] = Event("lm_call_started")
#: Every call to an LM the runtime built (the model aliases of the config), success or failure.
lm_call_finished: Event[LMCallFinished] = Event("lm_call_finished")
#: A call that found its limiter full and waited for a slot (never emitted for an immediate answer).
admission_waited: Event[AdmissionWaited] = Event("admission_waited")
#: Every failed upstream attempt of those LM calls, whether another attempt follows or not.
lm_retry: Event[LMRetry] = Event("lm_retry")
#: A model's circuit breaker opened or closed (in this process's view; see programs/circuits.py).
circuit_changed: Event[CircuitChanged] = Event("circuit_changed")

ALL_EVENTS: tuple[Event[Any], ...] = (
    request_started,
    request_finished,
    lm_call_started,
    lm_call_finished,
    admission_waited,
    lm_retry,
    circuit_changed,
)
