"""The adapter a program formats its prompts with: ``programs.<Name>.adapter`` (``chat`` or ``json``).

Built once per program at start-up, with the response format it will ask its LM for already
decided, and applied to every call with ``dspy.context`` (never read from global settings).

The response format comes from what the model can do, as a capability of its entry, not from
class or model names:

* ``json_schema`` (native structured outputs): the model supports JSON-schema response formats
  and the program allows them (``native_structured_outputs``, default true). DSPy builds the
  schema from the signature's output fields.
* ``json_object``: the model takes ``response_format`` but not a schema (or the program turned
  structured outputs off): JSON mode, the fields described in the prompt.
* ``prompt``: the model takes no ``response_format``: the prompt alone asks for a JSON object.

The capability is ``declared_models.<alias>.response_schema`` when the model is declared (DSPy
then knows it from the declaration), else DSPy's own model metadata (unknown models: no schema).
The chat adapter uses the same decision for the JSON retry DSPy makes when a chat answer cannot be
parsed.

Both render the part of the prompt that does not depend on the inputs (system message, demos)
once per signature and demos (:mod:`programs.prompts`).
"""

import logging
from typing import Any, Literal

import dspy

from programs.prompts import FixedPrompts

logger = logging.getLogger(__name__)

AdapterName = Literal["chat", "json"]
ResponseFormat = Literal["json_schema", "json_object", "prompt"]


def response_format_for(lm: Any, native_structured_outputs: bool) -> ResponseFormat:
    """What a JSON request to ``lm`` carries, from the LM's declared or looked-up capabilities."""
    if "response_format" not in lm.supported_params:
        return "prompt"
    if native_structured_outputs and lm.supports_response_schema:
        return "json_schema"
    return "json_object"


class ServedJSONAdapter(FixedPrompts, dspy.JSONAdapter):
    """DSPy's JSON adapter with its response format decided at start-up for the program's LM."""

    def __init__(
        self,
        lm: dspy.BaseLM,
        native_structured_outputs: bool = True,
        use_native_function_calling: bool = True,
    ) -> None:
        super().__init__(use_native_function_calling=use_native_function_calling)
        self.lm = lm
        self.native_structured_outputs = native_structured_outputs
        try:
            self.response_format: ResponseFormat | None = response_format_for(lm, native_structured_outputs)
        except Exception as exc:  # noqa: BLE001 - DSPy cannot tell yet: it decides per call, as usual
            logger.warning("Model %s: capabilities unknown at start-up (%s)", getattr(lm, "model", lm), exc)
            self.response_format = None

    def _format_for(self, lm: Any) -> ResponseFormat:
        if lm is self.lm and self.response_format is not None:
            return self.response_format
        # An LM the program brought itself (set on a predictor): its own capabilities decide.
        return response_format_for(lm, self.native_structured_outputs)

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        chosen = self._format_for(lm)
        if chosen == "json_schema":
            # DSPy builds the schema; it still falls back to json_object for open-ended mappings.
            super()._prepare_response_format(lm, lm_kwargs, signature)
        elif chosen == "json_object":
            lm_kwargs["response_format"] = {"type": "json_object"}


class ServedChatAdapter(FixedPrompts, dspy.ChatAdapter):
    """DSPy's chat adapter whose JSON retry (after an unparseable answer) is a :class:`ServedJSONAdapter`."""

    def __init__(self, lm: dspy.BaseLM, native_structured_outputs: bool = True) -> None:
        super().__init__()
        self.json_fallback = ServedJSONAdapter(
            lm, native_structured_outputs, self.use_native_function_calling
        )

    def _make_json_adapter_fallback(self) -> dspy.JSONAdapter:
        return self.json_fallback


def build_adapter(name: AdapterName, lm: dspy.BaseLM, native_structured_outputs: bool) -> dspy.Adapter:
    if name == "json":
        return ServedJSONAdapter(lm, native_structured_outputs)
    return ServedChatAdapter(lm, native_structured_outputs)


def describe(adapter: dspy.Adapter) -> str:
    """For the start-up log: ``json adapter (json_schema)``."""
    if isinstance(adapter, ServedJSONAdapter):
        return f"json adapter ({adapter.response_format})"
    fallback = getattr(adapter, "json_fallback", None)
    return f"chat adapter (JSON retry: {fallback.response_format})" if fallback else "chat adapter"
