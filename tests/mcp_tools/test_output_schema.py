"""Outputs that are not an object (a ``RootModel`` list, say) become ``{"result": ...}`` for MCP,
whose ``outputSchema`` and ``structuredContent`` must be objects; their ``$defs`` still resolve."""

import jsonschema
from pydantic import BaseModel, RootModel, TypeAdapter

from mcp_tools.tools import _object_schema


class Hit(BaseModel):
    title: str
    score: float


class Hits(RootModel[list[Hit]]):
    pass


def test_an_object_schema_is_kept_as_it_is() -> None:
    schema = TypeAdapter(Hit).json_schema()
    assert _object_schema(schema) == (schema, False)


def test_anything_else_is_wrapped_with_its_references_at_the_root() -> None:
    wrapped, is_wrapped = _object_schema(TypeAdapter(Hits).json_schema())
    assert is_wrapped and wrapped["type"] == "object" and wrapped["required"] == ["result"]
    validator = jsonschema.Draft202012Validator(wrapped)
    assert validator.is_valid({"result": [{"title": "a", "score": 1.0}]})
    assert not validator.is_valid({"result": [{"title": "a"}]})  # Hit's own schema, through $defs
    assert not validator.is_valid([{"title": "a", "score": 1.0}])
