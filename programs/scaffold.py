"""Write a new program (and its test) from a DSPy signature: ``manage.py startprogram``.

Everything is validated before a file is written: the name (a class name that is a free route),
the signature (parsed by DSPy, at least one input and one output, types this generator can write
back as source), and the generated module itself (it is compiled, executed, instantiated and its
request schema built, exactly as discovery and the server would). Existing files are never
overwritten.
"""

import json
import keyword
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dspy

from programs.discovery import RESERVED_NAMES, _declared_classes, is_native_async
from programs.schemas import build_input_schema, build_output_schema, entry_point

# -m choices: the DSPy module the program wraps (aliases accepted case-insensitively).
MODULES = {
    "predict": "Predict",
    "chainofthought": "ChainOfThought",
    "cot": "ChainOfThought",
    "react": "ReAct",
}
_ATTRIBUTE = {"Predict": "predict", "ChainOfThought": "think", "ReAct": "agent"}
_TYPING_NAMES = ("Any", "Literal")


class ScaffoldError(Exception):
    """A reason not to write anything, phrased for the command line."""


@dataclass(frozen=True)
class Field:
    name: str
    annotation: Any
    source: str  # the annotation as Python source


@dataclass(frozen=True)
class Plan:
    class_name: str
    module_name: str  # file stem (snake_case)
    signature: str  # as the user wrote it, normalised
    dspy_module: str
    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    instructions: str


@dataclass(frozen=True)
class Written:
    module_file: Path
    test_file: Path | None


def class_name_for(name: str) -> str:
    """``summarize_text``, ``summarize-text`` or ``SummarizeText`` -> ``SummarizeText``."""
    parts = [part for part in re.split(r"[^0-9A-Za-z]+", name.strip()) if part]
    if not parts:
        raise ScaffoldError(f"{name!r} is not a usable program name (use letters, digits and _)")
    if len(parts) == 1 and parts[0][:1].isupper():
        return parts[0]
    return "".join(part[:1].upper() + part[1:] for part in parts)


def module_name_for(class_name: str) -> str:
    """``SummarizeText`` -> ``summarize_text``; ``QAPair`` -> ``qa_pair``."""
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", class_name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


def plan(name: str, signature: str, module: str = "Predict") -> Plan:
    class_name = class_name_for(name)
    if not class_name.isidentifier() or keyword.iskeyword(class_name) or class_name[0].isdigit():
        raise ScaffoldError(f"{class_name!r} is not a valid Python class name")
    if class_name.lower() in RESERVED_NAMES:
        raise ScaffoldError(
            f"{class_name} collides with the built-in route /{class_name.lower()}; pick another"
        )
    dspy_module = MODULES.get(module.replace("_", "").replace("-", "").lower())
    if dspy_module is None:
        choices = ", ".join(sorted({*MODULES.values(), "CoT"}))
        raise ScaffoldError(f"unknown module {module!r}; choose one of {choices}")
    parsed = _parse_signature(signature)
    inputs = tuple(_field(n, f.annotation) for n, f in parsed.input_fields.items())
    outputs = tuple(_field(n, f.annotation) for n, f in parsed.output_fields.items())
    return Plan(
        class_name=class_name,
        module_name=module_name_for(class_name),
        signature=" ".join(signature.split()),
        dspy_module=dspy_module,
        inputs=inputs,
        outputs=outputs,
        instructions=parsed.instructions,
    )


def _parse_signature(signature: str) -> type[dspy.Signature]:
    try:
        parsed = dspy.Signature(signature)
    except Exception as exc:  # noqa: BLE001 - DSPy raises several types for a bad signature
        raise ScaffoldError(f"invalid signature {signature!r}: {exc}") from None
    if not parsed.input_fields or not parsed.output_fields:
        raise ScaffoldError(f"invalid signature {signature!r}: it needs at least one input and one output")
    for name in (*parsed.input_fields, *parsed.output_fields):
        if keyword.iskeyword(name) or name.startswith("_"):
            raise ScaffoldError(f"invalid signature {signature!r}: {name!r} cannot be a field name")
    return parsed


def _field(name: str, annotation: Any) -> Field:
    return Field(name, annotation, type_source(annotation))


def type_source(annotation: Any) -> str:
    """Python source for a type DSPy parsed from a signature string; ScaffoldError if it cannot."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return f"Literal[{', '.join(_literal(arg) for arg in args)}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_source(arg) for arg in args)
    if origin is not None:
        return f"{type_source(origin)}[{', '.join(type_source(arg) for arg in args)}]"
    if isinstance(annotation, type):
        if annotation.__module__ == "builtins":
            return annotation.__name__
        if getattr(dspy, annotation.__name__, None) is annotation:
            return f"dspy.{annotation.__name__}"
    raise ScaffoldError(f"type {annotation!r} is not supported by the scaffold; write it by hand afterwards")


def sample_value(annotation: Any, name: str) -> Any:
    """A value of the type, for the generated test's fake LM answer."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        return sample_value(next(arg for arg in args if arg is not type(None)), name)
    base = origin or annotation
    samples: dict[Any, Any] = {str: f"stub {name}", int: 1, float: 0.5, bool: True, list: [], dict: {}}
    return samples.get(base, f"stub {name}")


