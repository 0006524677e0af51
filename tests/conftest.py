"""Fixtures shared by every test package: one mock LLM process for the whole session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Running, mock_llm

# Fixture projects are data: the dspy-cli one carries the test dspy-cli generated for it.
collect_ignore = ["fixtures"]

# Servers the tests of several apps share: the service project as it ships (`server`), and with
# small limits (`devx_server`).
pytest_plugins = ["tests.service_fixtures", "tests.devx_fixtures"]


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def mock(session_tmp: Path) -> Iterator[Running]:
    """The OpenAI-compatible mock LLM (loadtest/mock_llm.py) on a free loopback port."""
    with mock_llm(session_tmp) as running:
        yield running


@pytest.fixture(scope="session")
def llm(mock: Running) -> Running:
    """The same mock, under the name the telemetry and developer-experience tests use."""
    return mock
