"""``manage.py evaluate <Program> <data.jsonl> --metric exact_match --threads N``: score a served
program on a data set, in parallel, without touching the instance the server would serve.

Each line of the file is one example: the program's input fields plus the expected outputs
(``{"question": "...", "answer": "..."}``). Inputs are validated and converted as the HTTP route
does. The program runs with its served LM, adapter and DSPy settings (``dspy.context``, as in a
request), under ``dspy.Evaluate``: its threads each call their own fork of the program (the LMs
are shared, never copied), so a stateful module (``BestOfN``'s ``fail_count``, a ``self.last_...``)
scores as it would alone. Afterwards the served instance's state is compared with its state before:
"unchanged" is the expected answer; anything else exits 1.

``--shared`` calls the served instance itself from every thread instead: a program that scores
differently that way is not safe to share and needs ``instance_mode: pool`` or ``per_request``.

Metrics: ``exact_match`` (every expected field equals the output's, whitespace trimmed),
``contains`` (every expected value appears in the output's, case-insensitive), or the dotted path
of a function ``metric(example, prediction, trace=None) -> float | bool``.
"""

import json
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string
from pydantic import BaseModel, ValidationError

from programs.config import ConfigError
from programs.discovery import DiscoveryError
from programs.execution import call_settings
from programs.instances import per_thread, plain_state
from programs.program import Program
from programs.runtime import get_runtime
from programs.usage import RequestUsage

Metric = Callable[..., Any]


def _outputs(prediction: Any) -> dict[str, Any]:
    if isinstance(prediction, dspy.Prediction):
        return dict(prediction.items())
    if isinstance(prediction, BaseModel):
        return prediction.model_dump()
    return prediction if isinstance(prediction, dict) else {"output": prediction}


def exact_match(example: dspy.Example, prediction: Any, trace: Any = None) -> bool:
    outputs = _outputs(prediction)
    return all(
        str(outputs.get(key, "")).strip() == str(value).strip() for key, value in example.labels().items()
    )


def contains(example: dspy.Example, prediction: Any, trace: Any = None) -> bool:
    outputs = _outputs(prediction)
    return all(
        str(value).strip().casefold() in str(outputs.get(key, "")).casefold()
        for key, value in example.labels().items()
    )


METRICS: dict[str, Metric] = {"exact_match": exact_match, "contains": contains}


class Command(BaseCommand):
    # No system checks: they import the URLs, which load the runtime (and exit on a bad config).
    requires_system_checks: list[str] = []
    help = "Score a program on JSONL data in parallel (a fork per thread); the served instance is untouched."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("program", help="The program (class name, as in POST /<Program>)")
        parser.add_argument("data", type=Path, help="JSONL: one object per line, inputs and expected outputs")
        parser.add_argument(
            "--metric", default="exact_match", help="exact_match, contains, or a dotted path to a function"
        )
        parser.add_argument("--threads", type=int, default=4, help="Examples evaluated at once (default 4)")
        parser.add_argument(
            "--shared",
            action="store_true",
            help="Call the served instance itself from every thread (is the program safe to share?)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            runtime = get_runtime()
        except (ConfigError, DiscoveryError) as exc:
            raise CommandError(str(exc)) from None
        program = runtime.programs.get(options["program"])
        if program is None:
            known = ", ".join(sorted(runtime.programs)) or "none"
            raise CommandError(f"no program {options['program']!r} (programs: {known})")
        if options["threads"] < 1:
            raise CommandError("--threads must be at least 1")
        metric = _metric(options["metric"])
        devset = _load(options["data"], program)

        served = program.instance
        before = plain_state(served)
        call = served if options["shared"] else per_thread(served, shared=runtime.lms.values())

        def run(**inputs: Any) -> Any:  # the route's input validation and conversion
            try:
                payload = program.inputs.model.model_validate(inputs)
            except ValidationError as exc:
                raise ValueError(f"invalid inputs: {exc.errors()[0]['msg']}") from None
            return call(**program.inputs.to_kwargs(payload))

        usage = RequestUsage()
        evaluate = dspy.Evaluate(
            devset=devset,
            metric=metric,
            num_threads=options["threads"],
            display_progress=False,
            max_errors=len(devset),
        )
        with dspy.context(**call_settings(program, usage)):
            result = evaluate(run)  # type: ignore[arg-type]
        after = plain_state(served)

        how = "the served instance itself" if options["shared"] else "one fork of the program per thread"
        correct = sum(score for *_, score in result.results)
        tokens = usage.snapshot()
        self.stdout.write(
            f"Evaluated {program.name} on {len(devset)} examples with {options['threads']} threads ({how}), "
            f"metric {options['metric']}"
        )
        self.stdout.write(f"Score: {result.score}% ({correct:g} / {len(devset)})")
        self.stdout.write(f"Tokens: {tokens.prompt_tokens} prompt, {tokens.completion_tokens} completion")
        changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
        if not changed:
            self.stdout.write("Served instance: unchanged")
            return
        self.stdout.write(f"Served instance: changed ({', '.join(changed)})")
        if not options["shared"]:
            raise CommandError("the evaluation changed the served instance", returncode=1)


def _metric(name: str) -> Metric:
    if name in METRICS:
        return METRICS[name]
    try:
        metric = import_string(name)
    except ImportError as exc:
        raise CommandError(
            f"--metric {name}: not exact_match, contains or an importable function ({exc})"
        ) from None
    if not callable(metric):
        raise CommandError(f"--metric {name}: not callable")
    return metric


def _load(path: Path, program: Program) -> list[dspy.Example]:
    """One example per non-empty line: the program's input fields are inputs, the rest labels."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}") from None
    input_names = set(program.inputs.model.model_fields)
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise CommandError(f"{path}:{number}: expected an object, got {type(row).__name__}")
        inputs = [key for key in row if key in input_names or program.inputs.free_form]
        if len(inputs) == len(row):
            raise CommandError(
                f"{path}:{number}: no expected output (every key is an input of {program.name})"
            )
        examples.append(dspy.Example(**row).with_inputs(*inputs))
    if not examples:
        raise CommandError(f"{path}: no examples")
    return examples
