"""The registry's management API, ``admin`` scope only (a key without it: 403; staff sessions are
admin): versions, aliases, splits, shadows and rollbacks of a program (docs/VERSIONS.md)."""

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from ninja import Router
from pydantic import BaseModel, Field

from apikeys.context import current_caller
from programs.responses import ErrorBody, ValidationErrorBody
from programs.runtime import get_runtime
from versions import registry
from versions.routing import TargetInvalid
from versions.states import StateMismatch

router = Router(tags=["versions"])
AUTH_ERRORS: dict[int, Any] = {401: ErrorBody, 403: ErrorBody, 404: ErrorBody}


class VersionIn(BaseModel):
    state: dict[str, Any] = Field(description="what `module.save('state.json')` wrote")
    note: str = ""


class _VersionFields(BaseModel):
    """What a registered version says of itself, in the answer to a registration and in a listing."""

    version: str
    note: str
    created_at: str
    code_sha256: str
    state_sha256: str
    score: float | None = Field(default=None, description="its validation score (an optimization's)")
    lineage: dict[str, Any] = Field(
        default_factory=dict,
        description="where it came from: the optimization (id, from_version, dataset, valset, "
        "optimizer, params, metric); {} for an uploaded or loaded state",
    )


class VersionOut(_VersionFields):
    created: bool


class VersionEntry(_VersionFields):
    aliases: list[str]
    created_by: str
    model_alias: str


class VersionListing(BaseModel):
    versions: list[VersionEntry]


class ShadowIn(BaseModel):
    version: str
    fraction: float = 1.0


class AliasIn(BaseModel):
    """One version (``version``), or a weighted ``split`` with its ``sticky`` rule; maybe a shadow."""

    version: str | None = None
    split: dict[str, float] | None = Field(default=None, examples=[{"v3": 90, "v4": 10}])
    sticky: str = Field(default="key", description="key | none | header:<Name>")
    shadow: ShadowIn | None = None


class AliasOut(BaseModel):
    alias: str
    version: str | None = None
    split: dict[str, float] | None = None
    sticky: str | None = None
    shadow: dict[str, Any] | None = None
    updated_at: str
    updated_by: str


class AliasListing(BaseModel):
    aliases: list[AliasOut]


class Move(BaseModel):
    alias: str
    before: dict[str, Any] | None = Field(description="the target before the move; null: a new alias")
    after: dict[str, Any]
    action: str
    by: str
    at: str


class HistoryListing(BaseModel):
    history: list[Move]


def _caller_name() -> str:
    caller = current_caller.get()
    return caller.name if caller is not None else ""


def _unknown(program: str) -> JsonResponse | None:
    if program in get_runtime().programs:
        return None
    return JsonResponse({"detail": f"Unknown program {program!r}", "program": program}, status=404)


def _error(status: int, exc: Exception, program: str) -> JsonResponse:
    detail = str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
    return JsonResponse(
        {"detail": detail, "error_type": type(exc).__name__, "program": program}, status=status
    )


@router.get("/api/programs/{program}/versions", response={200: VersionListing, **AUTH_ERRORS},
            summary="A program's versions, oldest first, with the aliases that run each")  # fmt: skip
async def versions_list(request: HttpRequest, program: str) -> JsonResponse:
    if (unknown := _unknown(program)) is not None:
        return unknown
    return JsonResponse({"versions": await sync_to_async(registry.versions_listing)(program)})


@router.post(
    "/api/programs/{program}/versions",
    response={
        200: VersionOut,
        201: VersionOut,
        400: ErrorBody,
        422: ErrorBody | ValidationErrorBody,
        **AUTH_ERRORS,
    },
    summary="Register a saved state (201; 200 with created: false when that content is registered)",
    description="422 names the predictor and field when the state does not fit the program's code.",
)
async def versions_add(request: HttpRequest, program: str, payload: VersionIn) -> JsonResponse:
    if (unknown := _unknown(program)) is not None:
        return unknown
    served = get_runtime().programs[program]
    by = _caller_name()
    try:
        version, created = await sync_to_async(registry.register)(
            served, payload.state, note=payload.note, by=by
        )
    except StateMismatch as exc:
        return _error(422, exc, program)
    return JsonResponse(registry.version_entry(version, created), status=201 if created else 200)


@router.get("/api/programs/{program}/aliases", response={200: AliasListing, **AUTH_ERRORS},
            summary="A program's aliases and what each runs")  # fmt: skip
async def aliases_list(request: HttpRequest, program: str) -> JsonResponse:
    if (unknown := _unknown(program)) is not None:
        return unknown
    return JsonResponse({"aliases": await sync_to_async(registry.aliases_listing)(program)})


@router.put(
    "/api/programs/{program}/aliases/{alias}",
    response={200: AliasOut, 400: ErrorBody, 422: ErrorBody | ValidationErrorBody, **AUTH_ERRORS},
    summary="Point an alias at a version, or a split (sticky by key, header or none), maybe with a shadow",
    description="404 names an unknown version; every worker follows within a second.",
)
async def alias_set(request: HttpRequest, program: str, alias: str, payload: AliasIn) -> JsonResponse:
    if (unknown := _unknown(program)) is not None:
        return unknown
    raw = payload.model_dump(exclude_none=True)
    if "split" not in raw:
        raw.pop("sticky", None)
    try:
        row = await sync_to_async(registry.set_alias)(program, alias, raw, by=_caller_name())
    except TargetInvalid as exc:
        return _error(422, exc, program)
    except LookupError as exc:
        return _error(404, exc, program)
    return JsonResponse(_alias_entry(row))


@router.post(
    "/api/programs/{program}/aliases/{alias}/rollback",
    response={200: AliasOut, 409: ErrorBody, **AUTH_ERRORS},
    summary="Move an alias back to its previous target (409: nothing to roll back)",
)
async def alias_rollback(request: HttpRequest, program: str, alias: str) -> JsonResponse:
    if (unknown := _unknown(program)) is not None:
        return unknown
    try:
        row = await sync_to_async(registry.rollback)(program, alias, by=_caller_name())
    except LookupError as exc:
        return _error(404, exc, program)
    except registry.NothingToRollBack as exc:
        return _error(409, exc, program)
    return JsonResponse(_alias_entry(row))


@router.get("/api/programs/{program}/history", response={200: HistoryListing, **AUTH_ERRORS},
            summary="The moves of a program's aliases, newest first (who, when, from -> to)")  # fmt: skip
async def aliases_history(request: HttpRequest, program: str, alias: str | None = None) -> JsonResponse:
    if (unknown := _unknown(program)) is not None:
        return unknown
    return JsonResponse({"history": await sync_to_async(registry.history_listing)(program, alias)})


def _alias_entry(row: Any) -> dict[str, Any]:
    return {
        "alias": row.name,
        **row.target,
        "updated_at": row.updated_at.isoformat(),
        "updated_by": row.updated_by,
    }
