"""Config: typed, env-interpolated, and every mistake named by its dotted path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, default_config, interpolate_env, load_config, parse_config


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_unknown_key_is_named_by_its_dotted_path() -> None:
    data = {"models": {"gpt-4o": {"deployments": [{"provider": "openai", "model": "gpt-4o", "api_bse": "x"}]}}}
    assert _error(data) == "models.gpt-4o.deployments[0].api_bse: unknown key"


def test_missing_field_and_bad_type_are_named() -> None:
    assert _error({"models": {"m": {"deployments": [{"provider": "openai"}]}}}) == (
        "models.m.deployments[0].model: Field required"
    )
    message = _error({"server": {"port": "eighty"}})
    assert message.startswith("server.port: ")


def test_unknown_provider_lists_the_choices() -> None:
    message = _error({"models": {"m": {"deployments": [{"provider": "openia", "model": "x"}]}}})
    assert message.startswith("models.m.deployments[0].provider: Input should be 'sim', 'local', 'openai'")


def test_openai_compat_needs_api_base_and_fallbacks_must_exist() -> None:
    assert "provider openai_compat needs api_base" in _error(
        {"models": {"m": {"deployments": [{"provider": "openai_compat", "model": "x"}]}}}
    )
    message = _error({"models": {"m": {"deployments": [{"provider": "sim", "model": "x"}], "fallbacks": ["nope"]}}})
    assert "models.m.fallbacks[0]: unknown model alias 'nope'" in message


def test_a_routed_alias_refuses_fallbacks_of_its_own() -> None:
    sim = {"deployments": [{"provider": "sim", "model": "x"}]}
    routed = {"route": {"candidates": ["strong", "weak"]}, "fallbacks": ["spare"]}
    message = _error({"models": {"strong": sim, "weak": sim, "spare": sim, "auto": routed}})
    assert "models.auto: " in message
    assert "give 'route' or 'fallbacks', not both" in message
    # The candidates' own fallbacks still apply, after the strongest's deployments.
    config = parse_config(
        {"models": {"strong": {**sim, "fallbacks": ["spare"]}, "weak": sim, "spare": sim,
                    "auto": {"route": {"candidates": ["strong", "weak"]}}}}
    )  # fmt: skip
    assert config.models["auto"].fallbacks == ["spare", "weak"]


def test_wildcard_model_only_under_a_wildcard_alias() -> None:
    message = _error({"models": {"m": {"deployments": [{"provider": "sim", "model": "*"}]}}})
    assert "'*' is only allowed under an alias ending in '/*'" in message


def test_env_interpolation_with_defaults_and_missing_variables() -> None:
    assert interpolate_env("key: ${A} base: ${B:-http://x}", {"A": "secret"}) == "key: secret base: http://x"
    with pytest.raises(ConfigError, match="environment variable\\(s\\) not set: MISSING"):
        interpolate_env("key: ${MISSING}", {})


def test_load_config_reads_yaml_and_the_master_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream")
    monkeypatch.setenv("TOLLGATE_MASTER_KEY", "tg-master")
    path = tmp_path / "c.yaml"
    path.write_text(
        "models:\n  gpt-4o:\n    deployments:\n      - {provider: openai, model: gpt-4o, api_key: '${UPSTREAM_KEY}'}\n"
    )
    config = load_config(path)
    assert config.models["gpt-4o"].deployments[0].resolved_api_key() == "sk-upstream"
    assert config.server.master_key == "tg-master"
    assert config.models["gpt-4o"].deployments[0].resolved_api_base() == "https://api.openai.com/v1"


def test_invalid_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_default_config_serves_sim_and_providers_whose_key_is_set() -> None:
    assert list(default_config({}).models) == ["sim/*"]
    config = default_config({"OPENAI_API_KEY": "sk", "ANTHROPIC_API_KEY": "sk-ant"})
    assert list(config.models) == ["sim/*", "openai/*", "anthropic/*"]
    assert config.models["anthropic/*"].deployments[0].resolved_api_key() is None  # read at call time
    assert config.models["openai/*"].deployments[0].api_key_env == "OPENAI_API_KEY"


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  m:\n    deployments: [{provider: sim, model: gpt-4o}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  backend: postgres\n")
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok (1 model aliases, store: sqlite)" in ok.stdout
    fail = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(bad)], capture_output=True, text=True)
    assert fail.returncode == 2
    assert "store.backend: Input should be 'memory', 'sqlite' or 'redis'" in fail.stderr
