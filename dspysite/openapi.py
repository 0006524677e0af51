"""The OpenAPI document's last touches, made where the whole document is known.

* Hand-written response schemas (``programs.responses.sse_content``) carry their own ``$defs``;
  they move into ``components.schemas``, where their references point.
* An operation with API keys on (it has ``security``) can answer 401: declared with its body and
  ``WWW-Authenticate`` header, on exactly those operations; and 403 where a scope is needed
  (``invoke`` on a program operation, ``read`` on telemetry's).
* A program operation with API keys on is under the keys' quotas (apikeys/quotas.py): its 429
  (over a quota) and every answer may carry ``RateLimit`` and ``RateLimit-Policy``, and its 503
  (quotas not checkable while Redis is down, failing closed) carries ``Retry-After``.
"""

import copy
from typing import Any

from ninja import NinjaAPI
from ninja.openapi.schema import OpenAPISchema

from programs.responses import REF_TEMPLATE, ErrorBody

# The tags of the operations that call a program (programs/api.py, batch.py, streaming.py).
PROGRAM_TAGS = frozenset({"programs", "gateways", "batch", "streaming"})
RATELIMIT_HEADERS = {
    "RateLimit": {
        "description": "What is left of each quota of the API key: draft-ietf-httpapi-ratelimit-headers "
        '(`"rpm";r=29;t=58, "tokens-per-day";r=99200;t=86341`); present when the key has quotas',
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": "The API key's quotas "
        '(`"rpm";q=30;w=60, "tokens-per-day";q=100000;qu="tokens";w=86400`)',
        "schema": {"type": "string"},
    },
}
OVER_QUOTA = "Over capacity, or over an API key quota (`error_type` quota_exceeded)"
RETRY_AFTER_HEADER = {"Retry-After": {"required": True, "schema": {"type": "integer"}}}

# The scope an operation needs (apikeys/auth.py), by tag: program doors `invoke`, telemetry `read`.
TELEMETRY_TAG = "telemetry"
JOBS_TAGS = frozenset({"jobs", "runs"})
FORBIDDEN = {
    "description": "The API key lacks the scope this operation needs: `{scope}` (or `admin`)",
    "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=ErrorBody.__name__)}}},
}

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
                tags = set(operation.get("tags", ()))
                if PROGRAM_TAGS & tags:
                    _forbidden(operation["responses"], "invoke")
                    _quota_answers(operation["responses"])
                elif JOBS_TAGS & tags:
                    _forbidden(operation["responses"], "invoke")
                elif TELEMETRY_TAG in tags:
                    _forbidden(operation["responses"], "read")


def _forbidden(responses: dict[Any, Any], scope: str) -> None:
    responses.setdefault(403, {**FORBIDDEN, "description": FORBIDDEN["description"].format(scope=scope)})


def _quota_answers(responses: dict[Any, Any]) -> None:
    """Every answer may carry the RateLimit headers; 429 and 503 also ``Retry-After``."""
    error = {
        "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=ErrorBody.__name__)}}}
    }
    for status in (429, 503):
        response = responses.setdefault(status, {"description": OVER_QUOTA, **error})
        response.setdefault("headers", {}).update(RETRY_AFTER_HEADER)
    responses[429]["description"] = OVER_QUOTA
    for status, response in responses.items():
        if int(status) != 401:  # no key, no quota
            response.setdefault("headers", {}).update(RATELIMIT_HEADERS)
