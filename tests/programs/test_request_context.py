"""Request correlation: one request id per request, in a contextvar, everywhere the request goes.

200 concurrent requests, half to a sync program (a worker thread each), half to a native async
one; half bring their own X-Request-ID, half get one from the server. The mock reports a
different token usage for each (``[usage=P,C]`` in the question). Every response header, response
body (the id the program's own code saw), log row and server log line must belong to its request.
"""

import json
import re
from typing import Any

import pytest

from tests.databases import ServerDatabase
from tests.programs.conftest import concurrently
from tests.telemetry.conftest import graceful_stop, log_rows, wait_for

pytestmark = pytest.mark.integration

N = 200
LOG_LINE = re.compile(
    r"\[(?P<rid>[^\]]+)\]: (?:serving question=(?P<question>.*)"
    r"|lm call finished: model=\S+ tokens=(?P<prompt>\d+),(?P<completion>\d+) event_request=(?P<event>\S+))$",
    re.MULTILINE,
)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # SQLite text, PostgreSQL jsonb


def test_every_header_row_and_log_line_belongs_to_its_own_request(
    database: ServerDatabase, start_server: Any
) -> None:
    usage = {i: (1000 + i, 3 + 2 * i) for i in range(N)}
    requests = []
    for i, (prompt, completion) in usage.items():
        path = "/Correlated" if i % 2 else "/CorrelatedAsync"
        headers = {"X-Request-ID": f"client-{i}"} if i % 4 < 2 else {}
        requests.append((path, headers, {"question": f"q{i} [usage={prompt},{completion}] [delay=20]"}))

    with start_server(database) as server:
        responses = concurrently(server, requests)
        wait_for(lambda: log_rows(database) == N, 60, f"{N} rows")
        assert graceful_stop(server), server.log()
        log = server.log()

    ids = []
    for i, ((_, headers, body), (status, response_headers, answer)) in enumerate(
        zip(requests, responses, strict=True)
    ):
        assert status == 200, answer
        rid = response_headers["X-Request-ID"]
        if headers:
            assert rid == headers["X-Request-ID"]  # the client's id, echoed
        assert answer["request_id"] == rid, i  # what the program's code (its thread, its task) saw
        assert answer["answer"] == f"Echo: {body['question']}"
        ids.append(rid)
    assert len(set(ids)) == N  # server-made ids are unique too

    rows = database.query(
        "SELECT request_id, program, prompt_tokens, completion_tokens, lm_calls, inputs "
        "FROM telemetry_inferencelog"
    )
    by_id = {row[0]: row for row in rows}
    assert sorted(by_id) == sorted(ids)
    for i, (rid, (path, _, body)) in enumerate(zip(ids, requests, strict=True)):
        _, program, prompt, completion, calls, inputs = by_id[rid]
        assert program == path.strip("/")
        assert _json(inputs) == body  # the row is this request's
        assert (prompt, completion) == usage[i], rid  # and so are its tokens
        assert [(call["prompt_tokens"], call["completion_tokens"]) for call in _json(calls)] == [usage[i]]

    served: dict[str, list[str]] = {}
    lm_calls: dict[str, list[tuple[int, int, str]]] = {}
    for match in LOG_LINE.finditer(log):
        if match["question"] is not None:
            served.setdefault(match["rid"], []).append(match["question"])
        else:
            call = (int(match["prompt"]), int(match["completion"]), match["event"])
            lm_calls.setdefault(match["rid"], []).append(call)
    for i, (rid, (_, _, body)) in enumerate(zip(ids, requests, strict=True)):
        # Logged by the program (on a worker thread for the sync one) and by an lm_call_finished
        # subscriber (on the LM call's thread): the log filter's id and the event's are the request's.
        assert served.get(rid) == [body["question"]], rid
        assert lm_calls.get(rid) == [(*usage[i], rid)], rid