# -- rendering (the output passes `ruff check` and `ruff format --check` with this repo's settings) --

LINE = 110


def render_module(p: Plan) -> str:
    attribute = _ATTRIBUTE[p.dspy_module]
    params = [f"{f.name}: {f.source}" for f in p.inputs]
    call = [f"{f.name}={f.name}" for f in p.inputs]
    used = " ".join(f.source for f in (*p.inputs, *p.outputs))
    typing_imports = [name for name in _TYPING_NAMES if re.search(rf"\b{name}\b", used)]
    imports = (
        f"from typing import {', '.join(typing_imports)}\n\n" if typing_imports else ""
    ) + "import dspy\n"
    fields = "\n".join(
        [f"    {f.name}: {f.source} = dspy.InputField()" for f in p.inputs]
        + [f"    {f.name}: {f.source} = dspy.OutputField()" for f in p.outputs]
    )
    tool = ""
    constructor = f"dspy.{p.dspy_module}({p.class_name}Signature)"
    if p.dspy_module == "ReAct":
        constructor = f"dspy.ReAct({p.class_name}Signature, tools=[lookup], max_iters=5)"
        tool = (
            "\n\ndef lookup(query: str) -> str:\n"
            '    """A placeholder tool: replace it (the LM sees its name, docstring and type hints)."""\n'
            '    return f"Nothing is known about {query!r} yet."\n'
        )
    module_doc = _docstring(
        f"{p.class_name}: a dspy.{p.dspy_module} program.\n\n"
        f"Signature: `{p.signature}`\n\n"
        f"Created by `manage.py startprogram`. The class name is the route: POST /{p.class_name}, "
        f"POST /{p.class_name}/batch and POST /{p.class_name}/stream. The type hints of `forward` are "
        "the request schema.",
        "",
    )
    forward = _wrapped("    def forward(", ["self", *params], ") -> dspy.Prediction:", "    ")
    aforward = _wrapped("    async def aforward(", ["self", *params], ") -> dspy.Prediction:", "    ")
    sync_call = _wrapped(f"        return self.{attribute}(", call, ")", "        ")
    async_call = _wrapped(f"        return await self.{attribute}.acall(", call, ")", "        ")
    signature_doc = _docstring(p.instructions, "    ")
    class_doc = _docstring(f"{p.class_name}: {_one_line(p)}.", "    ")
    return f"""{module_doc}

{imports}

class {p.class_name}Signature(dspy.Signature):
{signature_doc}

{fields}
{tool}

class {p.class_name}(dspy.Module):
{class_doc}

    def __init__(self) -> None:
        super().__init__()
        self.{attribute} = {constructor}

{forward}
{sync_call}

{aforward}
        \"\"\"The native async path: the server awaits this on its event loop (no worker thread).

        One predictor: awaiting its ``acall`` is all it takes. More is needed as soon as the
        program does more than one call: mirror ``forward`` step by step here, awaiting ``acall``
        on every predictor (a plain ``self.step(...)`` call would block the event loop and every
        request on it), keep the Python logic between the calls as it is, run independent steps
        together with ``asyncio.gather``, and move blocking work (file I/O, sync HTTP clients)
        to ``asyncio.to_thread``. Without an ``aforward`` the server runs ``forward`` in its
        worker thread pool instead.
        \"\"\"
{async_call}
"""


def _one_line(p: Plan) -> str:
    return f"{', '.join(f.name for f in p.inputs)} -> {', '.join(f.name for f in p.outputs)}"


def _docstring(text: str, indent: str) -> str:
    """A docstring wrapped under the line limit; one line when it fits."""
    one = f'{indent}"""{text}"""'
    if "\n" not in text and len(one) <= LINE:
        return one
    width = LINE - len(indent) - 10
    paragraphs = [textwrap.fill(par, width) for par in text.split("\n\n")]
    body = "\n\n".join(paragraphs)
    lines = [f"{indent}{line}" if line else "" for line in body.splitlines()]
    lines[0] = f'{indent}"""{lines[0].lstrip()}'
    return "\n".join([*lines, f'{indent}"""'])


def _wrapped(head: str, items: list[str], tail: str, indent: str) -> str:
    """``head + items + tail`` on one line, or one item per line with a trailing comma (ruff's style)."""
    line = f"{head}{', '.join(items)}{tail}"
    if len(line) <= LINE:
        return line
    body = "".join(f"{indent}    {item},\n" for item in items)
    return f"{head}\n{body}{indent}{tail}"


