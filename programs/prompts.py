"""A program's fixed prompt, rendered once: the system message and the demos of each signature.

DSPy's adapters render the whole prompt on every call: the system message (field descriptions,
structure, instructions) and every demo, although none of it depends on the call's inputs. For a
``question -> answer`` signature that is ~80% of ``format``'s time without demos, and most of it
with a few. :class:`FixedPrompts` keeps those leading messages per adapter, keyed by what their
rendering reads:

* the signature by identity (``load_state`` and ``with_instructions`` make new classes), plus its
  instructions and, per field, the ``FieldInfo`` object, its annotation and metadata by identity
  and its ``json_schema_extra`` (description, prefix, constraints) by value, which in-place edits
  change;
* the demos by value: each demo's values for the signature's fields, with their exact types (so
  ``1``, ``1.0`` and ``True`` stay apart). Demos holding anything but JSON-shaped built-in values
  (a ``dspy.Image``, a pydantic model, a ``str`` subclass) are rendered by DSPy on every call.

Signatures with a ``dspy.History`` input are rendered by DSPy as well. The messages returned are
the ones DSPy's own ``format`` returns, byte for byte (tests/programs/test_prompts.py compares them).
"""

import copy
from collections.abc import Hashable, Iterable
from typing import Any

from dspy.adapters._legacy_type_markers import _expand_legacy_custom_type_markers_in_chat_message
from dspy.adapters.base import Adapter

from programs.dspy_speedups import Same

# Signatures per adapter: DSPy makes a new class per call when it adapts a signature to a native
# feature (reasoning, citations); those are looked up, missed and dropped when the cache is full.
CACHE_LIMIT = 64
_MISSING = object()
_EXACT = frozenset({int, bool, type(None)})


class _Unfrozen(Exception):
    """A value whose rendering cannot be told from a key: the prompt is rendered by DSPy."""


def _freeze(value: Any) -> Hashable:
    """The value with its exact types, hashable; raises _Unfrozen for anything else.

    Strings stand for themselves (a string equals no other frozen value); everything else is
    tagged with its type, so ``1``, ``1.0`` and ``True`` stay apart.
    """
    kind = type(value)
    if kind is str:
        return value
    if kind in _EXACT:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))  # -0.0 == 0.0, but they render differently
    if kind is list or kind is tuple:
        return (kind, tuple(_freeze(item) for item in value))
    if kind is dict:
        return (kind, tuple((_freeze(key), _freeze(item)) for key, item in value.items()))
    raise _Unfrozen


def _signature_key(signature: Any) -> Hashable:
    fields = tuple(
        (
            name,
            Same(info),
            Same(info.annotation),
            tuple(map(Same, info.metadata)) if info.metadata else (),
            _freeze(info.json_schema_extra),
        )
        for name, info in signature.model_fields.items()
    )
    return (Same(signature), signature.__doc__, fields)


def _demos_key(names: tuple[str, ...], demos: Iterable[Any]) -> Hashable:
    return tuple(tuple(_freeze(demo[name]) if name in demo else _MISSING for name in names) for demo in demos)


def prompt_key(signature: Any, demos: Iterable[Any]) -> Hashable | None:
    """Everything the system message and the demo messages depend on; None when it cannot be told."""
    try:
        return (_signature_key(signature), _demos_key(tuple(signature.model_fields), demos))
    except (_Unfrozen, TypeError):  # TypeError: a demo that is not a mapping
        return None


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    """A caller's own copy: DSPy and callbacks may change the messages they are given."""
    return dict(message) if isinstance(message.get("content"), str) else copy.deepcopy(message)


class FixedPrompts:
    """Adapter mixin: ``format`` reuses the system message and demos rendered for the same key.

    Put it before the DSPy adapter class in the bases. DSPy wraps ``format`` with its callbacks
    once per class, so this ``format`` runs the callbacks exactly as the adapter's own did.
    """

    _fixed_prompts: dict[Hashable, tuple[dict[str, Any], ...]]

    def format(self, signature: Any, demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        adapter: Any = self  # the mixin is only ever combined with a dspy.Adapter
        key = None if adapter._get_history_field_name(signature) else prompt_key(signature, demos)
        if key is None:
            return Adapter.format(adapter, signature, demos, inputs)  # DSPy's own rendering, in full
        cache = self.__dict__.setdefault("_fixed_prompts", {})
        fixed = cache.get(key)
        if fixed is None:
            system = {"role": "system", "content": adapter.format_system_message(signature)}
            rendered = [system, *adapter.format_demos(signature, demos)]
            fixed = tuple(_expand_legacy_custom_type_markers_in_chat_message(message) for message in rendered)
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = fixed
        messages = [_copy(message) for message in fixed]
        content = adapter.format_user_message_content(signature, dict(inputs), main_request=True)
        if content:
            user = {"role": "user", "content": content}
            messages.append(_expand_legacy_custom_type_markers_in_chat_message(user))
        return messages
