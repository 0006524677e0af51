"""The OpenAPI document's last touches, made where the whole document is known.

* Hand-written response schemas (``programs.responses.sse_content``) carry their own ``$defs``;
  they move into ``components.schemas``, where their references point.
* An operation with API keys on (it has ``security``) can answer 401: declared with its body and
  ``WWW-Authenticate`` header, on exactly those operations.
"""

import copy
from typing import Any

from ninja import NinjaAPI
from ninja.openapi.schema import OpenAPISchema

from programs.responses import REF_TEMPLATE, ErrorBody

UNAUTHORIZED = {
    "description": "Missing or invalid API key",
    "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=ErrorBody.__name__)}}},
}


class ServiceAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: Any = None) -> OpenAPISchema:
        document = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        finish(document)
        return document


def finish(document: dict[str, Any]) -> None:
    # The operations hold the routes' own openapi_extra dicts: change copies, never the originals.
    document["paths"] = copy.deepcopy(document["paths"])
    components: dict[str, Any] = document["components"]["schemas"]
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                for media in response.get("content", {}).values():
                    for name, schema in media.get("schema", {}).pop("$defs", {}).items():
                        components.setdefault(name, schema)
            if operation.get("security"):
                operation["responses"].setdefault(401, UNAUTHORIZED)
                components.setdefault(
                    ErrorBody.__name__, ErrorBody.model_json_schema(ref_template=REF_TEMPLATE)
                )
