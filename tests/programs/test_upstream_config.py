"""The upstream policy keys of a registry entry: validated into one line, never passed to dspy.LM."""

from pathlib import Path

import pytest

from programs.config import ConfigError, fallback_chain, load_config

CONFIG = """
models:
  default: judge
  registry:
    judge:
      model: openai/judge-model
      api_base: http://127.0.0.1:9998/v1
      rpm: 600
      tpm: 200000
      num_retries: 2
      circuit_breaker: {failures: 5, cooldown_s: 10}
      fallbacks: [backup]
      input_cost_per_1m_tokens: 0.15
      output_cost_per_1m_tokens: 0.60
      custom_flag: 7
    backup:
      model: openai/backup-model
      fallbacks: [last]
    last:
      model: openai/last-model
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "dspy.config.yaml"
    path.write_text(text)
    return load_config(path).config


def test_policy_keys_are_fields_not_lm_arguments(tmp_path: Path) -> None:
    config = load(tmp_path, CONFIG)
    judge = config.models.registry["judge"]  # type: ignore[attr-defined]
    assert (judge.rpm, judge.tpm, judge.num_retries) == (600, 200000, 2)
    assert (judge.circuit_breaker.failures, judge.circuit_breaker.cooldown_s) == (5, 10)
    assert (judge.input_cost_per_1m_tokens, judge.output_cost_per_1m_tokens) == (0.15, 0.60)
    assert judge.lm_kwargs() == {"custom_flag": 7}
    # A fallback's own fallbacks follow it, depth first.
    assert fallback_chain(config.models.registry, "judge") == ["backup", "last"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("fallbacks: [backup]", "fallbacks: [ghost]"),
            "judge.fallbacks: unknown model alias 'ghost'",
        ),
        (("fallbacks: [last]", "fallbacks: [judge]"), "fallbacks: cycle judge -> backup -> judge"),
        (("fallbacks: [backup]", "fallbacks: [judge]"), "fallbacks: cycle judge -> judge"),
        (("rpm: 600", "rpm: -1"), "models.registry.judge.rpm"),
        (("tpm: 200000", "tpm: 0"), "models.registry.judge.tpm"),
        (("num_retries: 2", "num_retries: -2"), "models.registry.judge.num_retries"),
        (("failures: 5", "failures: 0"), "models.registry.judge.circuit_breaker.failures"),
        (("cooldown_s: 10", "cooldown_s: -1"), "models.registry.judge.circuit_breaker.cooldown_s"),
        (("cooldown_s: 10}", "cooldown_s: 10, after: 3}"), "models.registry.judge.circuit_breaker.after"),
        (("input_cost_per_1m_tokens: 0.15", "input_cost_per_1m_tokens: -0.15"), "input_cost_per_1m_tokens"),
    ],
)
def test_bad_policy_is_one_config_error_line(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, CONFIG.replace(*change))
    text = str(caught.value)
    assert "\n" not in text
    assert message in text
