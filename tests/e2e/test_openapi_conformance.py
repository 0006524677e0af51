"""The OpenAPI document is the contract: every answer of every operation must be one it states.

Schemathesis (its CLI, with tests/e2e/schemathesis.toml) generates requests for every
operation of the real server, valid and invalid ones (coverage and fuzzing phases, deterministic,
a bounded number per operation), and checks each answer against /openapi.json: its status is
documented, its content type, headers and body (each Server-Sent Event of the streams too) match.
The served project is tests/fixtures/contract_project: one program per kind of schema.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import ServerDatabase, server_database
from tests.support import FIXTURES, ROOT, Running, project_config, service

pytestmark = pytest.mark.integration

CONTRACT_PROJECT = FIXTURES / "contract_project"
SETTINGS = Path(__file__).with_name("schemathesis.toml")
# Live events (/api/events) flow while the run goes on: the writer commits every 0.2 s.
ENV = {"TELEMETRY_FLUSH_INTERVAL_S": "0.2"}


@pytest.fixture(scope="module")
def contract_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract")


@pytest.fixture(scope="module")
def contract_server(contract_tmp: Path, mock: Running) -> Iterator[Running]:
    config = project_config(CONTRACT_PROJECT, contract_tmp, mock.url)
    with (
        server_database(contract_tmp) as database,
        service(contract_tmp, CONTRACT_PROJECT, config, **database.env(), **ENV) as running,
    ):
        yield running


def schemathesis(server: Running, *options: str) -> None:
    """Run schemathesis over every operation of ``server``; fail with its report."""
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(SETTINGS)]
    done = subprocess.run(
        [*command, "run", f"{server.url}/openapi.json", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "Tested: " in report and "passed" in report, report


def test_every_answer_is_one_the_document_states(contract_server: Running) -> None:
    schemathesis(contract_server)


def test_the_document_states_each_status_once(contract_server: Running) -> None:
    """A JSON object with a key twice reads as its last value: a status declared twice (``200`` and
    ``"200"``) would silently lose what the first declaration said."""
    text = httpx.get(f"{contract_server.url}/openapi.json").text
    json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), sorted(key for key in keys if keys.count(key) > 1)
    return dict(pairs)


def test_with_api_keys_on_401_is_documented_where_it_is_answered(contract_tmp: Path, mock: Running) -> None:
    """``server.auth``: with a valid key every route works as documented; without one (schemathesis's
    ``ignored_auth`` check sends no key and a wrong one), the 401 must be documented too."""
    config = project_config(CONTRACT_PROJECT, contract_tmp, mock.url, server={"auth": True})
    with server_database(contract_tmp) as database:
        key = create_api_key(database)
        with service(contract_tmp, CONTRACT_PROJECT, config, **database.env(), **ENV) as keyed:
            schemathesis(keyed, "--header", f"Authorization: Bearer {key}", "--phases", "fuzzing", "-n", "1")


def create_api_key(database: ServerDatabase) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", "contract"],
        cwd=ROOT,
        env={**os.environ, **database.env(), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
