"""Whether a program's calls are captured: their inputs and outputs in the log, their LM calls'
messages and completions in the call trace (``RequestFinished.lm_traces``).

One answer for both, read per call (a dict lookup and a setting): ``programs.<Name>.capture_io``
in dspy.config.yaml, else ``TELEMETRY_CAPTURE_IO``. The core decides it, so a program whose I/O
is not captured never has its prompts copied either.
"""

from django.conf import settings

from programs.runtime import get_runtime


def capture_traces(program_name: str) -> bool:
    """Keep the call's LM messages and completions: its I/O is captured and ``CAPTURE_TRACES`` is on
    (off: inputs and outputs are still logged, prompts are not; docs/PERFORMANCE.md has the cost)."""
    return settings.CAPTURE_TRACES and capture_io(program_name)


def capture_io(program_name: str) -> bool:
    """``programs.<Name>.capture_io`` in dspy.config.yaml, else ``TELEMETRY_CAPTURE_IO``."""
    options = get_runtime().config.config.programs.get(program_name)
    explicit = getattr(options, "capture_io", None)
    return settings.TELEMETRY_CAPTURE_IO if explicit is None else explicit
