"""Tracing's SDK is an extra: without it, an OTLP endpoint logs one line and nothing is traced."""

import asyncio
import importlib.util
import logging

import pytest

from telemetry import tracing


def test_without_the_sdk_an_endpoint_logs_one_error_and_tracing_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name.startswith("opentelemetry.sdk") else real_find_spec(name, *args)

    assert tracing.sdk_installed()  # requirements.txt installs the extra
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert not tracing.sdk_installed()
    with caplog.at_level(logging.INFO, logger="telemetry.tracing"):
        asyncio.run(tracing.tracing_startup())
    assert tracing._tracing is None
    assert [r.getMessage() for r in caplog.records] == [
        "Tracing off: the OpenTelemetry SDK is not installed: pip install 'dspy-django[tracing]'"
    ]
