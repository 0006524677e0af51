"""The versions side by side in a real headless browser (Debian's chromium): the admin dashboard and
the playground show each version's calls, error rate, p50/p95, tokens, cost and feedback scores as
``/api/metrics/{P}`` reports them; the playground calls the version picked (``X-Program-Version``)
and shows the version that answered. Screenshots in test-artifacts/."""

import asyncio
import re
from typing import Any

import httpx
import pytest

from tests.support import ROOT, Running
from tests.telemetry.browser import chromium_or_skip, headless_page, screenshot, submit
from tests.telemetry.conftest import wait_for
from tests.versions.conftest import Served, last_prompt, manage, state_with_demo
from tests.versions.test_versions import ask, put_alias, register

pytestmark = pytest.mark.integration

P = "Optimized"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "versions-browser-password"  # a throwaway superuser in a throwaway database
DASHBOARD = "/admin/telemetry/programstats/"


def cell(html: str, version: str, field: str) -> str:
    """A cell of the versions table in ``html`` (the first table: one program per page here)."""
    match = re.search(rf'data-version="{version}".*?data-field="{field}">(.*?)</td>', html, re.S)
    assert match, (version, field)
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def called(served: Served, admin: dict[str, str], label: str) -> None:
    """Two calls on production (v1), three on ``label`` (one a model error), two judged."""
    request_ids = []
    for index in range(2):
        answer = ask(served, admin, f"browser production {index}")
        request_ids.append(("v1", answer.headers["X-Request-ID"], 1.0))
    for index in range(3):
        fault = " [fault=500]" if index == 2 else ""
        answer = ask(served, admin, f"browser canary {index}{fault}", label)
        if not fault:
            request_ids.append((label, answer.headers["X-Request-ID"], 0.25))

    def judged() -> bool:
        given = [
            httpx.post(f"{served.url}/api/feedback", json={"request_id": rid, "score": score}, headers=admin)
            for _, rid, score in request_ids
        ]
        return all(response.status_code in (200, 201) for response in given)

    wait_for(judged, 20, "the calls to be recorded and judged")


async def browse(served: Served, label: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with headless_page(chromium_or_skip()) as page:
        await page.goto(f"{served.url}/admin/login/?next={DASHBOARD}")
        await submit(
            page,
            "document.getElementById('id_username').value = 'admin';"
            f"document.getElementById('id_password').value = '{PASSWORD}';"
            "document.getElementById('login-form').submit();",
        )
        seen["dashboard"] = await page.content()
        (ARTIFACTS / "versions-dashboard.png").write_bytes(await screenshot(page))

        await page.goto(f"{served.url}/ui/{P}")
        seen["playground"] = await page.content()
        seen["choices"] = await page.evaluate(
            "[...document.querySelectorAll('#version option')].map(o => o.value)"
        )
        await page.select_option("#version", "staging")
        await page.evaluate(
            "document.getElementById('field-question').value = 'picked in the playground';"
            "document.getElementById('run').click();"
        )
        state = "document.getElementById('status').dataset.state"
        await page.wait_for_function(f"['done', 'error'].includes({state})", timeout=30_000)
        seen["state"] = await page.evaluate(state)
        seen["answered"] = await page.evaluate("document.getElementById('answered-version').textContent")
        (ARTIFACTS / "versions-playground.png").write_bytes(await screenshot(page))
    return seen


def test_versions_side_by_side_and_the_playground_picks_one(
    keyed: Served, admin: dict[str, str], mock: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    chromium_or_skip()
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    manage(keyed, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    label = register(keyed, admin, state_with_demo("BROWSER-Q", "BROWSER-A"))
    assert put_alias(keyed, admin, "staging", {"version": label}).status_code == 200
    called(keyed, admin, label)

    def reported() -> dict[str, dict] | None:
        body = httpx.get(f"{keyed.url}/api/metrics/{P}", headers=admin).json()
        versions = {entry["version"]: entry for entry in body["versions"]}
        counts = {v: versions.get(v, {}).get("call_count") for v in ("v1", label)}
        return versions if counts == {"v1": 2, label: 3} else None

    expected = wait_for(reported, 20, "both versions' calls in /api/metrics")
    feedback = httpx.get(f"{keyed.url}/api/metrics/{P}", headers=admin).json()["metrics"]
    ARTIFACTS.mkdir(exist_ok=True)
    seen = asyncio.run(browse(keyed, label))

    assert feedback["feedback_by_version"][label]["thumbs"]["mean"] == 0.25
    for page in (seen["dashboard"], seen["playground"]):
        assert f'data-versions-of="{P}"' in page
        for version in ("v1", label):
            row = expected[version]
            assert cell(page, version, "calls") == str(row["call_count"])
            assert cell(page, version, "error_rate") == f"{row['error_rate'] * 100:.1f}%"
            assert abs(float(cell(page, version, "p95")) - row["p95_latency_ms"]) <= 0.051
            assert cell(page, version, "tokens") == str(row["total_tokens"])
        assert cell(page, "v1", "aliases") == "production" and cell(page, label, "aliases") == "staging"
        assert cell(page, "v1", "feedback") == "thumbs: 1.00 · 2"
        assert cell(page, label, "feedback") == "thumbs: 0.25 · 2"
    assert seen["choices"] == ["", "production", "staging", "v1", label]
    assert seen["state"] == "done" and seen["answered"] == label
    assert "BROWSER-Q" in last_prompt(mock)  # the picked version's demo reached the model
