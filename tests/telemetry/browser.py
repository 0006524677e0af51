"""Just enough of the Chrome DevTools Protocol to drive Debian's headless chromium from a test.

No browser-automation package needed: chromium speaks CDP over a websocket, and aiohttp (already a
dependency, for the mock LLM) is a websocket client.
"""

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = "/usr/bin/chromium"


def chromium_or_skip() -> str:
    """The chromium binary; in CI (``CI`` set) a missing browser fails the test instead of skipping."""
    binary = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if binary is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


class Page:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[str] = []

    async def send(self, method: str, timeout_s: float = 30, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        await self.socket.send_json({"id": message_id, "method": method, "params": params})
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.socket.receive_json()
                if message.get("id") == message_id:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})
                if "method" in message:
                    self.events.append(message["method"])

    async def wait_for_event(self, name: str, timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while name not in self.events:
                message = await self.socket.receive_json()
                if "method" in message:
                    self.events.append(message["method"])

    async def goto(self, url: str) -> None:
        self.events.clear()
        await self.send("Page.navigate", url=url)
        await self.wait_for_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose ``paths`` in the file input ``selector`` as a user does (the page gets a change event)."""
        found = await self.send(
            "Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})"
        )
        if "objectId" not in found.get("result", {}):
            raise RuntimeError(f"no element matches {selector}")
        object_id = found["result"]["objectId"]
        await self.send("DOM.setFileInputFiles", files=[str(path) for path in paths], objectId=object_id)

    async def submit(self, expression: str) -> None:
        """Run ``expression`` (which submits a form) and wait for the next page to load."""
        self.events.clear()
        await self.evaluate(expression)
        await self.wait_for_event("Page.loadEventFired")

    async def screenshot(self, width: int) -> bytes:
        """A PNG of the whole page, not just the window."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        await self.send("Emulation.setDeviceMetricsOverride", **metrics)
        shot = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


@asynccontextmanager
async def headless_page(
    binary: str, profile: Path, width: int = 1400, height: int = 1000
) -> AsyncIterator[Page]:
    process, port = launch(binary, profile, width, height)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(target for target in targets if target["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                view = Page(socket)
                await view.send("Page.enable")
                yield view
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch(
    binary: str, profile: Path, width: int, height: int, timeout_s: float = 30
) -> tuple[subprocess.Popen, int]:
    """Start chromium with a DevTools port of its choosing, which it writes to its profile directory."""
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    process = subprocess.Popen(
        [
            binary,
            *flags,
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        if marker.exists() and (text := marker.read_text().strip()):
            return process, int(text.splitlines()[0])
        time.sleep(0.05)
    process.kill()
    raise TimeoutError(f"chromium did not open its DevTools port within {timeout_s} s")
