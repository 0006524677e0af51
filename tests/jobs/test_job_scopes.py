"""Who sees which job, with API keys on: ``invoke`` to submit, a key reads its own jobs, ``admin``
every job; each item's log row is the job's key's (its quotas and spend apply)."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.databases import ServerDatabase
from tests.jobs.conftest import JOB_ENV, SERVICE_PROJECT, job_lines, submit, wait_finished, wait_for
from tests.support import Running, service


@pytest.fixture(scope="module")
def keyed(jobs_tmp: Path, config: Path, database: ServerDatabase) -> Iterator[Running]:
    with service(jobs_tmp, SERVICE_PROJECT, config, **database.env(), **JOB_ENV, DSPY_AUTH="true") as running:
        yield running


def create_key(
    database: ServerDatabase, server: Running, name: str, scopes: str, rpm: int | None = None
) -> tuple[str, int]:
    from apikeys.models import ApiKey
    from apikeys.services import api_key_issue

    key = ApiKey(name=name)
    token = api_key_issue(key)
    columns = "name, prefix, key_hash, scopes, rpm, created_at"
    sql = f"INSERT INTO apikeys_apikey ({columns}) VALUES (%s, %s, %s, %s, %s, %s)"
    connection = database.connect()  # committed (ServerDatabase.query reads)
    try:
        params = (name, key.prefix, key.key_hash, scopes, rpm, datetime.now(UTC).isoformat())
        if database.vendor == "sqlite":
            connection.execute(sql.replace("%s", "?"), params)
            connection.commit()
        else:
            connection.execute(sql, params)
    finally:
        connection.close()
    key_id = database.query("SELECT id FROM apikeys_apikey WHERE prefix = %s", (key.prefix,))[0][0]
    auth = {"Authorization": f"Bearer {token}"}
    wait_for(lambda: httpx.get(f"{server.url}/api/jobs", headers=auth).status_code != 401, 30, step_s=0.2)
    return token, key_id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_keys_see_only_their_own_jobs(
    keyed: Running, database: ServerDatabase, worker_factory: Callable
) -> None:
    alice, alice_id = create_key(database, keyed, "alice", "invoke,read")
    bob, _ = create_key(database, keyed, "bob", "invoke,read")
    admin, _ = create_key(database, keyed, "root", "admin")
    reader, _ = create_key(database, keyed, "reader", "read")

    assert submit(keyed.url, job_lines(2)).status_code == 401
    refused = submit(keyed.url, job_lines(2), **bearer(reader))
    assert refused.status_code == 403 and "invoke" in refused.json()["detail"]

    job_id = submit(keyed.url, job_lines(20), **bearer(alice)).json()["id"]
    with worker_factory(concurrency=4):
        job = wait_finished(keyed.url, job_id, timeout_s=120, **bearer(alice))
    assert job["succeeded"] == 20
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/results"):
        assert httpx.get(f"{keyed.url}{path}", headers=bearer(bob)).status_code == 404
        assert httpx.get(f"{keyed.url}{path}", headers=bearer(admin)).status_code == 200
    assert httpx.post(f"{keyed.url}/api/jobs/{job_id}/cancel", headers=bearer(bob)).status_code == 404
    listed = {job["id"] for job in httpx.get(f"{keyed.url}/api/jobs", headers=bearer(bob)).json()["jobs"]}
    assert job_id not in listed
    every = {job["id"] for job in httpx.get(f"{keyed.url}/api/jobs", headers=bearer(admin)).json()["jobs"]}
    assert job_id in every
    # the items ran as alice's key: their log rows are hers
    sql = "SELECT api_key_id, COUNT(*) FROM telemetry_inferencelog WHERE entry = %s GROUP BY api_key_id"
    rows = database.query(sql, (job_id,))
    assert rows == [(alice_id, 20)]


def test_items_over_the_keys_rpm_wait_for_it_instead_of_failing(
    keyed: Running, database: ServerDatabase, worker_factory: Callable
) -> None:
    token, _ = create_key(database, keyed, "metered", "invoke", rpm=10)
    job_id = submit(keyed.url, job_lines(14), **bearer(token)).json()["id"]
    with worker_factory(concurrency=4):
        job = wait_finished(keyed.url, job_id, timeout_s=180, **bearer(token))
    assert (job["succeeded"], job["failed"]) == (14, 0), job
    # 14 calls at 10 per minute: the last ones waited for the key's next window
    sql = "SELECT COUNT(*) FROM telemetry_inferencelog WHERE entry = %s AND status_code = 200"
    assert wait_for(lambda: database.query(sql, (job_id,))[0][0] == 14, 30)
