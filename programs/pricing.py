"""One price and one token bound for every LM call: the log row, the metrics, a key's spend, the budgets.

**Price.** A call's cost is, in this order:

1. the registry's price, when the model's entry states one (``input_cost_per_1m_tokens`` /
   ``output_cost_per_1m_tokens``) times the call's billed tokens;
2. else DSPy's own estimate of the call (``CallResult.cost``, from its bundled model metadata: it
   knows cached, reasoning and audio tokens, service tiers, long-context rates; on DSPy 3.3,
   LiteLLM's ``response_cost`` from its cost map);
3. else unknown (None: the log says so, the metrics count 0).

The registry wins because it is the operator's statement about *this* deployment: a negotiated
rate, a proxy's price, or a self-hosted model behind an ``api_base`` that keeps a hosted model's
name (``openai/gpt-4o-mini`` served by vLLM costs nothing like OpenAI's list price). DSPy's table
is a default for when the operator said nothing. The same :class:`Prices` price a call's
*reservation* before it is sent (the registry's, else DSPy's list price per token), so a key's
budget is reserved and settled in the same dollars the log records.

**Token bound.** What one LM call can bill at most, reserved before it is sent
(:func:`call_token_bound`): the rendered prompt's UTF-8 bytes (every byte-level BPE token covers at
least one byte, so bytes bound tokens from above) plus a few tokens per message for the chat
template, plus the completion's ``max_tokens``, times ``n``. How conservative that is:
docs/DEPLOYMENT.md ("API-key quotas").
"""

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from dspysite.env import env_int
from programs.dspy_calls import CALLS

# Completion tokens reserved when neither the call nor the model entry states max_tokens (then the
# bound is not one: a longer answer bills more than was reserved).
DEFAULT_COMPLETION_TOKENS = env_int("API_KEY_DEFAULT_MAX_TOKENS", 1024)
# A chat template's tokens around each message (role, start/end markers; OpenAI documents 3-4,
# Llama 3 uses 5) and before the reply.
TEMPLATE_TOKENS_PER_MESSAGE = 8
REPLY_PRIMING_TOKENS = 8
# Request keys the provider counts as prompt besides the messages.
_PROMPT_EXTRAS = ("response_format", "tools", "functions", "tool_choice")


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per token. ``stated``: the registry's (bills calls); else DSPy's list price (reservations)."""

    input_per_token: float
    output_per_token: float
    stated: bool = True

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


def model_prices(
    model: str, input_per_1m: float | None, output_per_1m: float | None, listed: bool = True
) -> Prices | None:
    """A model's price: the registry's when it states one, else DSPy's metadata, else None.

    ``model``: the LM's model string as DSPy sees it (a declared endpoint's ``served-<alias>/...``
    has no metadata, so DSPy prices none of its calls, and neither does this).
    """
    if input_per_1m is not None or output_per_1m is not None:
        return Prices((input_per_1m or 0.0) / 1e6, (output_per_1m or 0.0) / 1e6)
    if not listed:  # a declared endpoint on DSPy 3.3 (programs.lms.declared_lm_class)
        return None
    prompt, completion = CALLS.list_price(model)
    if prompt is None and completion is None:
        return None
    return Prices(float(prompt or 0.0), float(completion or 0.0), stated=False)


def billed_tokens(result: Any) -> tuple[int, int]:
    """The prompt and completion tokens a call's result reports (0, 0 for a cache hit)."""
    if getattr(result, "cache_hit", False):
        return 0, 0
    usage = getattr(result, "usage", None) or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def call_cost(prices: Prices | None, result: Any) -> float | None:
    """What one answered call cost: the registry's price, else DSPy's estimate (module docstring)."""
    if getattr(result, "cache_hit", False):
        return None
    if prices is not None and prices.stated:
        return prices.cost(*billed_tokens(result))
    return CALLS.cost(result)


# -- the token bound of one call --------------------------------------------------------------------


def call_token_bound(lm: Any, call: Any) -> tuple[int, int]:
    """(prompt, completion) tokens one prepared DSPy call can bill at most (module docstring)."""
    if call.request is not None:  # a typed lm15 Request: its whole body
        from dspy._vendor.lm15.serde import request_to_dict

        prompt = _json_bytes(request_to_dict(call.request)) + REPLY_PRIMING_TOKENS
        completion = call.request.config.max_tokens or _max_tokens(lm.kwargs)
        return prompt, completion
    legacy = call.legacy or {}
    messages = legacy.get("messages") or ({"role": "user", "content": call.prompt or ""},)
    prompt = REPLY_PRIMING_TOKENS
    for message in messages:
        content = message.get("content")
        size = len(content.encode()) if isinstance(content, str) else _json_bytes(content)
        prompt += TEMPLATE_TOKENS_PER_MESSAGE + size
    for name in _PROMPT_EXTRAS:
        if legacy.get(name) is not None:
            prompt += _json_bytes(legacy[name])
    n = legacy.get("n") or 1
    return prompt * n, _max_tokens(legacy) * n


def _max_tokens(kwargs: dict[str, Any]) -> int:
    stated = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")
    return int(stated) if stated else DEFAULT_COMPLETION_TOKENS


def _json_bytes(value: Any) -> int:
    if isinstance(value, type) and issubclass(value, BaseModel):
        value = value.model_json_schema()
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())
