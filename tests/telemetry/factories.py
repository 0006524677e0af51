"""Records and rows for the database tests."""

import time
from typing import Any

from programs.usage import UsageSnapshot
from telemetry.records import Body, InferenceRecord


def make_record(
    program: str = "P",
    *,
    status: int = 200,
    prompt: int = 10,
    completion: int = 5,
    cost: float | None = 0.001,
    duration_ms: float | None = 120.0,
    finished_at: float | None = None,
    request_id: str = "r",
    model: str = "openai/m",
    inputs: bytes | None = b'{"question": "q"}',
    outputs: bytes | None = b'{"answer": "a"}',
) -> InferenceRecord:
    calls: tuple[dict[str, Any], ...] = ()
    if prompt or completion:
        calls = ({"model": model, "prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion, "cost_usd": cost, "duration_ms": 1.0,
                  "error": None, "cache_hit": False},)  # fmt: skip
    return InferenceRecord(
        program=program,
        model_alias="alias",
        model=model,
        request_id=request_id,
        status_code=status,
        finished_at=time.time() if finished_at is None else finished_at,
        duration_ms=duration_ms,
        usage=UsageSnapshot(prompt, completion, cost if calls else 0.0, calls),
        error_type="" if status < 400 else "Boom",
        error_detail="" if status < 400 else "it broke",
        inputs=None if inputs is None else Body(inputs, len(inputs)),
        outputs=None if outputs is None or status >= 400 else Body(outputs, len(outputs)),
        worker="test:1",
    )


def seed_week(now: float | None = None, seed: int = 7) -> int:
    """A week of plausible history for the dashboard (run in the server's database by the browser test).

    Each hour has a daily rhythm of calls for three programs, a few errors, a latency that drifts,
    and two models; the last hour has a point per minute. Returns the number of records written.
    """
    import math
    import random

    from telemetry.storage import inference_logs_write

    rng = random.Random(seed)
    now = time.time() if now is None else now
    records: list[InferenceRecord] = []
    programs = (("EchoAsync", "openai/gpt-4o-mini", 1.0), ("EchoSync", "openai/mock-model", 0.6),
                ("Summarize", "openai/mock-model", 0.3))  # fmt: skip
    for hours_ago in range(7 * 24):
        hour = now - 3600 * hours_ago
        rhythm = 1 + math.sin(hour / 86400 * 2 * math.pi)
        for program, model, weight in programs:
            for _ in range(int(3 + 12 * rhythm * weight)):
                # The last hour spread over its minutes; older hours only feed the hourly buckets.
                at = now - rng.uniform(60, 3600) if hours_ago == 0 else hour
                failed = rng.random() < 0.04 + 0.03 * (program == "EchoSync")
                latency = rng.lognormvariate(math.log(180 + 120 * rhythm * weight), 0.35)
                records.append(make_record(program, status=502 if failed else 200, model=model,
                                           prompt=rng.randint(80, 400), completion=rng.randint(10, 120),
                                           cost=0.0002 if "gpt" in model else None, duration_ms=latency,
                                           finished_at=at, request_id=f"seed-{len(records)}"))  # fmt: skip
    for start in range(0, len(records), 500):
        inference_logs_write(records[start : start + 500])
    return len(records)
