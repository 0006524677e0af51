"""The playground's form fields, built from input schemas: Literal -> select, bool -> checkbox,
numbers -> number inputs, str -> text, lists/dicts/models -> JSON, **kwargs -> one JSON body."""

import json
from typing import Any, Literal

import dspy
from pydantic import BaseModel

from programs.schemas import build_input_schema
from ui.forms import BODY_FIELD, form_fields


class Address(BaseModel):
    city: str


class Rich(dspy.Module):
    def forward(
        self,
        text: str,
        mode: Literal["fast", "slow"] = "slow",
        level: Literal[1, 2, 3] | None = None,
        verbose: bool = True,
        strict: bool | None = None,
        count: int = 3,
        ratio: float | None = None,
        tags: list[str] | None = None,
        weights: dict[str, float] | None = None,
        address: Address | None = None,
    ) -> dict:
        return {}


class Free(dspy.Module):
    def forward(self, **kwargs: Any) -> dict:
        return kwargs


def fields(cls: type) -> dict[str, Any]:
    schema = build_input_schema(cls.__name__, cls.forward).model.model_json_schema()
    return {f.name: f for f in form_fields(schema)}


def test_each_type_gets_its_widget() -> None:
    got = fields(Rich)
    assert {name: f.kind for name, f in got.items()} == {
        "text": "text",
        "mode": "select",
        "level": "select",
        "verbose": "checkbox",
        "strict": "select",
        "count": "integer",
        "ratio": "number",
        "tags": "json",
        "weights": "json",
        "address": "json",
    }
    assert [name for name, f in got.items() if f.required] == ["text"]


def test_selects_carry_json_values_defaults_and_a_blank_only_when_optional() -> None:
    got = fields(Rich)
    mode = got["mode"]
    assert [(c.value, c.label, c.selected) for c in mode.choices] == [
        ('"fast"', "fast", False),
        ('"slow"', "slow", True),
    ]
    level = got["level"]  # optional without a default: it may be left out
    assert [c.value for c in level.choices] == ["", "1", "2", "3"]
    assert [json.loads(c.value) for c in level.choices[1:]] == [1, 2, 3]
    assert [c.value for c in got["strict"].choices] == ["", "true", "false"]


def test_defaults_and_json_placeholders() -> None:
    got = fields(Rich)
    assert got["verbose"].checked is True
    assert got["count"].initial == "3"
    assert got["ratio"].initial == ""
    assert json.loads(got["tags"].placeholder) == ["text"]
    assert json.loads(got["weights"].placeholder) == {"key": 0.0}
    assert json.loads(got["address"].placeholder) == {"city": "text"}


def test_free_form_programs_get_one_json_body() -> None:
    [body] = form_fields(build_input_schema("Free", Free.forward).model.model_json_schema())
    assert (body.name, body.kind, body.initial) == (BODY_FIELD, "body", "{}")


class Media(dspy.Module):
    def forward(
        self,
        image: dspy.Image,
        clip: dspy.Audio | None = None,
        many: list[dspy.Image] | None = None,
        link: str | None = None,
    ) -> dict:
        return {}


def test_images_and_audio_get_file_widgets() -> None:
    got = fields(Media)
    assert {name: (f.kind, f.multiple, f.required) for name, f in got.items()} == {
        "image": ("image", False, True),
        "clip": ("audio", False, False),
        "many": ("image", True, False),
        "link": ("text", False, False),
    }
    assert "data:image/" in got["many"].description  # the items' description, for a list
