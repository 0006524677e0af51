"""Fixtures for the developer-experience tests: the mock LLM and the service serving the fixture project."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import server_database
from tests.support import FIXTURES, Running, project_config, service

SERVICE_PROJECT = FIXTURES / "service_project"


@pytest.fixture(scope="session")
def devx_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devx")


@pytest.fixture(scope="session")
def devx_server(devx_tmp: Path, llm: Running) -> Iterator[Running]:
    """The fixture project with small limits: batches of at most 5 items, OneAtATime admits one call,
    the Pooled* programs run on a pool of one copy, JsonStory uses the JSON adapter."""
    config = project_config(
        SERVICE_PROJECT,
        devx_tmp,
        llm.url,
        server={"sync_worker_threads": 32, "request_timeout_s": 30, "max_batch_items": 5},
        programs={
            "SlowAsync": {"request_timeout_s": 1.5},
            "OneAtATime": {"max_concurrent": 1},
            "PooledStory": {"instance_mode": "pool", "pool_size": 1},
            "PooledStorySync": {"instance_mode": "pool", "pool_size": 1},
            "JsonStory": {"adapter": "json"},
        },
    )
    with (
        server_database(devx_tmp) as database,
        service(
            devx_tmp, SERVICE_PROJECT, config, TELEMETRY_FLUSH_INTERVAL_S="0.1", **database.env()
        ) as running,
    ):
        yield running
