"""The doors' one quota reservation (programs.reservations) and the HTTP door's request lifetime
(dspysite.middleware): taken on entering, settled exactly once on every way out, in-process."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from dspysite.middleware import request_lifetime, request_lifetime_middleware
from programs import reservations
from programs.lm_gates import current_lm_gate
from programs.reservations import QuotaRefused, quota_reserved


class FakeReservation:
    def __init__(self, settle_gate: asyncio.Event | None = None) -> None:
        self.headers = {"RateLimit": '"rpm";r=1;t=60'}
        self.lm_gate = object()  # what the request's LM calls would reserve through
        self.settled = 0
        self.settle_started = asyncio.Event()
        self.done = asyncio.Event()
        self.settle_gate = settle_gate

    async def settle(self) -> None:
        self.settle_started.set()
        if self.settle_gate is not None:
            await self.settle_gate.wait()
        self.settled += 1
        self.done.set()


class FakeQuotas:
    def __init__(self, refuse: bool = False, gate: asyncio.Event | None = None) -> None:
        self.refuse = refuse
        self.gate = gate
        self.made: list[FakeReservation] = []

    async def __call__(self, caller: Any) -> FakeReservation | None:
        if self.refuse:
            raise QuotaRefused(429, "over", {"Retry-After": "1"})
        if caller == "no quota":
            return None
        reservation = FakeReservation(self.gate)
        self.made.append(reservation)
        return reservation


@pytest.fixture
def installed() -> Iterator[FakeQuotas]:
    quotas = FakeQuotas()
    reservations.install(quotas)
    yield quotas
    reservations.install(None)


def test_nothing_installed_or_no_quota_reserves_nothing(installed: FakeQuotas) -> None:
    async def scenario() -> None:
        async with quota_reserved("no quota") as reservation:
            assert reservation is None
        reservations.install(None)
        async with quota_reserved("key") as reservation:
            assert reservation is None

    asyncio.run(scenario())
    assert installed.made == []


def test_a_reservations_lm_gate_is_bound_while_held_and_it_is_settled_once_on_leaving(
    installed: FakeQuotas,
) -> None:
    async def scenario() -> None:
        async with quota_reserved("key") as reservation:
            assert current_lm_gate.get() is reservation.lm_gate
            assert reservation.settled == 0
        assert reservation.settled == 1

    asyncio.run(scenario())


def test_a_refusal_raises_on_entering(installed: FakeQuotas) -> None:
    installed.refuse = True

    async def scenario() -> None:
        with pytest.raises(QuotaRefused) as refused:
            async with quota_reserved("key"):
                raise AssertionError("not entered")
        assert refused.value.body() == {"detail": "over", "error_type": "quota_exceeded"}

    asyncio.run(scenario())


def test_a_cancelled_call_is_settled_even_when_cancelled_again_while_settling(installed: FakeQuotas) -> None:
    gate = asyncio.Event()
    installed.gate = gate

    async def scenario() -> None:
        entered = asyncio.Event()

        async def call() -> None:
            async with quota_reserved("key"):
                entered.set()
                await asyncio.Event().wait()  # the program runs until the client goes

        task = asyncio.create_task(call())
        await entered.wait()
        task.cancel()  # client gone
        reservation = installed.made[0]
        await reservation.settle_started.wait()
        task.cancel()  # and again (server stopping), while the settlement waits for the store
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await asyncio.wait_for(reservation.done.wait(), 5)  # never, if the second cancel lost it
        assert reservation.settled == 1

    asyncio.run(scenario())


def _middleware(view: Any) -> Any:
    return request_lifetime_middleware(view)


def test_the_http_door_settles_before_a_plain_answer_is_returned_and_adds_the_headers(
    installed: FakeQuotas,
) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        reservation = await request_lifetime(request).enter(quota_reserved("key"))
        request_lifetime(request).headers.update(reservation.headers)
        return HttpResponse(b"{}")

    async def scenario() -> None:
        response = await _middleware(view)(HttpRequest())
        assert response["RateLimit"] == '"rpm";r=1;t=60'
        assert installed.made[0].settled == 1

    asyncio.run(scenario())


def test_the_http_door_holds_a_streamed_answer_until_its_last_chunk(installed: FakeQuotas) -> None:
    chunks_sent: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"b"):
            assert installed.made[0].settled == 0  # still held while the body is being sent
            chunks_sent.append(chunk)
            yield chunk

    async def view(request: HttpRequest) -> StreamingHttpResponse:
        await request_lifetime(request).enter(quota_reserved("key"))
        return StreamingHttpResponse(body())

    async def scenario() -> None:
        response = await _middleware(view)(HttpRequest())
        assert installed.made[0].settled == 0
        received = [chunk async for chunk in response]
        assert received == [b"a", b"b"]
        assert installed.made[0].settled == 1

    asyncio.run(scenario())


def test_the_http_door_settles_a_cut_off_stream_and_a_failed_request(installed: FakeQuotas) -> None:
    first_sent = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield b"x"
        first_sent.set()
        await asyncio.Event().wait()  # the LM is still writing
        yield b"never"

    async def streaming(request: HttpRequest) -> StreamingHttpResponse:
        await request_lifetime(request).enter(quota_reserved("key"))
        return StreamingHttpResponse(endless())

    async def failing(request: HttpRequest) -> HttpResponse:
        await request_lifetime(request).enter(quota_reserved("key"))
        raise asyncio.CancelledError

    async def scenario() -> None:
        response = await _middleware(streaming)(HttpRequest())

        async def send_body() -> None:
            async for _ in response:
                pass

        sending = asyncio.create_task(send_body())
        await first_sent.wait()
        sending.cancel()  # the client went away mid-stream
        with pytest.raises(asyncio.CancelledError):
            await sending
        with pytest.raises(asyncio.CancelledError):
            await _middleware(failing)(HttpRequest())
        for reservation in installed.made:
            await asyncio.wait_for(reservation.done.wait(), 5)
        assert [reservation.settled for reservation in installed.made] == [1, 1]

    asyncio.run(scenario())
