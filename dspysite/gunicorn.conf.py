"""Production server: ``gunicorn -c dspysite/gunicorn.conf.py`` (uvicorn workers, never reloads).

Every setting can be overridden by gunicorn's own environment variable (``GUNICORN_CMD_ARGS``) or
the variables read below.
"""

import multiprocessing
import os
from pathlib import Path

from dspysite.keepalive import keep_alive_timeout_s
from dspysite.paths import data_dir

wsgi_app = "dspysite.asgi:application"
worker_class = "uvicorn_worker.UvicornWorker"
bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# Longer than the longest request timeout (server.request_timeout_s, 120 s by default), so a
# graceful stop lets in-flight calls finish.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", 150))
timeout = int(os.environ.get("WORKER_TIMEOUT", 180))
# Longer than client pools keep an idle connection: at 5 s a request sent as it closed was lost.
keepalive = keep_alive_timeout_s()
# Each worker listens on a socket of its own (SO_REUSEPORT; gunicorn opens them after the fork), so
# the kernel spreads new connections over the workers by address hash. On one shared socket the
# worker that wakes first accepts most of a burst: with 50 keep-alive clients one of two workers
# did 87% of the work and the pair served 680 instead of ~780 requests/s (docs/PERFORMANCE.md).
# The flip side: another process of the same user can bind the same port and share the traffic.
reuse_port = os.environ.get("REUSE_PORT", "true").lower() not in {"0", "false", "no"}
reload = False
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Prometheus metrics summed over the workers (prometheus-client multiprocess mode, docs/TELEMETRY.md):
# every worker writes its values to files here; set before any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir() / "prometheus_multiproc"))


def on_starting(server: object) -> None:
    """Refuse unsafe settings; start from an empty metrics directory (old files would be summed in).

    Without Redis, API-key quotas, model budgets and circuit breakers are counted in each worker
    process: said once, so nobody finds out from a provider's 429s that N workers send N budgets.
    """
    # An unsafe production setting (dspysite/safety.py) stops the master before any worker forks:
    # one line each, exit 2 (a worker that exited would only be restarted).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dspysite.settings")
    from dspysite.safety import check_or_exit

    check_or_exit()
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # only prometheus-client's files: the directory may be shared
        stale.unlink()
    count = server.cfg.workers  # type: ignore[attr-defined]
    if count > 1 and not os.environ.get("REDIS_URL"):
        server.log.warning(  # type: ignore[attr-defined]
            "REDIS_URL is not set: API-key quotas, model budgets (rpm/tpm) and circuit breakers are "
            "counted per worker process, so %d workers allow %d times each limit (docs/DEPLOYMENT.md)",
            count,
            count,
        )


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges (in-flight, queue depth) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    """Flush telemetry if the worker stops without its ASGI lifespan shutdown (which flushes first)."""
    try:
        from telemetry.lifecycle import telemetry_writer
    except ImportError:  # the worker never loaded the app
        return
    telemetry_writer().stop(float(os.environ.get("TELEMETRY_SHUTDOWN_TIMEOUT_S", 10)))
