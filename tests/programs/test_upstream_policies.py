"""Retries, the provider's 429, circuit breakers, fallbacks, model budgets and prices, over real
sockets: one server (uvicorn) serving tests/fixtures/upstream_project against its own mock LLM,
whose fault scripts (``POST /faults``) fail chosen models and whose per-model counters
(``GET /stats/models``) prove what reached each model."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, Running, mock_llm, project_config, service

pytestmark = pytest.mark.integration

UPSTREAM_PROJECT = FIXTURES / "upstream_project"
Env = tuple[Running, Running, ServerDatabase]  # the server, its mock LLM, its database


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """(server, its own mock LLM, its database): fault scripts never reach other modules' servers."""
    tmp = tmp_path_factory.mktemp("upstream_policies")
    with mock_llm(tmp) as mock:
        config = project_config(UPSTREAM_PROJECT, tmp, mock.url)
        # With REDIS_URL (CI's second pass) the limits live in Redis: under this run's own keys.
        prefix = f"upstream-{uuid.uuid4().hex[:8]}:"
        settings = {"TELEMETRY_FLUSH_INTERVAL_S": "0.1", "RATELIMIT_KEY_PREFIX": prefix}
        with (
            server_database(tmp) as database,
            service(tmp, UPSTREAM_PROJECT, config, **settings, **database.env()) as server,
        ):
            yield server, mock, database


@pytest.fixture
def env(
    upstream: Env,
) -> Iterator[Env]:
    """Each test starts with no fault script and zeroed mock counters."""
    _, mock, _ = upstream
    httpx.post(f"{mock.url}/stats/reset").raise_for_status()
    try:
        yield upstream
    finally:
        httpx.delete(f"{mock.url}/faults").raise_for_status()


def script(
    mock: Running, model: str, sequence: list[str], then: str | None = None, retry_after: float = 0.1
) -> None:
    body = {"model": model, "sequence": sequence, "then": then, "retry_after": retry_after}
    httpx.post(f"{mock.url}/faults", json=body).raise_for_status()


def reached(mock: Running, model: str) -> int:
    """Chat requests the mock received for ``model`` since the test began."""
    return httpx.get(f"{mock.url}/stats/models").json().get(model, 0)


def ask(server: Running, program: str, question: str, request_id: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/{program}",
        json={"question": question},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )


def row(database: ServerDatabase, request_id: str) -> dict[str, Any]:
    """The request's inference log row, once the writer has written it."""
    sql = (
        "SELECT status_code, answered_by, attempts, cost_usd, prompt_tokens, completion_tokens, model_alias"
        " FROM telemetry_inferencelog WHERE request_id = %s"
    )
    deadline = time.monotonic() + 30
    while not (rows := database.query(sql, (request_id,))):
        assert time.monotonic() < deadline, f"no log row for {request_id} within 30 s"
        time.sleep(0.05)
    ((status, answered_by, attempts, cost, prompt, completion, alias),) = rows
    return {
        "status": status,
        "answered_by": answered_by,
        "attempts": attempts,
        "cost_usd": cost,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "model_alias": alias,
    }


def metric(server: Running, name: str, **labels: str) -> float:
    """A sample of ``GET /metrics`` (0 when the series does not exist yet)."""
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["Retried", "RetriedSync"])
def test_429_twice_then_200_answers_200_after_the_retries(env: Env, program: str) -> None:
    server, mock, database = env
    retries_before = metric(server, "dspy_lm_retries_total", model_alias="retried", error="LMRateLimitError")
    script(mock, "retried-model", ["429", "429"])

    response = ask(server, program, "third time lucky", f"retry-{program}")

    assert response.status_code == 200, response.text
    assert "Echo: third time lucky" in response.json()["answer"]
    assert reached(mock, "retried-model") == 3
    logged = row(database, f"retry-{program}")
    assert logged["attempts"] == 3 and logged["answered_by"] == "retried", logged
    retries = metric(server, "dspy_lm_retries_total", model_alias="retried", error="LMRateLimitError")
    assert retries - retries_before == 2


def test_each_lm_call_of_a_program_is_retried_on_its_own(
    env: Env,
) -> None:
    server, mock, database = env
    script(mock, "retried-model", ["500", "none", "429"])  # first call: 500 then ok; second: 429 then ok

    response = ask(server, "TwoCalls", "twice", "retry-two-calls")

    assert response.status_code == 200, response.text
    assert reached(mock, "retried-model") == 4
    assert row(database, "retry-two-calls")["attempts"] == 4


def test_provider_429_past_the_retries_is_503_with_retry_after(
    env: Env,
) -> None:
    server, mock, database = env
    script(mock, "limited-model", [], then="429", retry_after=0.2)

    response = ask(server, "RateLimited", "busy", "limited-retries")

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"  # 0.2 s, rounded up to HTTP's whole seconds
    body = response.json()
    assert body["error_type"] == "UpstreamRateLimited" and body["upstream_status"] == 429, body
    assert body["program"] == "RateLimited" and body["detail"]
    assert reached(mock, "limited-model") == 2  # the attempt and its one retry
    logged = row(database, "limited-retries")
    assert (logged["status"], logged["attempts"], logged["answered_by"]) == (503, 2, ""), logged


