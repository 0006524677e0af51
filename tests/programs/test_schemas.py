"""Schemas from forward type hints, and the response body built from what a program returns."""

from dataclasses import dataclass
from typing import Any, Literal

import dspy
import pytest
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from programs.outputs import OutputMismatch, to_response_body
from programs.schemas import build_input_schema, build_output_schema


class Point(BaseModel):
    x: int
    y: int


class Flags(TypedDict):
    loud: bool


@dataclass
class Span:
    start: int
    end: int


class Rich(dspy.Module):
    def forward(
        self,
        text: str,
        n: int = 2,
        maybe: str | None = None,
        kind: Literal["a", "b"] = "a",
        items: list[int] | None = None,
        mapping: dict[str, float] | None = None,
        point: Point | None = None,
        flags: Flags | None = None,
        span: Span | None = None,
    ) -> str:
        return text


def schema_of(cls: type, is_async: bool = False) -> Any:
    return build_input_schema(cls.__name__, cls.forward)


def test_required_and_optional_fields() -> None:
    schema = schema_of(Rich).model.model_json_schema()
    assert schema["required"] == ["text"]
    assert schema["properties"]["n"]["default"] == 2
    assert schema["properties"]["kind"]["enum"] == ["a", "b"]
    assert schema["additionalProperties"] is False


def test_validation_rejects_wrong_types_and_unknown_fields() -> None:
    model = schema_of(Rich).model
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"text": "t", "n": "x", "kind": "c", "nope": 1})
    assert {error["loc"][0] for error in caught.value.errors()} == {"n", "kind", "nope"}


def test_kwargs_keep_models_dataclasses_and_python_defaults() -> None:
    schema = schema_of(Rich)
    payload = schema.model.model_validate(
        {"text": "t", "point": {"x": 1, "y": 2}, "span": {"start": 0, "end": 3}, "flags": {"loud": True}}
    )
    kwargs = schema.to_kwargs(payload)
    assert isinstance(kwargs["point"], Point)
    assert kwargs["span"] == Span(0, 3)
    assert kwargs["flags"] == {"loud": True}
    # Left out by the client: the Python default applies (not passed), Optional-without-default is None.
    assert "n" not in kwargs
    assert "kind" not in kwargs


class OptionalNoDefault(dspy.Module):
    def forward(self, text: str, note: str | None) -> str:
        return text


def test_optional_without_default_is_optional_and_passed_as_none() -> None:
    schema = schema_of(OptionalNoDefault)
    assert schema.model.model_json_schema()["required"] == ["text"]
    assert schema.to_kwargs(schema.model.model_validate({"text": "t"})) == {"text": "t", "note": None}


class Untyped(dspy.Module):
    def forward(self, **kwargs):
        return kwargs


def test_var_keyword_forward_accepts_any_object() -> None:
    schema = schema_of(Untyped)
    assert schema.free_form
    assert schema.to_kwargs(schema.model.model_validate({"a": 1, "b": [2]})) == {"a": 1, "b": [2]}


class CoT(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.step = dspy.ChainOfThought("question -> answer: int")

    def forward(self, question: str) -> dspy.Prediction:
        return self.step(question=question)


def test_prediction_outputs_are_described_by_the_last_predictor() -> None:
    schema = build_output_schema("CoT", CoT.forward, CoT())
    assert set(schema.model.model_json_schema()["properties"]) == {"reasoning", "answer"}
    assert schema.adapter is None
    body = to_response_body(dspy.Prediction(reasoning="r", answer=4, extra="kept"), schema)
    assert body == b'{"reasoning":"r","answer":4,"extra":"kept"}'


class Scalar(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.step = dspy.Predict("question -> verdict")

    def forward(self, question: str) -> bool:
        return True


def test_scalar_return_is_wrapped_in_the_output_field_name() -> None:
    schema = build_output_schema("Scalar", Scalar.forward, Scalar())
    assert schema.scalar_field == "verdict"
    assert to_response_body(True, schema) == b'{"verdict":true}'
    with pytest.raises(OutputMismatch, match="verdict"):
        to_response_body("not a bool", schema)


class ReturnsModel(dspy.Module):
    def forward(self, x: int) -> Point:
        return Point(x=x, y=x)


def test_pydantic_return_is_its_fields_and_enforced() -> None:
    schema = build_output_schema("ReturnsModel", ReturnsModel.forward, ReturnsModel())
    assert to_response_body(Point(x=1, y=2), schema) == b'{"x":1,"y":2}'
    with pytest.raises(OutputMismatch):
        to_response_body({"x": "one"}, schema)


class NoPredictors(dspy.Module):
    def forward(self, x: int):
        return x


def test_unannotated_bare_value_is_wrapped_as_output() -> None:
    schema = build_output_schema("NoPredictors", NoPredictors.forward, NoPredictors())
    assert to_response_body(5, schema) == b'{"output":5}'
