"""Config loading: one clear line naming the file and the key, env overrides, .env, aliases."""

from pathlib import Path

import pytest

from programs.config import ConfigError, ModelEntry, load_config, resolve_api_key

VALID = """
app_id: t
models:
  default: m
  registry:
    m:
      model: openai/x
      api_base: http://127.0.0.1:1/v1
      env: TEST_CONFIG_KEY
      custom_flag: 7
program_models:
  P: m
server:
  sync_worker_threads: 8
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dspy.config.yaml"
    path.write_text(text)
    return path


def test_valid_config_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSPY_SYNC_WORKER_THREADS", raising=False)
    config = load_config(write(tmp_path, VALID)).config
    assert config.server.sync_worker_threads == 8
    assert config.server.request_timeout_s == 120
    assert config.alias_for("P") == "m"
    assert config.alias_for("Other") == "m"
    entry = config.models.registry["m"]
    assert entry.cache is False
    assert entry.lm_kwargs() == {"custom_flag": 7}


def test_env_overrides_server_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_SYNC_WORKER_THREADS", "64")
    monkeypatch.setenv("DSPY_REQUEST_TIMEOUT_S", "2.5")
    config = load_config(write(tmp_path, VALID)).config
    assert config.server.sync_worker_threads == 64
    assert config.server.request_timeout_s == 2.5


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID.replace("sync_worker_threads: 8", "sync_worker_threads: lots"), "server.sync_worker_threads"),
        (VALID.replace("sync_worker_threads: 8", "sync_workers: 8"), "server.sync_workers"),
        (VALID.replace("default: m", "default: nope"), "models.default"),
        (VALID.replace("P: m", "P: ghost"), "program_models.P"),
        (VALID.replace("model: openai/x", "temperature: 0.1"), "models.registry.m.model"),
        ("app_id: only\n", "models"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert key in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 3"):
        load_config(write(tmp_path, "models:\n  default: m\n    registry: bad indent\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_dotenv_fills_but_does_not_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_CONFIG_KEY", raising=False)
    monkeypatch.setenv("TEST_CONFIG_OTHER", "from-environment")
    (tmp_path / ".env").write_text("TEST_CONFIG_KEY=from-dotenv\nTEST_CONFIG_OTHER=from-dotenv\n")
    loaded = load_config(write(tmp_path, VALID))
    entry = loaded.config.models.registry["m"]
    assert resolve_api_key("m", entry, loaded.path) == "from-dotenv"
    import os

    assert os.environ["TEST_CONFIG_OTHER"] == "from-environment"
    monkeypatch.delenv("TEST_CONFIG_KEY")


def test_missing_key_variable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    entry = ModelEntry(model="openai/x", env="NOT_SET_ANYWHERE")
    with pytest.raises(ConfigError, match=r"models\.registry\.m\.env: environment variable NOT_SET_ANYWHERE"):
        resolve_api_key("m", entry, tmp_path / "dspy.config.yaml")
