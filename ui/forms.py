"""A program's input JSON schema turned into form fields the template renders and the page's script reads.

``Literal`` (an enum) becomes a select, ``bool`` a checkbox, ``int``/``float`` a number, ``str`` a
text area, ``dspy.Image`` (or a list of them) a URL box with a file picker and a drop zone, and
``dspy.Audio`` a file picker (the page turns files into ``data:`` URIs), and everything else
(lists, dicts, nested models, unions) a JSON text area. A program whose ``forward`` takes
``**kwargs`` gets one JSON text area for the whole body.
"""

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["text", "integer", "number", "checkbox", "select", "json", "body", "image", "audio"]
# A string schema's ``x-dspy-type`` (programs/dspy_types.py) -> its widget.
MEDIA_KINDS: dict[str, Kind] = {"Image": "image", "Audio": "audio"}
BODY_FIELD = "__body__"  # the free-form program's whole-body field


@dataclass(frozen=True)
class Choice:
    value: str  # the option's JSON, parsed back by the page's script
    label: str
    selected: bool = False


@dataclass(frozen=True)
class FormField:
    name: str
    kind: Kind
    required: bool
    label: str
    description: str = ""
    initial: str = ""  # the text area / input value
    checked: bool = False
    choices: tuple[Choice, ...] = field(default_factory=tuple)
    placeholder: str = ""
    multiple: bool = False  # a list of images


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    properties: dict[str, Any] = schema.get("properties") or {}
    if not properties and schema.get("additionalProperties", True) is not False:
        return [FormField(BODY_FIELD, "body", True, "Inputs (JSON object)", initial="{}", placeholder="{}")]
    required = set(schema.get("required", ()))
    definitions = schema.get("$defs", {})
    return [_field(name, prop, name in required, definitions) for name, prop in properties.items()]


def _field(name: str, prop: dict[str, Any], required: bool, definitions: dict[str, Any]) -> FormField:
    inner, nullable = _unwrap(prop, definitions)
    label = prop.get("title") or name
    description = prop.get("description") or inner.get("description") or ""
    has_default = "default" in prop
    default = prop.get("default")
    common = {"name": name, "required": required, "label": label, "description": description}
    if (media := MEDIA_KINDS.get(inner.get("x-dspy-type", ""))) is not None:
        return FormField(kind=media, **common)
    items = inner.get("items") if inner.get("type") == "array" else None
    if isinstance(items, dict) and (media := MEDIA_KINDS.get(items.get("x-dspy-type", ""))) is not None:
        common["description"] = description or items.get("description", "")
        return FormField(kind=media, multiple=True, **common)
    if "enum" in inner:
        blank = [] if required or (has_default and default is not None) else [Choice("", "—")]
        options = [Choice(json.dumps(v), str(v), has_default and v == default) for v in inner["enum"]]
        return FormField(kind="select", choices=(*blank, *options), **common)
    kind = inner.get("type")
    if kind == "boolean" and (not nullable or isinstance(default, bool)):
        return FormField(kind="checkbox", checked=bool(default), **common)
    if kind == "boolean":  # Optional[bool] defaulting to None: true, false or left out
        choices = (Choice("", "—", True), Choice("true", "true"), Choice("false", "false"))
        return FormField(kind="select", choices=choices, **common)
    if kind in ("integer", "number"):
        initial = "" if default is None else str(default)
        return FormField(kind=kind, initial=initial, **common)
    if kind == "string" and not inner.get("format"):
        return FormField(kind="text", initial=default if isinstance(default, str) else "", **common)
    initial = "" if default is None else json.dumps(default, indent=2)
    return FormField(kind="json", initial=initial, placeholder=_example(inner, definitions), **common)


def _unwrap(prop: dict[str, Any], definitions: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property's own schema without ``| None`` and with a top-level ``$ref`` resolved."""
    nullable = False
    options = prop.get("anyOf")
    if options:
        rest = [option for option in options if option.get("type") != "null"]
        nullable = len(rest) < len(options)
        prop = rest[0] if len(rest) == 1 else {"anyOf": rest}
    ref = prop.get("$ref", "")
    if ref.startswith("#/$defs/"):
        prop = definitions.get(ref.removeprefix("#/$defs/"), prop)
    return prop, nullable


def _example(schema: dict[str, Any], definitions: dict[str, Any], depth: int = 0) -> str:
    """A placeholder showing the JSON shape expected."""
    return json.dumps(_sample(schema, definitions, depth))


def _sample(schema: dict[str, Any], definitions: dict[str, Any], depth: int) -> Any:
    schema, _ = _unwrap(schema, definitions)
    if depth > 3:
        return None
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "array":
        return [_sample(schema.get("items", {}), definitions, depth + 1)]
    if kind == "object" and "properties" in schema:
        return {k: _sample(v, definitions, depth + 1) for k, v in schema["properties"].items()}
    if kind == "object":
        extra = schema.get("additionalProperties")
        return {"key": _sample(extra, definitions, depth + 1) if isinstance(extra, dict) else "value"}
    return {"string": "text", "integer": 0, "number": 0.0, "boolean": True}.get(kind or "")
