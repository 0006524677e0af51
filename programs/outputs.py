"""Turn whatever a program returned into the JSON body of the response."""

import dataclasses
from typing import Any

import dspy
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from programs.schemas import OutputSchema


class OutputMismatch(Exception):
    """The program returned something its declared return type does not allow."""


def to_response_body(result: Any, schema: OutputSchema) -> bytes:
    data = _as_object(result, schema)
    if schema.adapter is not None:
        try:
            data = schema.adapter.validate_python(data)
        except ValidationError as exc:
            raise OutputMismatch(_summary(exc)) from None
    # fallback=str keeps an odd value (a custom object in a Prediction) from failing the request.
    return to_json(data, fallback=str)


def _as_object(result: Any, schema: OutputSchema) -> Any:
    if isinstance(result, dspy.Prediction):
        return dict(result.items())
    if isinstance(result, (BaseModel, dict)) or dataclasses.is_dataclass(result):
        return result
    return {schema.scalar_field or "output": result}


def _summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "output"
    return f"{where}: {first['msg']}"
