"""One cron run in-process, through the real call path: hooks, failures, batch bounds, stops.

The program computes its answer without an LM, so every outcome is decided by the inputs. The
runtime is built from a spec as the server builds it, and is the process's runtime for the test.
"""

import asyncio
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import dspy
import pytest
from pydantic import ValidationError

from programs import runtime as runtime_module
from programs.config import load_config
from programs.discovery import Discovery, ProgramSpec
from programs.execution import CallFailed
from programs.gateways import CronGateway
from programs.runtime import build_runtime
from scheduling.jobs import CronJob, JobError, cron_jobs
from scheduling.runner import RunReport, RunStopped, run_job
from telemetry import subscribers as telemetry_subscribers
from telemetry.records import InferenceRecord


class Shout(dspy.Module):
    """Upper-cases its text; "boom" is a program error. Counts the calls in flight at once."""

    in_flight = 0
    peak = 0

    async def aforward(self, text: str) -> dspy.Prediction:
        Shout.in_flight += 1
        Shout.peak = max(Shout.peak, Shout.in_flight)
        try:
            for _ in range(5):  # let the other lanes run: concurrent calls overlap here
                await asyncio.sleep(0)
            if text == "boom":
                raise ValueError("boom")
            return dspy.Prediction(loud=text.upper())
        finally:
            Shout.in_flight -= 1


class Recording(CronGateway):
    """Hands out ``items`` and records every hook call."""

    schedule = "* * * * *"
    items: list[Any] = []

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    async def get_pipeline_inputs(self) -> list[Any]:
        return list(self.items)

    async def on_complete(self, inputs: dict[str, Any], output: dict[str, Any]) -> None:
        if inputs.get("_meta", {}).get("reject"):
            raise RuntimeError("on_complete rejected it")
        self.calls.append(("complete", inputs, output))

    async def on_error(self, inputs: dict[str, Any], error: Exception) -> None:
        self.calls.append(("error", inputs, error))


def build_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: type[CronGateway]) -> CronJob:
    config = tmp_path / "dspy.config.yaml"
    model = {"model": "openai/unused", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}
    config.write_text(
        json.dumps({"models": {"registry": {"m": model}}, "server": {"sync_worker_threads": 2}})
    )
    spec = ProgramSpec("Shout", Shout, Path(__file__), is_async=True, gateways=(gateway,))
    runtime = build_runtime(load_config(config), Discovery(specs=[spec]))
    monkeypatch.setattr(runtime_module, "_runtime", runtime)  # the process's runtime: call_program's
    monkeypatch.setattr(Shout, "peak", 0)
    (job,) = cron_jobs(runtime.programs.values(), UTC)
    return job


def run(job: CronJob, stop_after: int | None = None) -> RunReport:
    report = RunReport()
    asyncio.run(run_job(job, 7, report, lambda: stop_after is not None and report.ok >= stop_after))
    return report


def test_items_run_one_by_one_and_every_item_reaches_one_hook_with_its_meta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OneByOne(Recording):
        items = [
            {"text": "a", "_meta": {"id": 1}},
            {"text": "boom", "_meta": {"id": 2}},  # the program raises: 500, the next items still run
            {"text": "b", "_meta": {"id": 3, "reject": True}},  # on_complete raises: failed, on_error
            {"wrong": "field", "_meta": {"id": 4}},  # not forward's inputs: failed, nothing called
            "not a dict",
            {"text": "c", "_private": "kept for the hooks"},
        ]

    job = build_job(tmp_path, monkeypatch, OneByOne)
    assert (job.id, job.concurrency, job.max_errors) == ("Shout.OneByOne", 1, None)
    report = run(job)
    assert (report.items, report.ok, report.failed, report.status) == (6, 2, 4, "partial")
    assert Shout.peak == 1
    calls = job.gateway.calls  # type: ignore[attr-defined]
    assert [(hook, inputs) for hook, inputs, _ in calls] == [(hook, item) for hook, item in zip(
        ["complete", "error", "error", "error", "error", "complete"], OneByOne.items, strict=True
    )]  # fmt: skip
    outputs = {inputs["text"]: out for hook, inputs, out in calls if hook == "complete"}
    assert outputs == {"a": {"loud": "A"}, "c": {"loud": "C"}}
    errors = [out for hook, _, out in calls if hook == "error"]
    assert isinstance(errors[0], CallFailed) and (errors[0].status, errors[0].error_type) == (
        500,
        "ValueError",
    )
    assert isinstance(errors[1], RuntimeError)
    assert isinstance(errors[2], ValidationError) and isinstance(errors[3], TypeError)
    assert report.error == (
        "item 1: 500 ValueError: Shout failed: ValueError: boom; "
        "item 2: RuntimeError: on_complete rejected it; "
        "item 3: invalid inputs: text: Field required; wrong: Extra inputs are not permitted; "
        "1 more item(s) failed"
    )


