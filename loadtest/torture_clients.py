"""The clients of ``torture.py``: raw keep-alive and pipelining sockets, httpx, and cut-off requests.

Every request carries its own ``X-Request-ID`` and a question that starts with it, so an answer
proves which request it belongs to, and the inference log can be checked row by row.
"""

import asyncio
import contextlib
import math
import os
import random
import socket
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import httptools
import httpx

PROGRAMS = ("SimplePredict", "AsyncPredict")  # sync (worker threads), native async (event loop)
MIN_BODY, MAX_BODY = 100, 64 * 1024
REQUEST_TIMEOUT_S = 60.0
# Pollers pause this long: under httpx's default keepalive_expiry (5 s), so httpx reuses the
# connection, and at uvicorn's default keep-alive timeout (5 s), where issue 16's requests vanished.
POLL_PAUSE_S = (4.95, 4.999)
TRANSPORT_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, httptools.HttpParserError)


@dataclass
class Tally:
    """What the clients sent and what came back."""

    answered: dict[str, int] = field(default_factory=dict)  # request id -> status
    failed: dict[str, str] = field(default_factory=dict)  # request id -> what went wrong
    by_client: Counter[str] = field(default_factory=Counter)
    cut_mid_body: list[str] = field(default_factory=list)  # never reached a program
    cut_after_body: list[str] = field(default_factory=list)  # may have

    def record(self, client: str, rid: str, status: int, what: str | None) -> None:
        """One well-behaved request's outcome: ``status`` 0 when no answer came, ``what`` went wrong."""
        self.by_client[client] += 1
        if status:
            self.answered[rid] = status
        if what is not None:
            self.failed[rid] = f"{client}: {what}"


class Budget:
    """Hands out request ids until the count or the deadline is reached."""

    def __init__(self, total: int, max_seconds: float, cut_ratio: float) -> None:
        self.tally = Tally()
        self.total = total
        self.deadline = time.monotonic() + max_seconds
        self.cut_ratio = cut_ratio
        self.prefix = f"tt{os.getpid():x}{int(time.time() * 1000):x}-"  # of every id of this run
        self.issued = 0
        self.extra = 0

    @property
    def exhausted(self) -> bool:
        return self.issued >= self.total or time.monotonic() > self.deadline

    def take(self, count: int = 1) -> list[str]:
        count = 0 if self.exhausted else min(count, self.total - self.issued)
        self.issued += count
        return [f"{self.prefix}{self.issued - count + i:x}" for i in range(count)]

    def take_extra(self, kind: str) -> str | None:
        """An id outside the count (pollers "p", cuts "x": not hex digits) until the deadline."""
        if time.monotonic() > self.deadline:
            return None
        self.extra += 1
        return f"{self.prefix}{kind}{self.extra:x}"


def make_request(rid: str, rng: random.Random) -> tuple[str, bytes]:
    """A program and a JSON body of 0.1 to 64 KB (log-uniform) whose question starts with ``rid``."""
    size = int(math.exp(rng.uniform(math.log(MIN_BODY), math.log(MAX_BODY))))
    padding = b"x" * max(0, size - len(rid) - 18)
    return rng.choice(PROGRAMS), b'{"question": "' + rid.encode() + b" " + padding + b'"}'


