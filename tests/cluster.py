"""A cluster on loopback: two servers, each gunicorn with 2 workers, sharing one PostgreSQL and one Redis.

The fixture of the tests of limits that must hold across machines (API-key quotas, model budgets,
shared circuits)::

    from tests.cluster import Cluster, cluster, require_cluster_database

    @pytest.fixture(scope="module")
    def nodes(tmp_path_factory, llm) -> Iterator[Cluster]:
        require_cluster_database()
        tmp = tmp_path_factory.mktemp("cluster")
        with redis_server(tmp) as redis, cluster(tmp, [config_a, config_b], redis.url) as nodes:
            yield nodes

    nodes.urls                       # the two servers' base URLs
    nodes.manage("apikey", "create", "k", "--rpm", "30")   # manage.py on the shared database
    nodes.create_key("k2", rpm=30)   # the same row, inserted directly (milliseconds)
    nodes.redis_url

* Each server is ``gunicorn -c dspysite/gunicorn.conf.py`` with ``WEB_CONCURRENCY=2`` (uvicorn
  workers, as in production), on its own free port, with its own Prometheus directory (so its
  ``/metrics`` sums its own two workers), waiting until both workers have started.
* One migrated PostgreSQL database for both (:mod:`tests.databases`): the cluster needs
  ``DATABASE_URL=postgres://...`` (:func:`require_cluster_database` skips otherwise: SQLite is one
  machine's database).
* One Redis: pass its URL; ``REDIS_URL`` (CI) or a :class:`tests.redis_servers.RedisServer` the
  test can stop. Every cluster gets a key prefix of its own (``RATELIMIT_KEY_PREFIX``), so clusters
  sharing a Redis never see each other's counts.
* ``configs``: one config for both servers, or one per server (two failure modes side by side).
"""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.databases import ServerDatabase, postgres_base_url, server_database
from tests.support import FIXTURES, ROOT, Running, service
from tests.telemetry.conftest import wait_for

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]
SERVICE_PROJECT = FIXTURES / "service_project"
WORKERS = 2
# Concurrent probes of a new key per server: enough connections that both workers answer some.
PROBES = 8


def require_cluster_database() -> None:
    if postgres_base_url() is None:
        pytest.skip("the two-server cluster needs PostgreSQL: set DATABASE_URL=postgres://...")


@dataclass
class Cluster:
    servers: list[Running]
    database: ServerDatabase
    redis_url: str
    env: dict[str, str]  # what every server was started with (project, database, Redis, prefix)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def create_key(self, name: str, **quota: object) -> str:
        """An API key with ``quota`` (``rpm=30``...), inserted directly: a ``manage.py`` run costs ~1.5 s."""
        from apikeys.models import ApiKey
        from apikeys.services import api_key_issue

        key = ApiKey(name=name)
        token = api_key_issue(key)
        fields = {"name": name, "prefix": key.prefix, "key_hash": key.key_hash, **quota}
        columns = ", ".join([*fields, "created_at"])
        placeholders = ", ".join(["%s"] * len(fields))
        self.database.query(
            f"INSERT INTO apikeys_apikey ({columns}) VALUES ({placeholders}, now())",
            list(fields.values()),
        )
        self.wait_for_key(token)
        return token

    def wait_for_key(self, token: str) -> None:
        """Until every server knows a new key (its key cache reloads on a miss, at most so often).

        Polls ``GET /programs``, which no quota counts, over several connections at once: each
        server has two workers, each with its own key cache, and one request reaches only one.
        """
        headers = {"Authorization": f"Bearer {token}"}

        async def all_know(url: str) -> bool:
            async with httpx.AsyncClient(headers=headers, timeout=30) as client:
                answers = await asyncio.gather(*(client.get(f"{url}/programs") for _ in range(PROBES)))
            return all(answer.status_code == 200 for answer in answers)

        for url in self.urls:
            wait_for(lambda u=url: asyncio.run(all_know(u)), 30, f"{url} to know the new key")

    def manage(self, *args: str) -> str:
        """``manage.py <args>`` against the cluster's database; its standard output."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**os.environ, **self.env, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def _workers_started(server: Running) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.url} exited with {server.process.returncode}:\n{server.log()[-3000:]}")
    return server.log().count("Application startup complete") == WORKERS


@contextmanager
def cluster(
    tmp_dir: Path, configs: Path | list[Path], redis_url: str, project: Path = SERVICE_PROJECT, **env: str
) -> Iterator[Cluster]:
    """Start the two servers (in parallel: each waits for its own workers) and stop them by PID."""
    per_server = configs if isinstance(configs, list) else [configs, configs]
    with server_database(tmp_dir) as database, ExitStack() as stack:
        shared = {
            **database.env(),
            "REDIS_URL": redis_url,
            "RATELIMIT_KEY_PREFIX": f"cluster-{uuid.uuid4().hex[:8]}:",
            "DSPY_PROJECT_DIR": str(project),
            "WEB_CONCURRENCY": str(WORKERS),
            "TELEMETRY_FLUSH_INTERVAL_S": "0.2",
            # A worker that does not know a key looks again at once: wait_for_key's probe reaches one
            # of a server's two workers, and the other may have looked less than a second before.
            "API_KEY_MISS_RELOAD_S": "0",
            **env,
        }
        servers = []
        for index, config in enumerate(per_server):
            prometheus = tmp_dir / f"prometheus-{index}-{uuid.uuid4().hex[:6]}"
            prometheus.mkdir()
            server_env = {**shared, "DSPY_CONFIG": str(config), "PROMETHEUS_MULTIPROC_DIR": str(prometheus)}
            servers.append(
                stack.enter_context(service(tmp_dir, project, config, GUNICORN, False, **server_env))
            )
        for server in servers:  # both start at once; each is ready when its two workers are
            wait_for(lambda s=server: _workers_started(s), 120, f"both workers of {server.url}")
        yield Cluster(servers, database, redis_url, {**shared, "DSPY_CONFIG": str(per_server[0])})