def test_a_retry_after_past_the_deadline_is_not_waited_for(
    env: Env,
) -> None:
    """The program's timeout is 10 s: a provider asking for 30 s is answered at once, with its wait."""
    server, mock, _ = env
    script(mock, "limited-model", [], then="429", retry_after=30)

    response = ask(server, "RateLimited", "much later", "limited-deadline")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert reached(mock, "limited-model") == 1


# -- circuit breaker ------------------------------------------------------------------------------


def test_failures_open_the_circuit_and_one_trial_call_closes_it(
    env: Env,
) -> None:
    server, mock, database = env
    opens_before = metric(server, "dspy_lm_circuit_opens_total", model_alias="breaker")
    script(mock, "breaker-model", [], then="500")

    statuses = [ask(server, "Breaker", "down", f"breaker-fail-{i}").status_code for i in range(3)]
    assert statuses == [502, 502, 502]  # failures: 3 opens it
    assert reached(mock, "breaker-model") == 3

    # Open: answered at once, without an upstream call, for the sync and the async program alike.
    for program in ("Breaker", "BreakerSync"):
        refused = ask(server, program, "still down?", f"breaker-open-{program}")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error_type"] == "CircuitOpen"
        assert int(refused.headers["retry-after"]) >= 1
    assert reached(mock, "breaker-model") == 3
    assert row(database, "breaker-open-Breaker")["attempts"] == 0
    assert metric(server, "dspy_lm_circuit_opens_total", model_alias="breaker") - opens_before == 1

    # The model recovers. After the cooldown (1 s) the first call is the trial; refusals until then
    # make no upstream call, so the mock sees exactly one request more: the trial that closed it.
    httpx.delete(f"{mock.url}/faults").raise_for_status()
    deadline = time.monotonic() + 10
    while (answer := ask(server, "Breaker", "back?", "breaker-trial")).status_code == 503:
        assert time.monotonic() < deadline, "the circuit did not let a trial call through"
        time.sleep(0.05)
    assert answer.status_code == 200
    assert reached(mock, "breaker-model") == 4
    assert ask(server, "BreakerSync", "closed again", "breaker-closed").status_code == 200
    assert reached(mock, "breaker-model") == 5


# -- fallbacks ------------------------------------------------------------------------------------


def test_a_failing_model_falls_back_and_the_row_names_the_fallback(
    env: Env,
) -> None:
    server, mock, database = env
    script(mock, "primary-model", [], then="500")

    answers = [ask(server, "WithFallback", f"q{i}", f"fallback-{i}") for i in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200], [a.text for a in answers]
    # Two failures open the primary's circuit: the third request goes straight to the backup.
    assert reached(mock, "primary-model") == 2
    assert reached(mock, "backup-model") == 3
    first, third = row(database, "fallback-0"), row(database, "fallback-2")
    assert (first["answered_by"], first["attempts"], first["model_alias"]) == ("backup", 2, "primary")
    assert (third["answered_by"], third["attempts"]) == ("backup", 1)
    breakdown = httpx.get(f"{server.url}/api/metrics/WithFallback").json()["metrics"]["lm_call_breakdown"]
    assert breakdown["openai/backup-model"]["call_count"] == 3
    assert breakdown["openai/backup-model"]["total_attempts"] == 5  # the primary's 2 failures too
    assert metric(server, "dspy_lm_fallbacks_total", program="WithFallback", model_alias="backup") == 3


# -- prices ---------------------------------------------------------------------------------------


def test_the_registry_price_wins_over_dspys_and_dspys_prices_the_rest(
    env: Env,
) -> None:
    server, _, database = env
    assert ask(server, "Priced", "cost? [usage=10,5]", "price-registry").status_code == 200
    assert ask(server, "KnownPrice", "cost? [usage=10,5]", "price-known").status_code == 200
    assert ask(server, "Retried", "cost? [usage=10,5]", "price-unknown").status_code == 200

    registry, known, unknown = (
        row(database, "price-registry"),
        row(database, "price-known"),
        row(database, "price-unknown"),
    )
    assert (registry["prompt_tokens"], registry["completion_tokens"]) == (10, 5)
    assert registry["cost_usd"] == pytest.approx(10 * 1.0 + 5 * 2.0)  # $1 and $2 per token in the config
    # gpt-4o-mini is in DSPy's price list too (a few millionths of a dollar): the registry's wins.
    assert (known["prompt_tokens"], known["completion_tokens"]) == (10, 5)
    assert known["cost_usd"] == pytest.approx(10 * 1.0 + 5 * 2.0)
    assert unknown["cost_usd"] is None  # neither states a price for openai/retried-model


# -- model budget (one server; over two: tests/programs/test_model_limits_cluster.py) ---------------------


def test_rpm_budget_lets_exactly_its_requests_reach_the_model(
    env: Env,
) -> None:
    server, mock, _ = env

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            calls = [client.post("/Budgeted", json={"question": f"b{i}"}) for i in range(50)]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(burst())

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 40 + [429] * 10
    assert reached(mock, "budgeted-model") == 40
    for refused in (response for response in responses if response.status_code == 429):
        assert refused.json()["error_type"] == "ModelBudget"
        assert 1 <= int(refused.headers["retry-after"]) <= 61
