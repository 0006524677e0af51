"""The optimization runner: a DSPy optimizer compiles a copy of the program's module on a dataset,
with the program's LM and adapter (its DSPy settings, ``dspy.context`` as in a request), and
returns the compiled state (``module.dump_state()``) with its validation score.

Its LM calls are one logged program call (``source="optimize"``, ``entry`` the optimizer): every
LM call of the run is in that log row's ``lm_calls``, with tokens and cost, and in its trace when
the program is captured. Optimizers: ``BootstrapFewShot``, ``MIPROv2``, ``GEPA`` (DSPy's, with
``params`` as their keyword arguments; GEPA reflects with the program's LM unless ``params`` name
a ``reflection_lm`` alias), or ``"package.module:function"`` called as ``function(module,
trainset=..., valset=..., metric=..., **params)`` and returning the compiled module.

:func:`optimize` is the plain function; :func:`optimization_run` the one the jobs wiring calls with
an :class:`~loop.models.Optimization`'s id (sync: an optimizer is sync code; run it in a thread).
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
from programs.calls import reported_call
from programs.execution import call_settings
from programs.instances import fork
from programs.program import Program
from programs.runtime import get_runtime

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
) -> Optimized:
    """Compile a copy of ``program``'s module (the served instance is never touched)."""
    params = dict(params or {})
    student = fork(program.instance)
    logged = json.dumps({"optimizer": optimizer, "params": params, "trainset": len(trainset)}).encode()
    with reported_call(program, source="optimize", entry=optimizer, inputs=logged) as call:
        with dspy.context(**call_settings(program, call.usage)):
            compiled = _compile(program, optimizer, params, student, trainset, valset, metric)
            scored = valset or trainset
            score = mean([float(metric(example, compiled(**example.inputs()))) for example in scored])
        state = compiled.dump_state()
        call.succeeded(json.dumps({"score": score}).encode())
    return Optimized(state, score, call.request_id)


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
    Optimization.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    try:
        program = get_runtime().programs[run.program]
        metric = metric_for(run.metric, run.field or None, (run.params or {}).get("judge"))
        trainset = examples(list(run.dataset.items.all()))
        valset = examples(list(run.valset.items.all())) if run.valset is not None else None
        params = {key: value for key, value in (run.params or {}).items() if key != "judge"}
        result = optimize(program, trainset, metric, run.optimizer, params, valset)
    except Exception as exc:  # noqa: BLE001 - the run fails with its reason, never silently
        Optimization.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        return
    Optimization.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        state=result.state,
        score=result.score,
        request_id=result.request_id,
        finished_at=timezone.now(),
    )
