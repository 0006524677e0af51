"""The playground in a real headless browser (Debian's chromium): list, fill the form, run, see the
answer, copy as curl (and the command works); images and audio by file picker, drop and URL;
screenshots in test-artifacts/."""

import asyncio
import base64
import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from tests.support import ROOT, Running
from tests.telemetry.browser import chromium_or_skip, headless_page, screenshot

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "test-artifacts"


async def wait_for_result(page: Page, timeout_s: float = 30) -> str:
    """Wait until the page's request finished; its status line's state ("done" or "error")."""
    state = "document.getElementById('status').dataset.state"
    await page.wait_for_function(f"['done', 'error'].includes({state})", timeout=timeout_s * 1000)
    return await page.evaluate(state)


async def outputs(page: Page) -> dict[str, str]:
    return await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#outputs dd')]"
        ".map(dd => [dd.dataset.output, dd.textContent]))"
    )


def set_value(field: str, value: str) -> str:
    return f"document.getElementById('field-{field}').value = {json.dumps(value)};"


async def session(server: Running, binary: str, question: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with headless_page(binary) as page:
        # The list of programs.
        await page.goto(f"{server.url}/")
        seen["index"] = await page.content()
        (ARTIFACTS / "playground-index.png").write_bytes(await screenshot(page))

        # Every kind of field, filled and run: the program answers with what it received.
        await page.goto(f"{server.url}/ui/Preferences")
        await page.evaluate(
            set_value("name", "Ada")
            + set_value("tone", '"fancy"')
            + "document.getElementById('field-shout').checked = true;"
            + set_value("count", "4")
            + set_value("tags", '["a", "b"]')
            + set_value("weights", '{"x": 0.5}')
            + "document.getElementById('run').click();"
        )
        seen["preferences_state"] = await wait_for_result(page)
        seen["preferences"] = json.loads(await page.evaluate("document.getElementById('raw').textContent"))

        # A bad JSON field is caught in the page, before any request.
        await page.evaluate(set_value("tags", "[not json") + "document.getElementById('run').click();")
        seen["bad_json_state"] = await wait_for_result(page)
        seen["bad_json_status"] = await page.evaluate("document.getElementById('status').textContent")

        # An LLM program: fill, Run, read the answer; then copy as curl.
        await page.goto(f"{server.url}/ui/EchoAsync")
        await page.evaluate(set_value("question", question) + "document.getElementById('run').click();")
        seen["echo_state"] = await wait_for_result(page)
        seen["echo"] = await outputs(page)
        seen["echo_status"] = await page.evaluate("document.getElementById('status').textContent")
        await page.evaluate("document.getElementById('copy-curl').click();")
        await page.wait_for_function("document.getElementById('curl').textContent", timeout=10_000)
        seen["curl"] = await page.evaluate("document.getElementById('curl').textContent")
        (ARTIFACTS / "playground-program.png").write_bytes(await screenshot(page))

        # Streaming from the page: the final outputs replace the partial ones.
        await page.goto(f"{server.url}/ui/Story")
        await page.evaluate(
            set_value("topic", "owls [delay=200]") + "document.getElementById('run-stream').click();"
        )
        seen["story_state"] = await wait_for_result(page)
        seen["story"] = await outputs(page)

        # The call just made shows up in the program's recent calls (the log writer flushes every 0.1 s).
        deadline = time.monotonic() + 15
        while True:
            await page.goto(f"{server.url}/ui/EchoAsync")
            rows = await page.evaluate(
                "[...document.querySelectorAll('#calls tr[data-request-id]')].map(r => r.textContent)"
            )
            if any(question in row for row in rows) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        seen["recent"] = rows
        seen["calls_stat"] = await page.evaluate("document.querySelector('[data-stat=calls]').textContent")
        (ARTIFACTS / "playground-recent-calls.png").write_bytes(await screenshot(page))
    return seen


def test_playground_lists_runs_and_copies_curl(devx_server: Running) -> None:
    binary = chromium_or_skip()
    ARTIFACTS.mkdir(exist_ok=True)
    question = f"What is DSPy? {uuid.uuid4().hex[:8]}"
    seen = asyncio.run(session(devx_server, binary, question))

    index = seen["index"]
    for name in ("EchoAsync", "EchoSync", "Story", "Preferences"):
        assert f'data-program="{name}"' in index
    assert 'href="/ui/EchoAsync"' in index

    assert seen["preferences_state"] == "done"
    assert seen["preferences"] == {
        "name": "Ada", "tone": "fancy", "shout": True, "count": 4, "tags": ["a", "b"], "weights": {"x": 0.5},
    }  # fmt: skip
    assert seen["bad_json_state"] == "error"
    assert seen["bad_json_status"].startswith("tags: not valid JSON")

    assert seen["echo_state"] == "done", seen["echo_status"]
    assert seen["echo"]["answer"] == f"Echo: {question}"
    assert seen["echo"]["reasoning"] == f"Echo: {question}"
    assert seen["echo_status"].startswith("200 in ")

    assert seen["story_state"] == "done"
    assert seen["story"] == {"title": "Echo: owls [delay=200]", "story": "Echo: owls [delay=200]"}

    assert any(question in row for row in seen["recent"]), seen["recent"]
    assert int(seen["calls_stat"]) >= 1

    # The copied command is a working request.
    curl = seen["curl"]
    assert f"{devx_server.url}/EchoAsync" in curl
    ran = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30)
    assert json.loads(ran.stdout)["answer"] == f"Echo: {question}"
    for name in ("playground-index.png", "playground-program.png", "playground-recent-calls.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000


def test_playground_pages_are_browser_paths_and_the_api_stays_json(devx_server: Running) -> None:
    index = httpx.get(f"{devx_server.url}/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "csrftoken" not in index.headers.get("set-cookie", "")  # the list sets no cookie
    page = httpx.get(f"{devx_server.url}/ui/EchoAsync")
    assert "csrftoken" in page.headers.get("set-cookie", "")  # the form page runs Django's CSRF middleware
    assert httpx.get(f"{devx_server.url}/ui/NoSuchProgram").status_code == 404
    # API paths are untouched: JSON, no cookies, no HTML.
    listing = httpx.get(f"{devx_server.url}/programs")
    assert listing.headers["content-type"] == "application/json"
    assert "set-cookie" not in listing.headers
    missing = httpx.post(f"{devx_server.url}/NoSuchProgram", json={})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"


PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
GIF_BYTES = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
WAV_BYTES = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00" * 8


def digest(content: bytes) -> str:
    """How the mock LLM names a base64 part it received: the decoded size and a SHA-256 prefix."""
    return f"{len(content)} bytes sha256 {hashlib.sha256(content).hexdigest()[:16]}"


async def wait_for_preview(page: Page, field: str, count: int, timeout_s: float = 10) -> None:
    """Wait until the field shows ``count`` previews (its files have been read into data: URIs)."""
    shown = f"document.querySelectorAll('#field-{field} [data-preview] figure').length"
    await page.wait_for_function(f"{shown} === {count}", timeout=timeout_s * 1000)


def drop_files(field: str, files: list[tuple[str, str, bytes]]) -> str:
    """A drop of ``files`` (name, media type, content) on the field's drop zone, as a browser sends it."""
    made = ", ".join(
        f"new File([Uint8Array.from(atob('{base64.b64encode(content).decode()}'), c => c.charCodeAt(0))],"
        f" {json.dumps(name)}, {{type: {json.dumps(kind)}}})"
        for name, kind, content in files
    )
    return (
        f"(() => {{ const dt = new DataTransfer(); for (const f of [{made}]) dt.items.add(f);"
        f" document.querySelector('#field-{field} [data-dropzone]')"
        ".dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); })();"
    )


async def media_session(server: Running, binary: str, files: Path, tag: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    run = "document.getElementById('run').click();"
    async with headless_page(binary) as page:
        # An image file chosen with the file picker.
        await page.goto(f"{server.url}/ui/LookAtImage")
        seen["image_widget"] = await page.evaluate(
            "[!!document.getElementById('url-image'), document.getElementById('file-image').accept]"
        )
        await page.set_input_files("#file-image", files / "dot.png")
        await wait_for_preview(page, "image", 1)
        await page.evaluate(set_value("question", f"what colour? {tag}") + run)
        seen["upload_state"] = await wait_for_result(page)
        seen["upload"] = await outputs(page)
        (ARTIFACTS / "playground-image.png").write_bytes(await screenshot(page))

        # A URL typed instead: it replaces the file.
        await page.evaluate(
            "const url = document.getElementById('url-image'); url.value = 'https://example.com/owl.png';"
            "url.dispatchEvent(new Event('input'));" + run
        )
        seen["url_state"] = await wait_for_result(page)
        seen["url"] = await outputs(page)

        # Two images dropped on a list field.
        await page.goto(f"{server.url}/ui/CompareImages")
        await page.evaluate(
            drop_files("images", [("a.png", "image/png", PNG_BYTES), ("b.gif", "image/gif", GIF_BYTES)])
        )
        await wait_for_preview(page, "images", 2)
        await page.evaluate(set_value("question", f"same? {tag}") + run)
        seen["drop_state"] = await wait_for_result(page)
        seen["drop"] = await outputs(page)

        # A recording uploaded.
        await page.goto(f"{server.url}/ui/Transcribe")
        await page.set_input_files("#file-audio", files / "clip.wav")
        await wait_for_preview(page, "audio", 1)
        await page.evaluate(run)
        seen["audio_state"] = await wait_for_result(page)
        seen["audio"] = await outputs(page)
    return seen


def test_playground_sends_uploaded_dropped_and_linked_media(devx_server: Running, tmp_path: Path) -> None:
    binary = chromium_or_skip()
    ARTIFACTS.mkdir(exist_ok=True)
    files = tmp_path / "files"
    files.mkdir()
    (files / "dot.png").write_bytes(PNG_BYTES)
    (files / "clip.wav").write_bytes(WAV_BYTES)
    tag = uuid.uuid4().hex[:8]
    seen = asyncio.run(media_session(devx_server, binary, files, tag))

    assert seen["image_widget"] == [True, "image/*"]
    # The file's exact bytes reached the model as an image part (the mock names what it received).
    assert seen["upload_state"] == "done", seen
    assert seen["upload"] == {
        "answer": f"Echo: [image_url image/png {digest(PNG_BYTES)}]",
        "received": "Image",
    }
    assert seen["url_state"] == "done"
    assert seen["url"]["answer"] == "Echo: [image_url https://example.com/owl.png]"
    assert seen["drop_state"] == "done", seen
    assert json.loads(seen["drop"]["received"]) == ["Image", "Image"]
    assert f"[image_url image/png {digest(PNG_BYTES)}]" in seen["drop"]["answer"]
    assert f"[image_url image/gif {digest(GIF_BYTES)}]" in seen["drop"]["answer"]
    assert seen["audio_state"] == "done", seen
    assert seen["audio"] == {
        "transcript": f"Echo: [input_audio wav {digest(WAV_BYTES)}]",
        "received": "Audio",
    }
    assert (ARTIFACTS / "playground-image.png").stat().st_size > 10_000
