"""The admin dashboard in a real headless browser (Debian's chromium), screenshots in test-artifacts/."""

import asyncio
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase
from tests.support import ROOT
from tests.telemetry.browser import chromium_or_skip, headless_page, screenshot, submit
from tests.telemetry.conftest import metrics, total_calls, wait_for

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "dashboard-test-password"  # a throwaway superuser in a throwaway database
DASHBOARD = "/admin/telemetry/programstats/"


def manage(database: ServerDatabase, *args: str) -> str:
    env = {**os.environ, **database.env(), "DJANGO_SUPERUSER_PASSWORD": PASSWORD, "LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout


async def browse(url: str, binary: str) -> tuple[dict[str, str], dict[str, bytes]]:
    pages: dict[str, str] = {}
    shots: dict[str, bytes] = {}
    async with headless_page(binary) as page:
        await page.goto(f"{url}/admin/login/?next={DASHBOARD}")
        await submit(
            page,
            "document.getElementById('id_username').value = 'admin';"
            f"document.getElementById('id_password').value = '{PASSWORD}';"
            "document.getElementById('login-form').submit();",
        )
        for window in ("hour", "week"):
            if window != "hour":
                await page.goto(f"{url}{DASHBOARD}?window={window}")
            pages[window] = await page.content()
            shots[window] = await screenshot(page)
        await page.goto(f"{url}/admin/telemetry/inferencelog/?q=live-2")
        pages["log"] = await page.content()
    return pages, shots


def cell(html: str, program: str, field: str) -> str:
    match = re.search(rf'data-program="{program}".*?data-field="{field}">([^<]*)<', html, re.S)
    assert match, (program, field)
    return match.group(1).strip()


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_dashboard_shows_every_program_and_the_shape_over_time(
    database: ServerDatabase, start_server: Any
) -> None:
    binary = chromium_or_skip()
    manage(database, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    manage(database, "shell", "-c", "from tests.telemetry.factories import seed_week; seed_week()")
    with start_server(database) as server:
        seeded = total_calls(server)
        for i in range(4):
            question = {"question": f"live {i} [usage=120,30]" + (" [fault=500]" if i == 3 else "")}
            headers = {"X-Request-ID": f"live-{i}"}
            httpx.post(f"{server.url}/EchoAsync", json=question, headers=headers, timeout=30)
        wait_for(lambda: total_calls(server) == seeded + 4, 30, "the live requests in the aggregates")
        expected = {entry["program"]: entry for entry in metrics(server)["programs"]}
        pages, shots = asyncio.run(browse(server.url, binary))
    ARTIFACTS.mkdir(exist_ok=True)
    for window, png in shots.items():
        (ARTIFACTS / f"telemetry-dashboard-{window}.png").write_bytes(png)

    hour, week = pages["hour"], pages["week"]
    assert 'id="login-form"' not in hour and "Program stats" in hour  # logged in, on the dashboard
    for program in ("EchoAsync", "EchoSync", "Summarize"):
        assert cell(hour, program, "calls") == str(expected[program]["call_count"])
        assert abs(float(cell(hour, program, "p95")) - expected[program]["p95_latency_ms"]) <= 0.51
    assert cell(hour, "EchoAsync", "error_rate").endswith("%")
    for html in (hour, week):
        for chart in ("requests", "errors", "p95", "tokens"):
            assert f'data-chart="{chart}"' in html, chart
        assert 'data-model="openai/gpt-4o-mini"' in html and 'data-model="openai/mock-model"' in html
    # A week of history draws a line per program in every over-time chart.
    assert len(re.findall(r'<g data-series="EchoAsync"><title>EchoAsync</title><polyline', week)) == 3
    assert 'class="selected" data-window="week"' in week
    assert "live-2" in pages["log"] and "live-1" not in pages["log"]  # search by request id

    for window in ("hour", "week"):
        shot = ARTIFACTS / f"telemetry-dashboard-{window}.png"
        width, height = png_size(shot)
        assert width == 1400 and height > 800, (window, width, height)
