"""LiteLLM config keys: honoured, mapped, warned or refused (all at once), as shared/routeiq_shared/litellm_compat.py
says, and its tables in step with the schema and with docs/litellm-compatibility.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import (
    ConfigError,
    GeneralSettings,
    RouterSettings,
    check_config_report,
    load_config,
)
from routeiq_shared.litellm_compat import GENERAL_SETTINGS, ROUTER_SETTINGS, TOP_LEVEL, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "litellm-compatibility.md"


def _model(name: str, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_key": "sk-x", **params}}


def _load(config: dict[str, Any], env: dict[str, str] | None = None):
    return load_config(yaml.safe_dump(config).encode(), None, env or {})


def test_every_unsupported_litellm_key_is_named_in_one_error():
    config = {
        "model_list": [_model("a")],
        "guardrails": [{"guardrail_name": "x"}],
        "litellm_settings": {"modify_params": True, "success_callback": ["langfuse", "prometheus"], "num_retries": 3},
        "general_settings": {"custom_auth": "m.f", "enable_jwt_auth": True, "master_key": "sk-12345678"},
        "router_settings": {"enable_tag_filtering": True, "redis_host": "r"},
    }
    with pytest.raises(ConfigError) as info:
        _load(config)
    paths = [p for p, _ in info.value.problems]
    assert paths == [
        "guardrails",
        "litellm_settings.modify_params",
        "litellm_settings.success_callback[0]",
        "general_settings.custom_auth",
        "general_settings.enable_jwt_auth",
        "router_settings.enable_tag_filtering",
        "router_settings.redis_host",
    ]
    assert all("a LiteLLM feature RouteIQ does not support" in m for _, m in info.value.problems)
    assert "'langfuse' callback" in str(info.value) and "custom auth" in str(info.value)


def test_schema_errors_are_all_reported_too():
    config = {"model_list": [_model("a")], "router_settings": {"num_retries": "x", "timeout": -1}, "typo": 1}
    with pytest.raises(ConfigError) as info:
        _load(config)
    assert [p for p, _ in info.value.problems] == ["router_settings.num_retries", "router_settings.timeout", "typo"]


def test_operational_keys_are_dropped_with_one_warning_each():
    config = {
        "model_list": [_model("a")],
        "litellm_settings": {"set_verbose": True, "callbacks": ["otel"]},
        "general_settings": {"background_health_checks": True, "health_check_interval": 300},
    }
    raw = yaml.safe_dump(config).encode()
    _, warnings = check_config_report(raw)
    assert [w.split(":")[0] for w in warnings] == [  # in the file's order (safe_dump sorts keys)
        "litellm_settings.callbacks[0]",
        "litellm_settings.set_verbose",
        "general_settings.background_health_checks",
        "general_settings.health_check_interval",
    ]
    assert all(": ignored: " in w for w in warnings)
    assert _load(config).warnings == tuple(warnings)


def test_litellm_settings_are_mapped_where_routeiq_reads_them_and_router_settings_win():
    config = {
        "model_list": [_model("a"), _model("b"), _model("c")],
        "litellm_settings": {
            "num_retries": 5,
            "request_timeout": 12,
            "drop_params": True,
            "default_fallbacks": ["c"],
            "fallbacks": [{"a": ["b"]}],
        },
        "router_settings": {"timeout": 30},
        "general_settings": {"max_request_size_mb": 2, "global_max_parallel_requests": 77},
    }
    loaded = _load(config)
    cfg = loaded.config
    assert cfg.router_settings.num_retries == 5
    assert cfg.router_settings.timeout == 30  # router_settings wins, and says so
    assert any(w.startswith("litellm_settings.request_timeout: ignored") for w in loaded.warnings)
    assert cfg.router_settings.fallbacks == [{"a": ["b"]}, {"b": ["c"]}]  # c is the default fallback itself
    assert all(m.litellm_params.model_extra == {"drop_params": True} for m in cfg.model_list)
    assert cfg.routeiq.limits.max_request_body_bytes == 2 * 1024 * 1024
    assert cfg.routeiq.limits.max_in_flight == 77


def test_empty_sections_and_entry_level_rpm():
    raw = b"model_list:\n  - model_name: a\n    rpm: 60\n    litellm_params: {model: openai/a, api_key: k}\n"
    raw += b"general_settings:\nrouter_settings:\nlitellm_settings:\n"
    cfg = load_config(raw, None, {}).config
    assert cfg.model_list[0].litellm_params.rpm == 60
    assert cfg.general_settings.master_key is None


def test_environment_variables_resolve_references_and_must_be_scalars():
    config = {
        "model_list": [_model("a", api_key="os.environ/FROM_FILE")],
        "environment_variables": {"FROM_FILE": "sk-from-file", "PORT": 6379, "EMPTY": None, "FLAG": True},
    }
    loaded = _load(config)
    assert loaded.config.model_list[0].litellm_params.api_key == "sk-from-file"
    assert loaded.config.environment_variables == {
        "FROM_FILE": "sk-from-file",
        "PORT": "6379",
        "EMPTY": "",
        "FLAG": "True",
    }
    assert build_state(loaded, 0).environment["PORT"] == "6379"
    config["environment_variables"] = {"A": ["x"], "B": {"c": 1}}
    with pytest.raises(ConfigError) as info:
        _load(config)
    assert [p for p, _ in info.value.problems] == ["environment_variables.A", "environment_variables.B"]


def test_model_group_alias_serves_the_group_and_hidden_aliases_are_not_listed():
    config = {
        "model_list": [_model("claude-3-haiku-20240307")],
        "router_settings": {
            "model_group_alias": {
                "claude-3-haiku": "claude-3-haiku-20240307",
                "haiku-internal": {"model": "claude-3-haiku-20240307", "hidden": True},
            }
        },
    }
    state = build_state(_load(config), 0)
    assert state.groups["claude-3-haiku"] == state.groups["claude-3-haiku-20240307"]
    assert state.groups["haiku-internal"] == state.groups["claude-3-haiku-20240307"]
    assert b'"claude-3-haiku"' in state.models_payload and b"haiku-internal" not in state.models_payload
    config["router_settings"]["model_group_alias"] = {"x": "nope"}
    with pytest.raises(ConfigError, match="model 'nope' is not in model_list") as info:
        _load(config)
    assert info.value.path == "router_settings.model_group_alias.x"


def test_the_tables_cover_the_schema():
    """Every section field RouteIQ reads is a honoured key of its table, and every honoured key is read."""
    for model, table in ((RouterSettings, ROUTER_SETTINGS), (GeneralSettings, GENERAL_SETTINGS)):
        honoured = {k for k, v in table.items() if v.status == "honoured"}
        assert set(model.model_fields) == honoured, model.__name__
    top = {k for k, v in TOP_LEVEL.items() if v.status == "honoured"}
    from routeiq_shared.config_schema import GatewayConfig

    assert set(GatewayConfig.model_fields) == top
    for table in (ROUTER_SETTINGS, GENERAL_SETTINGS, TOP_LEVEL):
        assert not any(k.status == "honoured" and k.note == "" for k in table.values())


def test_the_compatibility_page_is_generated_from_the_tables():
    text = DOC.read_text()
    assert text.startswith(render_markdown()), "run `python -m routeiq_shared.litellm_compat`"
