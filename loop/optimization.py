"""The optimization runner: a DSPy optimizer compiles a copy of the program's module on a dataset,
with the program's LM and adapter (its DSPy settings, ``dspy.context`` as in a request), and
returns the compiled state (``module.dump_state()``) with its validation score.

Its LM calls are one logged program call (``source="optimize"``, ``entry`` the optimizer): every
LM call of the run is in that log row's ``lm_calls``, with tokens and cost, and in its trace when
the program is captured. Optimizers: ``BootstrapFewShot``, ``MIPROv2``, ``GEPA`` (DSPy's, with
``params`` as their keyword arguments; GEPA reflects with the program's LM unless ``params`` name
a ``reflection_lm`` alias), or ``"package.module:function"`` called as ``function(module,
trainset=..., valset=..., metric=..., **params)`` and returning the compiled module. The LM calls go
through the served LM, so its model's circuit and rpm/tpm budget (``programs/upstream.py``) apply
to each of them as to a request's.

:func:`optimize` is the plain function; :func:`optimization_run` the one the jobs wiring calls with
an :class:`~loop.models.Optimization`'s id (sync: an optimizer is sync code; run it in a thread):
it starts from the state of ``from_version`` (a version or an alias, through the registry), shows
its stages and trials (:mod:`loop.optimization_watch`), stops on a cancel, and registers the
compiled state as a new version through the registry, with its score and lineage; never promoted.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy
from django.utils import timezone

from loop.evaluation import mean
from loop.metrics import Metric, imported, metric_for
from loop.models import DatasetItem, Optimization, RunStatus
from loop.optimization_watch import Cancelled, RunWatch
from programs.calls import reported_call
from programs.execution import call_settings
from programs.instances import fork
from programs.program import Program
from programs.runtime import get_runtime
from versions import registry

OPTIMIZERS = ("BootstrapFewShot", "MIPROv2", "GEPA")


class OptimizerError(ValueError):
    """An optimizer that cannot be built (unknown name, bad params): a 422 at the API."""


@dataclass
class Optimized:
    state: dict[str, Any]
    score: float  # the compiled program's mean metric on the valset (the trainset without one)
    request_id: str  # the logged call that carries the run's LM calls


def examples(items: Sequence[DatasetItem | dict[str, Any]]) -> list[dspy.Example]:
    """Dataset items (or export lines) as DSPy examples, their inputs marked."""
    rows = [
        item if isinstance(item, dict) else {"inputs": item.inputs, "labels": item.labels} for item in items
    ]
    return [dspy.Example(**row["inputs"], **row["labels"]).with_inputs(*row["inputs"]) for row in rows]


def optimize(
    program: Program,
    trainset: list[dspy.Example],
    metric: Metric,
    optimizer: str = "BootstrapFewShot",
    params: dict[str, Any] | None = None,
    valset: list[dspy.Example] | None = None,
    *,
    start_state: dict[str, Any] | None = None,
    watch: RunWatch | None = None,
) -> Optimized:
    """Compile a copy of ``program``'s module, from ``start_state`` when given (the served instance
    is never touched); ``watch`` sees its stages and trials, and stops it (:class:`Cancelled`)."""
    params = dict(params or {})
    student = fork(program.instance)
    if start_state is not None:
        student.load_state(start_state)
    logged = json.dumps({"optimizer": optimizer, "params": params, "trainset": len(trainset)}).encode()
    with reported_call(program, source="optimize", entry=optimizer, inputs=logged) as call:
        if watch is not None:
            watch.request_id = call.request_id  # a failed or cancelled run names its call too
        try:
            with dspy.context(**call_settings(program, call.usage)):
                _stage(watch, "compiling")
                trial_metric = _watched(metric, watch)
                compiled = _compile(program, optimizer, params, student, trainset, valset, trial_metric)
                _stage(watch, "compiled")
                score = _validate(compiled, valset or trainset, metric, watch)
                _stage(watch, "validated")
        except Cancelled:
            call.failed(499, "Cancelled", "the optimization was cancelled")
            raise
        state = compiled.dump_state()
        call.succeeded(json.dumps({"score": score}).encode())
    return Optimized(state, score, call.request_id)


def _validate(
    compiled: dspy.Module, scored: list[dspy.Example], metric: Metric, watch: RunWatch | None
) -> float:
    """The compiled program's mean metric on ``scored`` (a cancel is seen between examples)."""
    scores = []
    for example in scored:
        if watch is not None:
            watch.check()
        scores.append(float(metric(example, compiled(**example.inputs()))))
    return mean(scores)


