"""dspy-cli's gateway API as user modules see it: the import alias, declarations and default paths."""

import importlib
import logging
import sys

import dspy
import pytest

from programs import gateways
from programs.gateways import APIGateway, CronGateway, IdentityGateway, declared_gateways, route_path


def test_dspy_cli_gateway_import_resolves_to_the_same_classes() -> None:
    gateways.install_import_alias()
    module = importlib.import_module("dspy_cli.gateway")
    assert module.APIGateway is APIGateway and module.CronGateway is CronGateway
    assert {"Gateway", "IdentityGateway", "PipelineInputs", "PipelineOutput"} <= set(dir(module))
    assert sys.modules["dspy_cli"].gateway is module


class Hook(APIGateway):
    pass


class Nightly(CronGateway):
    schedule = "0 3 * * *"

    async def get_pipeline_inputs(self) -> list[dict]:
        return []

    async def on_complete(self, inputs: dict, output: dict) -> None:
        return None


def test_declarations_single_list_and_none() -> None:
    class Single(dspy.Module):
        gateway = Hook

    class Several(dspy.Module):
        gateway = [Nightly, IdentityGateway]

    class Nothing(dspy.Module):
        pass

    assert declared_gateways(Single) == (Hook,)
    assert declared_gateways(Several) == (Nightly, IdentityGateway)
    assert declared_gateways(Nothing) == (IdentityGateway,)


def test_an_entry_that_is_not_a_gateway_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Odd(dspy.Module):
        gateway = [Hook, "not a gateway"]

    with caplog.at_level(logging.WARNING, logger="programs.gateways"):
        assert declared_gateways(Odd) == (Hook,)
    assert "Odd.gateway: 'not a gateway' is not a Gateway subclass" in caplog.text


def test_default_paths_follow_dspy_cli() -> None:
    class Explicit(APIGateway):
        path = "/v2/analyze"

    assert route_path("Summarize", IdentityGateway()) == "/Summarize"
    assert route_path("Summarize", Hook()) == "/Summarize/Hook"
    assert route_path("Summarize", Explicit()) == "/v2/analyze"


def test_default_hooks_pass_inputs_through_and_strip_private_keys() -> None:
    assert APIGateway().to_pipeline_inputs({"q": 1}) == {"q": 1}
    assert CronGateway.extract_pipeline_kwargs({"q": 1, "_meta": {"id": 2}}) == {"q": 1}
