"""Which programs are tools: every one a caller can reach, none that only runs on a schedule."""

import json
from pathlib import Path

import dspy

from mcp_tools.tools import ToolCatalog
from programs.config import load_config
from programs.discovery import Discovery, ProgramSpec
from programs.gateways import IdentityGateway
from programs.runtime import build_runtime
from tests.programs.test_gateways import Nightly  # a CronGateway


class Echo(dspy.Module):
    """Answers with its text."""

    def forward(self, text: str) -> str:
        return text


def test_a_program_reached_only_by_its_cron_job_is_no_tool(tmp_path: Path) -> None:
    config = tmp_path / "dspy.config.yaml"
    mock = {"model": "openai/mock-model", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}  # never called
    config.write_text(json.dumps({"models": {"registry": {"mock": mock}}}))  # JSON is YAML
    declared = {"Digest": (Nightly,), "Both": (Nightly, IdentityGateway), "Plain": ()}  # () = IdentityGateway
    specs = [ProgramSpec(name, Echo, Path(__file__), False, gateways) for name, gateways in declared.items()]
    runtime = build_runtime(load_config(config), Discovery(specs=specs))
    assert [tool.name for tool in ToolCatalog(runtime).listed] == ["Both", "Plain"]
