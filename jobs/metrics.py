"""A ``jobworker``'s Prometheus series, served by the worker itself (``--metrics-port``): the web
processes' ``/metrics`` does not see worker processes.

* ``dspy_jobs_queue_depth``: engine tasks waiting for a worker (chunks, runs, webhook retries),
  read by the lease keeper at each sweep; any worker's value is the cluster's.
* ``dspy_job_items_total{program, outcome}``: items finished here (``rate()`` is items per second).
* ``dspy_job_item_duration_seconds{program}``: an item's start to its stored result.
* ``dspy_job_items_reclaimed_total``: items of lost workers this worker's sweeps queued again.
"""

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from telemetry.prometheus import outcome

QUEUE_DEPTH = Gauge("dspy_jobs_queue_depth", "Engine tasks waiting for a worker")
ITEMS = Counter("dspy_job_items_total", "Job items finished by this worker", ["program", "outcome"])
ITEM_SECONDS = Histogram(
    "dspy_job_item_duration_seconds",
    "A job item's run, start to stored result",
    ["program"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RECLAIMED = Counter("dspy_job_items_reclaimed_total", "Items of lost workers queued again by this worker")


def item_finished(program: str, status: int, seconds: float) -> None:
    ITEMS.labels(program, outcome(status)).inc()
    ITEM_SECONDS.labels(program).observe(seconds)


def serve(port: int) -> None:
    """Expose this process's registry on ``port`` (all interfaces: the Pod's port to scrape)."""
    start_http_server(port)
