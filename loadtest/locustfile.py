"""Load test for the fixture programs (loadtest/fixture_project), one user class per endpoint.

Run by ``loadtest/run_benchmark.sh``; by hand::

    locust -f loadtest/locustfile.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8000 SimplePredict

The user class names are the program names (``SimplePredict``, ``AsyncPredict``, ``MultiStep``):
name one or more on the command line to choose the endpoints (all three run when none is named).

Every request carries a question no other request uses, and the mock LLM answers ``Echo: <first
input field>`` for every output field, so a served answer must contain its own question. An answer
that does not (a cache hit, or another request's answer) counts as a failure, as does any status
other than 200. Users send requests back to back (no think time): the number of users is the
number of requests in flight.

The process exits with 1 when the failure ratio passes ``LOCUST_MAX_FAIL_RATIO`` (default 0.01)
or when no request was made, else 0. Both the exit code and the ``--csv`` files are computed from
the final statistics, after the requests still in flight at the end of ``--run-time`` have
finished (``--stop-timeout``): locust itself writes its CSV files only once a second and not at
exit, so they would miss the last second of requests.
"""

import csv
import itertools
import os
import uuid
from collections.abc import Callable
from typing import Any

from locust import FastHttpUser, constant, events, stats, task
from locust.env import Environment

MAX_FAIL_RATIO = float(os.environ.get("LOCUST_MAX_FAIL_RATIO", "0.01"))
# Longer than the slowest point of the matrix (a 500 ms model at 400 users queueing at the server).
NETWORK_TIMEOUT_S = float(os.environ.get("LOCUST_NETWORK_TIMEOUT_S", "120"))

# One prefix per locust process and a counter: unique without paying for a uuid per request.
_RUN_ID = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count()


def unique_question(program: str) -> str:
    return f"{program} question {_RUN_ID}-{next(_SEQUENCE)}: what is the answer?"


def answer_problem(question: str, body: object) -> str | None:
    """Why a 200 response does not answer ``question``, or None when it does."""
    if not isinstance(body, dict):
        return f"response is not a JSON object: {str(body)[:80]}"
    answer = body.get("answer")
    if not isinstance(answer, str):
        return f"no string 'answer' in the response: {sorted(body)}"
    if question not in answer:
        # Any other question here is a cache hit or a crossed answer; name what came back.
        return f"answer does not echo its own question (cache hit or crossed answer): {answer[:120]!r}"
    return None


class _ProgramUser(FastHttpUser):
    abstract = True
    program = ""
    wait_time = constant(0)
    network_timeout = NETWORK_TIMEOUT_S
    connection_timeout = NETWORK_TIMEOUT_S

    @task
    def ask(self) -> None:
        question = unique_question(self.program)
        with self.client.post(
            f"/{self.program}", json={"question": question}, name=f"/{self.program}", catch_response=True
        ) as response:
            if response.status_code != 200:
                detail = (response.text or "")[:160]
                response.failure(f"HTTP {response.status_code}: {detail}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure(f"invalid JSON: {(response.text or '')[:80]!r}")
                return
            problem = answer_problem(question, body)
            if problem:
                response.failure(problem)
            else:
                response.success()


class SimplePredict(_ProgramUser):
    """Sync program: ``forward`` only."""

    program = "SimplePredict"


class AsyncPredict(_ProgramUser):
    """Native async program: ``aforward`` awaiting ``acall``."""

    program = "AsyncPredict"


class MultiStep(_ProgramUser):
    """Two predictors in sequence (two LM calls per request)."""

    program = "MultiStep"


def _replace_file(path: str, write: Callable[[Any], None]) -> None:
    """Write a CSV file under a new inode: locust's own writer keeps writing to the old one."""
    temporary = f"{path}.final"
    with open(temporary, "w", newline="") as handle:
        write(csv.writer(handle))
    os.replace(temporary, path)


@events.test_stop.add_listener
def _final_csv_files(environment: Environment, **_kwargs: object) -> None:
    """Rewrite the ``--csv`` files from the final statistics (all users have stopped)."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    writer = stats.StatsCSV(environment, stats.PERCENTILES_TO_REPORT)
    _replace_file(f"{prefix}_stats.csv", writer.requests_csv)
    _replace_file(f"{prefix}_failures.csv", writer.failures_csv)
    _replace_file(f"{prefix}_exceptions.csv", writer.exceptions_csv)


@events.quitting.add_listener
def _exit_code(environment: Environment, **_kwargs: object) -> None:
    # Locust fires `quitting` before it stops the users: stop them now (each finishes its request
    # within --stop-timeout) so the decision counts every request.
    if environment.runner is not None:
        environment.runner.stop()
    total = environment.stats.total
    ratio = total.fail_ratio
    if total.num_requests == 0:
        environment.process_exit_code = 1
        print("locustfile: FAIL no request was made")
    elif ratio > MAX_FAIL_RATIO:
        environment.process_exit_code = 1
        print(
            f"locustfile: FAIL failure ratio {ratio:.2%} > {MAX_FAIL_RATIO:.2%} "
            f"({total.num_failures} of {total.num_requests} requests)"
        )
    else:
        environment.process_exit_code = 0
        print(f"locustfile: OK failure ratio {ratio:.2%} ({total.num_failures} of {total.num_requests})")
