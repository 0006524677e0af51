from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import server_database
from tests.support import FIXTURES, Running, project_config, service

SERVICE_PROJECT = FIXTURES / "service_project"


@pytest.fixture(scope="session")
def server(session_tmp: Path, mock: Running) -> Iterator[Running]:
    """The service under uvicorn serving tests/fixtures/service_project."""
    config = project_config(SERVICE_PROJECT, session_tmp, mock.url)
    with (
        server_database(session_tmp) as database,  # its own migrated database for telemetry rows
        service(session_tmp, SERVICE_PROJECT, config, MAX_BODY_BYTES="65536", **database.env()) as running,
    ):
        yield running
