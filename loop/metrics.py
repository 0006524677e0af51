"""Metrics for evaluations and optimizations, with DSPy's signature ``fn(example, prediction,
trace=None) -> float`` so the same callable scores an evaluation and drives an optimizer.

* ``exact_match``: the output field equals the label (whitespace trimmed; every label when no
  field is named). Strict on purpose: it is the score a user can check by hand.
* ``f1``: DSPy's token F1 (``dspy.evaluate.metrics.f1_score``: normalised, SQuAD-style).
* ``llm_judge``: a program of this project as the judge. It is called with the example's inputs
  that it declares, plus ``expected`` and ``predicted`` (the field's label and output, as text);
  its ``score`` output, clipped to [0, 1], is the score. Its calls are program calls
  (``call_program(source="eval")``): logged, priced, counted against budgets.
* ``"package.module:function"``: a function of the project (a dspy-cli project keeps them in
  ``src/<package>/metrics/``), DSPy's signature.
"""

import importlib
import json
from collections.abc import Callable
from typing import Any

import dspy
from asgiref.sync import async_to_sync
from dspy.evaluate.metrics import f1_score

from programs.calls import call_program
from programs.runtime import get_runtime

Metric = Callable[..., float | bool]
BUILT_IN = ("exact_match", "f1", "llm_judge")


class MetricError(ValueError):
    """A metric that cannot be built (unknown name, bad import path, judge not served): a 422."""


def metric_for(name: str, field: str | None = None, judge: str | None = None) -> Metric:
    """The metric ``name`` scoring ``field`` (None: every label)."""
    if name == "exact_match":
        return lambda example, prediction, trace=None: exact_match(example, prediction, field)
    if name == "f1":
        return lambda example, prediction, trace=None: f1(example, prediction, field)
    if name == "llm_judge":
        return llm_judge(judge, field)
    if ":" in name:
        return imported(name)
    raise MetricError(f"unknown metric {name!r}: one of {', '.join(BUILT_IN)}, or 'package.module:function'")


def _pairs(example: dspy.Example, prediction: Any, field: str | None) -> list[tuple[str, str]]:
    """(label, output) as text, for ``field`` or every label of the example."""
    labels = example.labels()
    names = [field] if field else list(labels.keys())
    return [(_text(labels.get(name)), _text(_get(prediction, name))) for name in names]


def _get(prediction: Any, name: str) -> Any:
    if isinstance(prediction, dict):
        return prediction.get(name)
    return getattr(prediction, name, None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def exact_match(example: dspy.Example, prediction: Any, field: str | None = None) -> float:
    pairs = _pairs(example, prediction, field)
    return float(bool(pairs) and all(label == output for label, output in pairs))


def f1(example: dspy.Example, prediction: Any, field: str | None = None) -> float:
    pairs = _pairs(example, prediction, field)
    return sum(f1_score(output, label) for label, output in pairs) / len(pairs) if pairs else 0.0


def llm_judge(judge: str | None, field: str | None) -> Metric:
    programs = get_runtime().programs
    if not judge or judge not in programs:
        raise MetricError(f"llm_judge needs `judge`: a program served here (got {judge!r})")
    program = programs[judge]
    accepted = set(program.inputs.model.model_fields)

    def judged(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        [(expected, predicted)] = _pairs(example, prediction, field) or [("", "")]
        given = {**example.inputs().toDict(), "expected": expected, "predicted": predicted}
        kwargs = {name: value for name, value in given.items() if name in accepted}
        result = async_to_sync(call_program)(program, kwargs, source="eval", entry="llm_judge")
        return _clipped(result.output.get("score"))

    return judged


def _clipped(score: Any) -> float:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return 0.0
    return min(1.0, max(0.0, value)) if value == value else 0.0  # NaN: 0


def imported(path: str) -> Metric:
    """``package.module:function`` from the served project (its ``src/`` is on the path)."""
    module_name, _, attribute = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise MetricError(f"cannot import metric {path!r}: {exc}") from exc
    if not callable(function):
        raise MetricError(f"metric {path!r} is not callable")
    return function
