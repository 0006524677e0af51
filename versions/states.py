"""A version's content: its state made canonical (loaded into the program's code and dumped again,
so equal content has one hash whoever wrote the file), the fingerprint of the code, and the check
that a state fits the code (a 422 naming the predictor and field, never a crash on a later call)."""

import hashlib
import json
from typing import Any

from programs.program import Program

# Keys of a demo that are DSPy's bookkeeping, not signature fields.
DEMO_BOOKKEEPING = frozenset({"augmented"})


class StateMismatch(ValueError):
    """The state does not fit the program's code; the message names the predictor and field."""


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def code_sha256(program: Program) -> str:
    """SHA-256 of the module's source file: a version is its state *for this code*."""
    return hashlib.sha256(program.module_file.read_bytes()).hexdigest()


def loaded_state(program: Program) -> dict[str, Any]:
    """The state the program loaded at start-up, as JSON data."""
    return json.loads(json.dumps(program.instance.dump_state(), default=str))


def canonical_state(program: Program, state: Any) -> dict[str, Any]:
    """``state`` checked against the program's code and made canonical. Raises :class:`StateMismatch`.

    Slow (builds a module): off the event loop."""
    if not isinstance(state, dict):
        raise StateMismatch("state: expected a JSON object (what module.save() writes)")
    state = {key: value for key, value in state.items() if key != "metadata"}
    template = type(program.instance)()
    predictors = dict(template.named_predictors())
    for name in state:
        if name not in predictors:
            raise StateMismatch(
                f"predictor {name!r}: {program.name} has no such predictor (it has: {', '.join(predictors)})"
            )
    for name, predictor in predictors.items():
        _check_predictor(name, predictor, state.get(name))
    try:
        template.load_state(state)
    except Exception as exc:
        raise StateMismatch(f"state does not load into {program.name}: {type(exc).__name__}: {exc}") from exc
    return json.loads(json.dumps(template.dump_state(), default=str))


def _check_predictor(name: str, predictor: Any, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise StateMismatch(f"predictor {name!r}: missing from the state (or not an object)")
    fields = predictor.signature.fields
    saved = (entry.get("signature") or {}).get("fields")
    if saved is not None and len(saved) != len(fields):
        raise StateMismatch(
            f"predictor {name!r}: the state has {len(saved)} signature fields, the code has "
            f"{len(fields)} ({', '.join(fields)})"
        )
    for index, demo in enumerate(entry.get("demos") or []):
        if not isinstance(demo, dict):
            raise StateMismatch(f"predictor {name!r}: demo {index} is not an object")
        for field in demo:
            if field not in fields and field not in DEMO_BOOKKEEPING:
                raise StateMismatch(
                    f"predictor {name!r}: field {field!r} of demo {index} is not in its signature "
                    f"({', '.join(fields)})"
                )


def summary(state: dict[str, Any]) -> list[dict[str, Any]]:
    """What a version is, per predictor: its instructions and demo count (the admin's listing, diff)."""
    return [
        {
            "predictor": name,
            "instructions": (entry.get("signature") or {}).get("instructions", ""),
            "demos": len(entry.get("demos") or []),
        }
        for name, entry in state.items()
        if isinstance(entry, dict)
    ]
