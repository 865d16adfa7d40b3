"""The shared config schema: what it accepts, what it rejects, and that every rejection names the key's path."""

from __future__ import annotations

import textwrap

import orjson
import pytest
from routeiq_shared.config_schema import ConfigError, load_config, parse_candidates
from routeiq_shared.schema_gen import SCHEMA_DIR, render, schemas

GOOD = textwrap.dedent(
    """
    model_list:
      - model_name: fast
        litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:1/v1", api_key: os.environ/KEY_A}
      - model_name: smart
        litellm_params: {model: anthropic/claude-3-haiku, api_key: os.environ/KEY_B, max_tokens_cap: 5}
    router_settings: {num_retries: 1, timeout: 5, fallbacks: [{fast: [smart]}]}
    general_settings: {master_key: sk-master-1}
    routeiq: {limits: {max_in_flight: 10}}
    """
).encode()
ENV = {"KEY_A": "secret-a", "KEY_B": "secret-b"}


def test_good_config_loads_with_secrets_resolved() -> None:
    loaded = load_config(GOOD, None, ENV)
    cfg = loaded.config
    assert [m.model_name for m in cfg.model_list] == ["fast", "smart"]
    assert cfg.model_list[0].litellm_params.api_key == "secret-a"
    # Provider-specific keys pass through to LiteLLM untouched.
    assert cfg.model_list[1].litellm_params.model_extra == {"max_tokens_cap": 5}
    assert cfg.router_settings.fallbacks == [{"fast": ["smart"]}]
    assert cfg.routeiq.limits.max_in_flight == 10
    assert len(loaded.version) == 12


def test_version_changes_with_content_and_only_with_content() -> None:
    assert load_config(GOOD, None, ENV).version == load_config(GOOD, None, ENV).version
    assert load_config(GOOD + b"\n# edited\n", None, ENV).version != load_config(GOOD, None, ENV).version


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        (GOOD.replace(b"num_retries", b"num_retrys"), "router_settings.num_retrys", "unknown key"),
        (GOOD.replace(b"max_in_flight: 10", b"max_in_flight: -1"), "routeiq.limits.max_in_flight", "greater"),
        (GOOD.replace(b"model_name: smart", b"modelname: smart"), "model_list[1].model_name", "required"),
        (GOOD.replace(b"{model: openai/gpt-4o-mini,", b"{"), "model_list[0].litellm_params.model", "required"),
        (GOOD + b"database_url: x\n", "database_url", "unknown key"),
        (GOOD.replace(b"timeout: 5", b"timeout: soon"), "router_settings.timeout", "number"),
    ],
)
def test_schema_violations_name_the_key(raw: bytes, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(raw, None, ENV)
    assert info.value.path == path
    assert fragment in info.value.message
    assert path in str(info.value)


def test_unset_environment_variable_is_named_not_leaked() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(GOOD, None, {"KEY_A": "secret-a"})
    assert info.value.path == "model_list[1].litellm_params.api_key"
    assert "KEY_B" in info.value.message
    assert "secret-a" not in str(info.value)


def test_fallback_to_unknown_model_is_rejected() -> None:
    raw = GOOD.replace(b"[{fast: [smart]}]", b"[{fast: [nope]}]")
    with pytest.raises(ConfigError) as info:
        load_config(raw, None, ENV)
    assert info.value.path == "router_settings.fallbacks[0].fast[0]"
    assert "'nope'" in info.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"model_list: [\n  - {", "YAML syntax error at line"),
        (b"", "empty file"),
        (b"- just\n- a list\n", "top level must be a mapping"),
        (b"\xff\xfe model_list", "not UTF-8"),
    ],
)
def test_unparseable_files_are_rejected(raw: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(raw, None, ENV)


def test_candidates_are_checked_against_model_list() -> None:
    good = orjson.dumps({"fast": {"input_price": 0.1, "output_price": 0.2, "model": "fast"}})
    assert load_config(GOOD, good, ENV).candidates["fast"].input_price == 0.1
    bad = orjson.dumps({"ghost": {"input_price": 0.1, "output_price": 0.2, "model": "ghost"}})
    with pytest.raises(ConfigError) as info:
        load_config(GOOD, bad, ENV)
    assert (info.value.source, info.value.path) == ("llm_candidates.json", "ghost.model")


def test_candidate_field_errors_name_the_candidate() -> None:
    with pytest.raises(ConfigError) as info:
        parse_candidates(orjson.dumps({"fast": {"input_price": -1, "output_price": 0.2, "model": "fast"}}))
    assert info.value.path == "fast.input_price"


def test_checked_in_json_schema_matches_the_models() -> None:
    for name, schema in schemas().items():
        assert (SCHEMA_DIR / name).read_bytes() == render(schema), (
            f"{name} is stale: run `python -m routeiq_shared.schema_gen`"
        )