def _stage(watch: RunWatch | None, name: str) -> None:
    if watch is not None:
        watch.check()
        watch.stage(name)


def _watched(metric: Metric, watch: RunWatch | None) -> Metric:
    """The metric the optimizer calls: each call one trial for ``watch``."""
    if watch is None:
        return metric

    def trial(example: Any, prediction: Any, trace: Any = None) -> Any:
        watch.trial()
        return metric(example, prediction, trace)

    return trial


def _compile(
    program: Program,
    name: str,
    params: dict[str, Any],
    student: dspy.Module,
    trainset: list[dspy.Example],
    valset: list[dspy.Example] | None,
    metric: Metric,
) -> dspy.Module:
    try:
        if name == "BootstrapFewShot":
            return dspy.BootstrapFewShot(metric=metric, **params).compile(student, trainset=trainset)
        if name == "MIPROv2":
            mipro = dspy.MIPROv2(metric=metric, **{"auto": "light", **params})
            return mipro.compile(student, trainset=trainset, valset=valset)
        if name == "GEPA":
            reflection = get_runtime().lms.get(params.pop("reflection_lm", ""), program.lm)
            gepa = dspy.GEPA(
                metric=_gepa_metric(metric), reflection_lm=reflection, **{"auto": "light", **params}
            )
            return gepa.compile(student, trainset=trainset, valset=valset)
    except TypeError as exc:  # an unknown keyword in params
        raise OptimizerError(f"{name}: {exc}") from exc
    if ":" in name:
        return imported(name)(student, trainset=trainset, valset=valset, metric=metric, **params)
    raise OptimizerError(
        f"unknown optimizer {name!r}: one of {', '.join(OPTIMIZERS)}, or 'package.module:function'"
    )


def _gepa_metric(metric: Metric) -> Any:
    """GEPA calls its metric with two more arguments (the predictor's name and trace)."""

    def scored(gold: Any, pred: Any, trace: Any = None, *_: Any, **__: Any) -> float:
        return float(metric(gold, pred, trace))

    return scored


def optimization_run(optimization_id: int) -> None:
    """Run a stored optimization to the end (sync): the function the jobs wiring calls."""
    run = Optimization.objects.select_related("dataset", "valset").get(pk=optimization_id)
    watch = RunWatch(run.pk)
    try:
        watch.check()  # cancelled while queued
        Optimization.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
        watch.stage("started")
        program = get_runtime().programs[run.program]
        start = registry.resolve(run.program, run.from_version)
        metric = metric_for(run.metric, run.field or None, (run.params or {}).get("judge"))
        trainset = examples(list(run.dataset.items.all()))
        valset = examples(list(run.valset.items.all())) if run.valset is not None else None
        params = {key: value for key, value in (run.params or {}).items() if key != "judge"}
        result = optimize(
            program, trainset, metric, run.optimizer, params, valset, start_state=start.state, watch=watch
        )
        watch.claim_registration()
        version, _ = registry.register(
            program,
            result.state,
            note=f"optimization {run.pk}: {run.optimizer} on {run.dataset.name}",
            by=f"optimization {run.pk}",
            lineage=_lineage(run, start.label),
            score=result.score,
        )
    except Cancelled:
        _finish(run.pk, RunStatus.CANCELLED, watch, error="cancelled before registering a version")
        return
    except Exception as exc:  # noqa: BLE001 - the run fails with its reason, never silently
        _finish(run.pk, RunStatus.FAILED, watch, error=f"{type(exc).__name__}: {exc}")
        return
    watch.stage("registered")
    fields = {"state": result.state, "score": result.score, "request_id": result.request_id}
    _finish(run.pk, RunStatus.SUCCEEDED, watch, version=version.label, **fields)


def _lineage(run: Optimization, from_label: str) -> dict[str, Any]:
    """Where the new version came from: the optimization, its starting version, data and optimizer."""
    return {
        "optimization": run.pk,
        "from_version": from_label,
        "from_asked": run.from_version or registry.PRODUCTION,
        "dataset": run.dataset.name,
        "valset": run.valset.name if run.valset is not None else None,
        "optimizer": run.optimizer,
        "params": run.params,
        "metric": run.metric,
        "field": run.field,
    }


def _finish(optimization_id: int, status: str, watch: RunWatch, **fields: Any) -> None:
    fields = {"request_id": watch.request_id, **fields}
    Optimization.objects.filter(pk=optimization_id).update(
        status=status, progress=watch.progress(), finished_at=timezone.now(), **fields
    )
