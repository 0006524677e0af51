"""The bare-proxy ceiling of the benchmark kit: what serving an LLM call costs with no DSPy at all.

A pure ASGI app, served by uvicorn like the service, that answers ``POST /{Program}`` by forwarding
the first input field to the mock LLM with one pooled HTTP call (aiohttp) and returning the
model's text as ``{"answer": ...}``. No validation, no prompt, no parsing, no telemetry: the
server CPU per request it needs is the floor any DSPy server pays for HTTP in and HTTP out, and
the kit reports ours as a multiple of it (``run_benchmark.sh --mode bare-proxy``).

Run by hand::

    BARE_PROXY_UPSTREAM=http://127.0.0.1:9998/v1 uvicorn loadtest.bare_proxy:app --port 8001
"""

import json
import os
from typing import Any

import aiohttp
from asgiref.typing import ASGIReceiveCallable as Receive
from asgiref.typing import ASGISendCallable as Send
from asgiref.typing import Scope

UPSTREAM = os.environ.get("BARE_PROXY_UPSTREAM", "http://127.0.0.1:9998/v1").rstrip("/")
MODEL = os.environ.get("BARE_PROXY_MODEL", "mock-model")
# The programs run_benchmark.sh may ask for; GET /programs lists them as the service does.
PROGRAMS = ("SimplePredict", "AsyncPredict")
_JSON = [(b"content-type", b"application/json")]


class BareProxy:
    """One aiohttp session for the process (created on the first request, inside the loop)."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        if scope["method"] == "GET":
            listing = {"programs": [{"name": name} for name in PROGRAMS]}
            await _answer(send, 200, listing if path == "/programs" else {"status": "ok"})
            return
        payload = json.loads(await _read_body(receive))
        question = next(iter(payload.values()))
        answer = await self._complete(str(question))
        await _answer(send, 200, {"answer": answer})

    async def _complete(self, text: str) -> str:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            self.session = aiohttp.ClientSession(connector=connector)
        request = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        async with self.session.post(f"{UPSTREAM}/chat/completions", json=request) as response:
            response.raise_for_status()
            completion = await response.json()
        return completion["choices"][0]["message"]["content"]

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


app = BareProxy()
