"""Request and response schemas built from a program's ``forward`` type hints.

Inputs become a pydantic model: a parameter with a Python default is optional with that default,
``Optional[...]`` is optional, and ``Literal``, lists, dicts, pydantic models, TypedDicts and
dataclasses validate as pydantic validates them; ``dspy.Image`` and ``dspy.Audio`` take a URL or
``data:`` URI string and arrive as DSPy objects (``programs/dspy_types.py``). A
``forward(**kwargs)`` accepts any object.

Outputs: an explicit return annotation is enforced; a ``Prediction`` (or no annotation) is
described from the last predictor's signature for the docs but passed through as it comes, since a
multi-step program may return fields its last predictor does not declare.
"""

import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

import dspy
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from programs.dspy_types import request_annotation


@dataclass(frozen=True)
class InputSchema:
    model: type[BaseModel]
    free_form: bool
    # Parameters whose Python default applies when the client leaves them out.
    python_defaults: frozenset[str]

    def to_kwargs(self, payload: BaseModel) -> dict[str, Any]:
        """Keyword arguments for the program, keeping nested models as model instances."""
        if self.free_form:
            return dict(payload.model_extra or {})
        return {
            name: getattr(payload, name)
            for name in type(payload).model_fields
            if name in payload.model_fields_set or name not in self.python_defaults
        }


@dataclass(frozen=True)
class OutputSchema:
    """``model`` documents the response; ``adapter`` enforces it when the program declared a type."""

    model: Any
    adapter: TypeAdapter | None
    # Name of the single output when the program returns a bare value.
    scalar_field: str | None


def entry_point(cls: type, is_async: bool) -> Any:
    """The method whose signature describes the program's inputs."""
    if "forward" in _names_in_mro(cls):
        return cls.forward
    return cls.aforward if is_async else None


def _names_in_mro(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ if klass is not object for name in vars(klass)}


def build_input_schema(name: str, method: Any) -> InputSchema:
    if method is None:
        return _free_form(name)
    hints = _type_hints(method)
    fields: dict[str, Any] = {}
    python_defaults = set()
    for param in list(inspect.signature(method).parameters.values())[1:]:
        if param.kind is inspect.Parameter.VAR_KEYWORD and not fields:
            return _free_form(name)
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = request_annotation(hints.get(param.name, Any))
        if param.default is not inspect.Parameter.empty:
            fields[param.name] = (annotation, param.default)
            python_defaults.add(param.name)
        elif _is_optional(annotation):
            fields[param.name] = (annotation, None)
        else:
            fields[param.name] = (annotation, ...)
    model = create_model(
        f"{name}Input", __config__=ConfigDict(extra="forbid"), __validators__=UNICODE_CHECK, **fields
    )
    return InputSchema(model, False, frozenset(python_defaults))


def _free_form(name: str) -> InputSchema:
    model = create_model(f"{name}Input", __config__=ConfigDict(extra="allow"), __validators__=UNICODE_CHECK)
    return InputSchema(model, True, frozenset())


_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_lone_surrogates(cls: type[BaseModel], data: Any, handler: Any) -> Any:
    """Inputs are checked for text no provider can receive before anything else (422 naming the field).

    JSON's ``"\\ud800"`` escape parses to a lone surrogate, which cannot be encoded as UTF-8: the
    LM client would fail on it deep in the call (a 500). Every door validates its inputs with this
    model (plain route, gateways, batch items, stream, MCP tools, cron items), so one check covers
    them all. Costs a walk over the input's strings (``str.isascii`` is O(1); only non-ASCII text
    is searched).
    """
    found = _lone_surrogate(data)
    if found is not None:
        loc, text = found
        code = f"U+{ord(_SURROGATE.search(text).group()):04X}"  # type: ignore[union-attr]
        error = PydanticCustomError(
            "string_unicode",
            "Text should be valid Unicode: it holds a lone surrogate ({code}), which no model can receive",
            {"code": code},
        )
        details = [InitErrorDetails(type=error, loc=loc, input=text)]
        raise ValidationError.from_exception_data(cls.__name__, details)
    return handler(data)


def _lone_surrogate(data: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The location and text of the first string (or key) in ``data`` with a lone surrogate."""
    pending: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while pending:  # iterative: the input may nest as deep as its JSON parser allowed
        loc, value = pending.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return loc, value
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    return (*loc, key), key
                pending.append(((*loc, key), item))
        elif isinstance(value, list | tuple):
            pending.extend(((*loc, index), item) for index, item in enumerate(value))
    return None


UNICODE_CHECK = {"_unicode": model_validator(mode="wrap")(_reject_lone_surrogates)}  # type: ignore[arg-type]


def build_output_schema(name: str, method: Any, instance: dspy.Module) -> OutputSchema:
    returned = _type_hints(method).get("return") if method is not None else None
    if returned is None or returned is Any or _is_prediction(returned):
        return OutputSchema(_signature_outputs(name, instance), None, None)
    if isinstance(returned, type) and issubclass(returned, BaseModel):
        return OutputSchema(returned, TypeAdapter(returned), None)
    if _is_record_type(returned):
        return OutputSchema(returned, TypeAdapter(returned), None)
    if returned is dict or typing.get_origin(returned) is dict:
        return OutputSchema(returned, TypeAdapter(returned), None)
    field_name = _single_output_name(instance) or "output"
    model = create_model(f"{name}Output", **{field_name: (returned, ...)})
    return OutputSchema(model, TypeAdapter(model), field_name)


def _signature_outputs(name: str, instance: dspy.Module) -> type[BaseModel]:
    """Describe a Prediction by the last predictor's output fields (extra fields allowed)."""
    predictors = instance.predictors()
    fields: dict[str, Any] = {}
    if predictors:
        for field_name, info in predictors[-1].signature.output_fields.items():
            fields[field_name] = (info.annotation | None, None)
    return create_model(f"{name}Output", __config__=ConfigDict(extra="allow"), **fields)


def _single_output_name(instance: dspy.Module) -> str | None:
    predictors = instance.predictors()
    if predictors and len(predictors[-1].signature.output_fields) == 1:
        return next(iter(predictors[-1].signature.output_fields))
    return None


def _type_hints(method: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(method)
    except Exception:  # noqa: BLE001 - unresolvable hints fall back to raw annotations
        return dict(getattr(method, "__annotations__", {}))


def _is_optional(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _is_prediction(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dspy.Prediction)


def _is_record_type(annotation: Any) -> bool:
    """TypedDicts and dataclasses answer as objects of their own fields."""
    if typing.is_typeddict(annotation):
        return True
    return isinstance(annotation, type) and hasattr(annotation, "__dataclass_fields__")


def with_body_model(view: Any, model: Any, name: str) -> Any:
    """Give a ``view(request, payload)`` the body model django-ninja reads from its signature."""
    parameters = list(inspect.signature(view).parameters.values())
    parameters[1] = parameters[1].replace(annotation=model)
    view.__signature__ = inspect.Signature(parameters)
    view.__name__ = name
    return view
