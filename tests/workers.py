"""Several gunicorn workers, as in production, on a fresh database: for the tests that need both."""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.databases import ServerDatabase, server_database
from tests.support import Running, service

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "dspysite/gunicorn.conf.py"]


@contextmanager
def gunicorn_workers(
    tmp_dir: Path, project: Path, config: Path, workers: int = 2, **env: str
) -> Iterator[tuple[Running, ServerDatabase]]:
    """``workers`` gunicorn workers summing their metrics in ``tmp_dir``, once every one has started."""
    settings = {
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_dir / "prometheus"),
        "TELEMETRY_FLUSH_INTERVAL_S": "0.1",
        **env,
    }
    with (
        server_database(tmp_dir) as database,
        service(tmp_dir, project, config, GUNICORN, **database.env(), **settings) as server,
    ):
        deadline = time.monotonic() + 90
        while server.log().count("Application startup complete") < workers:
            if time.monotonic() > deadline:
                raise AssertionError(f"{workers} workers did not start within 90 s:\n{server.log()}")
            time.sleep(0.05)
        yield server, database
