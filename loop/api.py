"""The loop's routes: a call's trace (``GET /api/calls/{id}``), feedback (``POST /api/feedback``).

Who may do what (API keys on): a key reads and judges the calls it made itself (``read`` scope
for the trace, any key for feedback); an ``admin`` key or a staff session every call. Another
key's request id answers 404, as an unknown one does: its existence is not disclosed.
"""

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from ninja import Router

from apikeys.context import Caller
from loop import selectors, services
from loop.responses import CallDetail, FeedbackIn, FeedbackOut
from programs.responses import ErrorBody, ValidationErrorBody

calls_router = Router(tags=["loop"])
feedback_router = Router(tags=["loop"])


def _caller(request: HttpRequest) -> Caller | None:
    return getattr(request, "auth", None)


def _own_key_id(request: HttpRequest) -> int | None:
    """Whose calls the caller may see: its key's, or None for every call (admin, staff, keys off)."""
    caller = _caller(request)
    return caller.own_key_id if caller is not None else None


def _not_found(request_id: str) -> JsonResponse:
    return JsonResponse(
        {"detail": f"No call with request id '{request_id}' (or not one of yours)."}, status=404
    )


@calls_router.get(
    "/api/calls/{request_id}",
    response={200: CallDetail, 403: ErrorBody, 404: ErrorBody, 422: ValidationErrorBody},
    summary="A call with its trace: each LM call's messages and raw completion, in order",
    description="The trace is kept for programs whose calls are captured (`capture_io`). A key "
    "without the `admin` scope reads only the calls it made; another's answers 404.",
)
async def call_get(request: HttpRequest, request_id: str) -> JsonResponse:
    body = await sync_to_async(selectors.call_detail)(request_id, _own_key_id(request))
    return _not_found(request_id) if body is None else JsonResponse(body)


@feedback_router.post(
    "/api/feedback",
    response={200: FeedbackOut, 201: FeedbackOut, 400: ErrorBody, 404: ErrorBody, 422: ValidationErrorBody},
    summary="Judge a call: a score in [0, 1] or a label, a comment, a correction",
    description="201 when created; 200 when the same (request id, name, caller) is sent again "
    "(it replaces the earlier one). A key judges the calls it made; an `admin` key any call.",
)
async def feedback_post(request: HttpRequest, payload: FeedbackIn) -> JsonResponse:
    caller = _caller(request)
    given = await sync_to_async(services.feedback_give)(
        payload.request_id,
        api_key_id=caller.key_id if caller is not None else None,
        author=_author(caller),
        own_key_id=_own_key_id(request),
        name=payload.name,
        score=payload.score,
        value=payload.value,
        comment=payload.comment,
        correction=payload.correction,
    )
    if given is None:
        return _not_found(payload.request_id)
    body = {
        "request_id": payload.request_id,
        "created": given.created,
        "feedback": selectors.feedback_entry(given.feedback),
    }
    return JsonResponse(body, status=201 if given.created else 200)


def _author(caller: Caller | None) -> str:
    if caller is None:
        return ""
    return f"key {caller.key_id}" if caller.key_id is not None else caller.name
