"""The call page ``/ui/calls/<request id>``: what ``dspy.inspect_history()`` shows, per predictor.

A browser page like the playground's (sessions, CSRF; a staff login when API keys are on): the
call's inputs and outputs, each LM call's messages and raw completion in order with tokens, cost
and latency, its feedback, and thumbs buttons that post to ``/api/feedback`` with the session.
"""

import json
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.views.decorators.http import require_safe

from loop import selectors
from programs.runtime import get_runtime
from ui.views import login_required


@require_safe
def call_page(request: HttpRequest, request_id: str) -> HttpResponse:
    if (login := login_required(request)) is not None:
        return login
    call = selectors.call_detail(request_id, None)  # staff (or keys off): every call
    if call is None:
        raise Http404(f"No call with request id {request_id}")
    context = {
        "title": get_runtime().config.config.app_id,
        "call": call,
        "inputs_json": _pretty(call["inputs"]),
        "outputs_json": _pretty(call["outputs"]),
        "lm_calls": [_shown(lm_call) for lm_call in call["lm_calls"]],
        "config": {"request_id": request_id, "csrf": get_token(request)},
    }
    return render(request, "loop/call.html", context)


def _pretty(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, indent=2)


def _shown(lm_call: dict[str, Any]) -> dict[str, Any]:
    """Message contents as text (a list of parts, an image reference: as JSON)."""
    messages = [
        {
            "role": m.get("role", ""),
            "content": m["content"] if isinstance(m.get("content"), str) else _pretty(m.get("content")),
        }
        for m in lm_call["messages"]
        if isinstance(m, dict)
    ]
    completion = lm_call["completion"]
    return {
        **lm_call,
        "messages": messages,
        "completion": completion if isinstance(completion, str) else _pretty(completion),
    }