def test_batch_mode_keeps_num_threads_items_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Batch(Recording):
        use_batch = True
        num_threads = 3
        items = [{"text": f"t{i}"} for i in range(10)]

    job = build_job(tmp_path, monkeypatch, Batch)
    report = run(job)
    assert (report.items, report.ok, report.failed, report.status) == (10, 10, 0, "ok")
    assert Shout.peak == 3
    assert sorted(out["loud"] for _, _, out in job.gateway.calls) == sorted(f"T{i}" for i in range(10))  # type: ignore[attr-defined]


def test_max_errors_stops_new_items_and_the_unstarted_ones_get_run_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Fragile(Recording):
        use_batch = True
        num_threads = 2
        max_errors = 2
        items = [{"text": "boom"}] * 3 + [{"text": "fine"}] * 5

    job = build_job(tmp_path, monkeypatch, Fragile)
    report = run(job)
    # Items already in flight when the second failure lands still finish: at most num_threads - 1 more.
    assert 2 <= report.failed <= 3 and report.status in {"failed", "partial"}
    stopped = [error for hook, _, error in job.gateway.calls if isinstance(error, RunStopped)]  # type: ignore[attr-defined]
    assert report.ok + report.failed + len(stopped) == 8 and len(stopped) >= 5
    assert "max_errors=2" in report.error and f"{len(stopped)} item(s) not run" in report.error


def test_defaults_of_batch_mode_are_dspys_and_bad_values_stop_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Defaults(Recording):
        use_batch = True

    job = build_job(tmp_path, monkeypatch, Defaults)
    assert (job.concurrency, job.max_errors) == (dspy.settings.num_threads, dspy.settings.max_errors)

    class Zero(Recording):
        use_batch = True
        num_threads = 0

    with pytest.raises(JobError, match=r"test_cron_runner.py: cron job Shout.Zero: num_threads must be"):
        build_job(tmp_path, monkeypatch, Zero)


def test_a_stopping_server_starts_no_new_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Long(Recording):
        items = [{"text": f"t{i}"} for i in range(5)]

    job = build_job(tmp_path, monkeypatch, Long)
    report = run(job, stop_after=2)
    assert (report.items, report.ok, report.failed, report.status) == (5, 2, 0, "interrupted")
    assert [type(error).__name__ for hook, _, error in job.gateway.calls if hook == "error"] == [
        "RunStopped"
    ] * 3  # type: ignore[attr-defined]
    assert report.error == "the server is stopping; 3 item(s) not run"


def test_get_pipeline_inputs_raising_fails_the_run_without_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreachable(Recording):
        async def get_pipeline_inputs(self) -> list[Any]:
            raise ConnectionError("queue down")

    job = build_job(tmp_path, monkeypatch, Unreachable)
    report = run(job)
    assert (report.items, report.status, report.error) == (
        0,
        "failed",
        "get_pipeline_inputs raised ConnectionError: queue down",
    )
    assert job.gateway.calls == []  # type: ignore[attr-defined]


def test_an_item_refused_for_its_inputs_gets_its_log_record_like_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Mixed(Recording):
        items = [{"text": "a"}, {"wrong": "field", "_meta": {"id": 2}}]

    job = build_job(tmp_path, monkeypatch, Mixed)
    records: list[InferenceRecord] = []  # what telemetry's request_finished subscriber would write
    monkeypatch.setattr(telemetry_subscribers, "inference_log_enqueue", records.append)
    report = run(job)
    assert (report.ok, report.failed) == (1, 1)
    by_id = {record.request_id: record for record in records}
    assert set(by_id) == {"cron-7.0", "cron-7.1"}
    refused = by_id["cron-7.1"]
    assert (refused.status_code, refused.error_type, refused.source, refused.entry) == (
        422, "ValidationError", "cron", "Shout.Mixed",
    )  # fmt: skip
    assert refused.duration_ms is None  # refused before the program ran: not timed
    assert [(error["loc"], error["type"]) for error in refused.error_detail] == [
        (["text"], "missing"), (["wrong"], "extra_forbidden"),
    ]  # fmt: skip
    assert refused.inputs is not None and json.loads(refused.inputs.raw or b"") == {
        "wrong": "field"
    }  # no _meta
    assert by_id["cron-7.0"].status_code == 200
