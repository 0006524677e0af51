"""The programs as MCP resources: ``dspy://programs`` (the ``GET /programs`` listing) and
``dspy://programs/{name}/schema`` (one program's entry of it: schemas, model, endpoint).

The programs do not change while the process runs, their versions and aliases do (docs/VERSIONS.md):
the resources are listed once, their text is built when read (a rare call), as ``GET /programs``.
"""

import json
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from programs.api import program_listing
from programs.runtime import Runtime

LISTING_URI = "dspy://programs"
SCHEMA_URI = "dspy://programs/{name}/schema"
JSON = "application/json"


class ProgramResources:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        schemas = {SCHEMA_URI.format(name=entry["name"]): entry for entry in program_listing(runtime)}
        self.listed = [
            _resource(LISTING_URI, "programs", "The served programs: models, endpoints, JSON schemas"),
            *(
                _resource(uri, f"{entry['name']} schema", f"Input and output JSON schemas of {entry['name']}")
                for uri, entry in schemas.items()
            ),
        ]
        self.templates = [
            types.ResourceTemplate(
                uri_template=SCHEMA_URI,
                name="program schema",
                description="One program's entry of dspy://programs: its input and output JSON schemas",
                mime_type=JSON,
            )
        ]

    def read(self, uri: str) -> types.ReadResourceResult:
        listing = program_listing(self.runtime)
        texts = {LISTING_URI: _json({"programs": listing})}
        texts.update({SCHEMA_URI.format(name=entry["name"]): _json(entry) for entry in listing})
        text = texts.get(uri)
        if text is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {uri}", {"uri": uri})
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type=JSON, text=text)]
        )


def _resource(uri: str, name: str, description: str) -> types.Resource:
    return types.Resource(uri=uri, name=name, description=description, mime_type=JSON)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