def _literal(value: Any, indent: str = "") -> str:
    """Python source for a JSON-like value, formatted as ``ruff format`` leaves it."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "    "
        items = "".join(f"{inner}{_literal(key)}: {_literal(item, inner)},\n" for key, item in value.items())
        return "{\n" + items + indent + "}"
    raise TypeError(f"no literal for {value!r}")


def _import(module: str, name: str) -> str:
    line = f"from {module} import {name}"
    return line if len(line) <= LINE else f"from {module} import (\n    {name},\n)"


def render_test(p: Plan, import_path: str) -> str:
    answers = {f.name: sample_value(f.annotation, f.name) for f in p.outputs}
    first = p.outputs[0].name
    inputs = {f.name: sample_value(f.annotation, f.name) for f in p.inputs}
    replies: list[dict[str, Any]] = []
    if p.dspy_module == "ReAct":
        replies.append(
            {"next_thought": "I can answer now.", "next_tool_name": "finish", "next_tool_args": {}}
        )
    if p.dspy_module in ("ChainOfThought", "ReAct"):
        answers = {"reasoning": "stub reasoning", **answers}
    replies.append(answers)
    replies_source = "[\n" + "".join(f"    {_literal(reply, '    ')},\n" for reply in replies) + "]"
    doc = _docstring(
        f"Tests for {p.class_name} (created by `manage.py startprogram`): a fake LM answers, no network."
        "\n\nReplace the canned answers with real cases, or give `dspy.context` a real LM.",
        "",
    )
    return f"""{doc}

import asyncio

import dspy
from dspy.utils.dummies import DummyLM

{_import(import_path, p.class_name)}

INPUTS = {_literal(inputs)}
# What the fake LM answers, call after call.
REPLIES = {replies_source}


def run_sync() -> dspy.Prediction:
    with dspy.context(lm=DummyLM(REPLIES)):
        return {p.class_name}()(**INPUTS)


def run_async() -> dspy.Prediction:
    async def call() -> dspy.Prediction:
        return await {p.class_name}().acall(**INPUTS)

    with dspy.context(lm=DummyLM(REPLIES)):
        return asyncio.run(call())


def test_forward() -> None:
    assert run_sync().{first} == REPLIES[-1][{json.dumps(first)}]


def test_aforward() -> None:
    assert run_async().{first} == REPLIES[-1][{json.dumps(first)}]
"""


# -- checks and writing --------------------------------------------------------------------------


def check_generated(p: Plan, source: str) -> None:
    """Import the generated module the way discovery will, and build its schemas; ScaffoldError if not."""
    namespace: dict[str, Any] = {"__name__": f"scaffold_check_{p.module_name}"}
    try:
        exec(compile(source, f"{p.module_name}.py", "exec"), namespace)  # noqa: S102 - our own template
        cls = namespace[p.class_name]
        instance = cls()
        is_async = is_native_async(cls)
        method = entry_point(cls, is_async)
        build_input_schema(p.class_name, method)
        build_output_schema(p.class_name, method, instance)
    except Exception as exc:  # noqa: BLE001 - any failure means the file would not serve
        raise ScaffoldError(f"the generated program does not load: {type(exc).__name__}: {exc}") from None
    if not is_async:
        raise ScaffoldError("the generated program is not native async (internal error)")


def existing_program(directory: Path, class_name: str) -> Path | None:
    """A module file in ``directory`` that already defines ``class_name`` (routes must be unique)."""
    for path in sorted(directory.glob("*.py")):
        if class_name in _declared_classes(path):
            return path
    return None


def write(p: Plan, modules_dir: Path, import_package: str, tests_dir: Path | None) -> Written:
    module_file = modules_dir / f"{p.module_name}.py"
    test_file = tests_dir / f"test_{p.module_name}.py" if tests_dir is not None else None
    for path in (module_file, test_file):
        if path is not None and path.exists():
            raise ScaffoldError(f"{path} already exists; not overwriting it")
    if not modules_dir.is_dir():
        raise ScaffoldError(f"{modules_dir} is not a directory")
    clash = existing_program(modules_dir, p.class_name)
    if clash is not None:
        raise ScaffoldError(
            f"{clash} already defines {p.class_name}; program names are routes and must be unique"
        )
    source = render_module(p)
    check_generated(p, source)
    test_source = render_test(p, f"{import_package}.{p.module_name}") if test_file is not None else ""
    module_file.write_text(source)
    if test_file is not None:
        test_file.parent.mkdir(parents=True, exist_ok=True)
        init = test_file.parent / "__init__.py"
        if (test_file.parent.parent / "__init__.py").exists() and not init.exists():
            init.write_text("")  # the tests directory is a package: keep test module names unique
        test_file.write_text(test_source)
    return Written(module_file, test_file)
