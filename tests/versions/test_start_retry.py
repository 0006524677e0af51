"""A database that cannot answer when a server starts: the programs serve unversioned, and the
versions poller retries the start-up registration until it succeeds, with no restart."""

from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.databases import server_database
from tests.support import Running, project_config, service
from tests.telemetry.conftest import wait_for
from tests.versions.conftest import SERVICE_PROJECT

P = "Optimized"


def answered_version(url: str) -> str | None:
    answer = httpx.post(f"{url}/{P}", json={"question": "which version now?"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.headers.get("X-Program-Version")


def test_a_database_down_at_start_up_is_retried_until_the_programs_are_versioned(
    tmp_path: Path, mock: Running
) -> None:
    config = project_config(SERVICE_PROJECT, tmp_path, mock.url)
    with ExitStack() as stack:
        database = stack.enter_context(server_database(tmp_path))
        with database.outage():
            env = {"VERSIONS_POLL_S": "0.1", "VERSIONS_START_PATIENCE_S": "0.5", **database.env()}
            env["SQLITE_BUSY_TIMEOUT_MS"] = "100"
            running = stack.enter_context(service(tmp_path, SERVICE_PROJECT, config, **env))
            assert answered_version(running.url) is None  # unversioned while the registry is away
        # The outage is over: the poller registers the loaded state (v1, production) on its own.
        assert wait_for(lambda: answered_version(running.url), 20, "the programs to be versioned") == "v1"
        assert "retrying" in running.log()
