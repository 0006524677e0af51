"""Background runs: ``POST /{P}/runs`` → 202, a worker runs it, ``GET /api/runs/{id}`` answers,
and the webhook arrives signed per Standard Webhooks, verified with the reference implementation
(``standardwebhooks``), retried after a 500 (the first retry within 10 s)."""

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.test import override_settings
from standardwebhooks import Webhook

from jobs.addresses import AddressRefused, check_url
from tests.jobs.conftest import WEBHOOK_SECRET, wait_for
from tests.support import Running


class Receiver(http.server.ThreadingHTTPServer):
    """Answers 500 to the first ``failures`` deliveries, then 204; keeps what it got, and when."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[tuple[float, dict[str, str], bytes, int]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if len(self.server.got) < self.server.failures else 204
        self.server.got.append((time.monotonic(), dict(self.headers.items()), body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_runs_webhook_is_signed_and_retried_after_a_500(
    server: Running, worker_factory: Callable, receiver: Receiver
) -> None:
    with worker_factory(concurrency=2):
        answer = httpx.post(
            f"{server.url}/EchoAsync/runs", json={"question": "hello run", "webhook_url": receiver.url}
        )
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        wait_for(lambda: len(receiver.got) >= 2, 60)
    view = httpx.get(f"{server.url}/api/runs/{run_id}").json()
    assert view["status"] == "succeeded" and view["status_code"] == 200 and "answer" in view["outputs"]
    (first_at, _, first_body, first_status), (second_at, headers, body, status) = receiver.got[:2]
    assert (first_status, status) == (500, 204)
    assert second_at - first_at <= 10  # the first retry within 10 s
    assert json.loads(body) == view and body == first_body  # the same JSON as GET /api/runs/{id}
    signed = {name.lower(): value for name, value in headers.items()}
    assert Webhook(WEBHOOK_SECRET).verify(body, signed) == view  # the reference algorithm agrees
    with pytest.raises(Exception, match="signature"):
        Webhook(WEBHOOK_SECRET).verify(body + b" ", signed)


def test_a_run_with_invalid_inputs_is_422_and_an_unknown_program_404(server: Running) -> None:
    invalid = httpx.post(f"{server.url}/EchoAsync/runs", json={"nope": 1})
    assert invalid.status_code == 422
    assert httpx.post(f"{server.url}/Nope/runs", json={"question": "x"}).status_code == 404
    assert httpx.get(f"{server.url}/api/runs/00000000-0000-0000-0000-000000000000").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/x",
        "http://10.1.2.3/",
        "http://169.254.169.254/",
    ],
)
def test_private_and_loopback_targets_are_refused(url: str) -> None:
    with override_settings(DSPY_WEBHOOK_ALLOW_PRIVATE=False), pytest.raises(AddressRefused):
        check_url(url)


def test_a_public_address_or_the_allow_setting_passes() -> None:
    with override_settings(DSPY_WEBHOOK_ALLOW_PRIVATE=False):
        check_url("https://8.8.8.8/hook")
    with override_settings(DSPY_WEBHOOK_ALLOW_PRIVATE=True):
        check_url("http://127.0.0.1:9/hook")
    with pytest.raises(AddressRefused, match="http"):
        check_url("file:///etc/passwd")