def http_request(program: str, body: bytes, rid: str) -> bytes:
    head = (
        f"POST /{program} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def problem(rid: str, status: int, request_id: bytes | None, body: bytes) -> str | None:
    """What is wrong with an answer, or None."""
    if status != 200:
        return f"status {status}"
    if request_id != rid.encode():
        return "the answer of another request"
    if b"Echo: " + rid.encode() + b" " not in body:
        return "an answer that does not echo the question"
    return None


class Responses:
    """The answers arriving on one raw connection, in order (httptools, the parser uvicorn uses)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.parser = httptools.HttpResponseParser(self)
        self.ready: deque[tuple[int, dict[bytes, bytes], bytes]] = deque()
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.ready.append((self.parser.get_status_code(), self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []

    async def next(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while not self.ready:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("connection closed without an answer")
            self.parser.feed_data(data)
        return self.ready.popleft()


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.responses = Responses(reader)

    @classmethod
    async def open(cls, host: str, port: int) -> "RawConnection":
        return cls(*await asyncio.open_connection(host, port))

    def close(self, reset: bool = False) -> None:
        if reset:  # SO_LINGER 0: the close sends RST instead of FIN
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()


async def raw_client(address: tuple[str, int], budget: Budget, rng: random.Random, most: int) -> None:
    """Requests on one persistent connection, up to ``most`` written before the answers are read.

    With ``most`` 1, a plain keep-alive client that now and then (``cut_ratio``) cuts a request
    off on a connection of its own instead.
    """
    client = "pipelined" if most > 1 else "keep-alive"
    connection: RawConnection | None = None
    while rids := budget.take(rng.randint(min(2, most), most)):
        if most == 1 and rng.random() < budget.cut_ratio:
            await cut_one(address, budget, rng)
        pending = deque(rids)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                connection = connection or await RawConnection.open(*address)
                requests = (http_request(*make_request(rid, rng), rid) for rid in rids)
                connection.writer.write(b"".join(requests))
                while pending:
                    status, headers, body = await connection.responses.next()
                    rid = pending.popleft()
                    what = problem(rid, status, headers.get(b"x-request-id"), body)
                    budget.tally.record(client, rid, status, what)
                    if headers.get(b"connection", b"").lower() == b"close":
                        raise ConnectionResetError("the server closed the connection after answering")
        except TRANSPORT_ERRORS as exc:
            for rid in pending:
                budget.tally.record(client, rid, 0, f"{type(exc).__name__}: {exc}"[:120])
            if connection is not None:
                connection.close()
            connection = None
    if connection is not None:
        connection.close()


async def cut_one(address: tuple[str, int], budget: Budget, rng: random.Random) -> None:
    """A request cut off mid-body (FIN or RST) or right after its body, on a new connection."""
    rid = budget.take_extra("x")
    if rid is None:
        return
    program, body = make_request(rid, rng)
    request = http_request(program, body, rid)
    whole = rng.random() < 1 / 3
    end = len(request) if whole else rng.randint(len(request) - len(body), len(request) - 1)
    (budget.tally.cut_after_body if whole else budget.tally.cut_mid_body).append(rid)
    with contextlib.suppress(*TRANSPORT_ERRORS):
        connection = await RawConnection.open(*address)
        connection.writer.write(request[:end])
        await connection.writer.drain()
        await asyncio.sleep(rng.uniform(0, 0.02))  # while the server reads the body or runs the program
        connection.close(reset=rng.random() < 0.5)


async def httpx_call(
    client: httpx.AsyncClient, budget: Budget, kind: str, rid: str, rng: random.Random
) -> None:
    program, body = make_request(rid, rng)
    headers = {"Content-Type": "application/json", "X-Request-ID": rid}
    try:
        response = await client.post(f"/{program}", content=body, headers=headers)
    except httpx.TransportError as exc:
        budget.tally.record(kind, rid, 0, f"{type(exc).__name__}: {exc}"[:120])
        return
    request_id = response.headers.get("x-request-id", "").encode()
    what = problem(rid, response.status_code, request_id, response.content)
    budget.tally.record(kind, rid, response.status_code, what)


async def httpx_pool(url: str, budget: Budget, rng: random.Random, size: int) -> None:
    """``size`` tasks sharing one client whose pool holds ``size`` connections (the report's setup)."""
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        async def worker() -> None:
            while rids := budget.take():
                await httpx_call(client, budget, "httpx pool", rids[0], rng)

        await asyncio.gather(*(worker() for _ in range(size)))


async def poller(url: str, budget: Budget, rng: random.Random, reuses: int) -> None:
    """A client of its own (httpx defaults) that reuses its connection after ~5 s idle.

    It polls while the run lasts and at least ``reuses`` times.
    """
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        done = 0
        while rid := budget.take_extra("p"):
            await httpx_call(client, budget, "pollers", rid, rng)
            done += 1
            if done > reuses and budget.exhausted:
                return
            await asyncio.sleep(rng.uniform(*POLL_PAUSE_S))
