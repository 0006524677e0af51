from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import server_database
from tests.support import FIXTURES, Running, mock_llm, project_config, service

SERVICE_PROJECT = FIXTURES / "service_project"


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration")


@pytest.fixture(scope="session")
def mock(session_tmp: Path) -> Iterator[Running]:
    with mock_llm(session_tmp) as running:
        yield running


@pytest.fixture(scope="session")
def server(session_tmp: Path, mock: Running) -> Iterator[Running]:
    """The service under uvicorn serving tests/fixtures/service_project."""
    config = project_config(SERVICE_PROJECT, session_tmp, mock.url)
    with (
        server_database(session_tmp) as database,  # its own migrated database for telemetry rows
        service(session_tmp, SERVICE_PROJECT, config, MAX_BODY_BYTES="65536", **database.env()) as running,
    ):
        yield running
