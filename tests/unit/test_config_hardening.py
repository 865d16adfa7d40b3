"""Hostile and unlucky configs (issue 7): alias bombs, empty secrets, header-breaking keys, URLs that cannot work.
Every one is a ConfigError naming the key's path, never a pydantic error, a hang, or the secret's value."""

from __future__ import annotations

import textwrap
import time

import pytest
from routeiq_shared.config_schema import ConfigError, check_config, load_config

BASE = textwrap.dedent(
    """
    model_list:
      - model_name: fast
        litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:1/v1", api_key: os.environ/KEY_A}
    general_settings: {master_key: os.environ/MASTER}
    """
).encode()
ENV = {"KEY_A": "sk-secret-a", "MASTER": "sk-master-key"}


def _laughs(levels: int, fanout: int) -> bytes:
    """The billion-laughs shape, where the schema takes anything (model_info): each anchor a list of `fanout`
    aliases of the one before. 7 levels (421 bytes) took 1.7 s before the bound, and each level is 9 times more."""
    lines = ["model_list:", "  - model_name: fast", "    litellm_params: {model: openai/x}", "    model_info:"]
    lines.append('      a0: &a0 ["lol"]')
    for i in range(1, levels):
        lines.append(f"      a{i}: &a{i} [{','.join(f'*a{i - 1}' for _ in range(fanout))}]")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(("levels", "fanout"), [(7, 9), (10, 9), (11, 9)])
def test_yaml_alias_bomb_is_refused_fast(levels: int, fanout: int) -> None:
    raw = _laughs(levels, fanout)
    assert len(raw) < 700  # the size of the 568- and 629-byte files
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        check_config(raw)
    assert time.monotonic() - started < 1.0
    assert "alias" in info.value.message


def test_anchors_used_a_few_times_still_load() -> None:
    raw = textwrap.dedent(
        """
        x-params: &params {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:1/v1", api_key: os.environ/KEY_A}
        model_list:
          - {model_name: a, litellm_params: *params}
          - {model_name: b, litellm_params: *params}
        """
    ).encode()
    # the x- key is unknown: the point is only that the aliases themselves are not what is refused
    with pytest.raises(ConfigError) as info:
        check_config(raw)
    assert info.value.message == "unknown key"


def test_recursive_alias_is_refused() -> None:
    raw = b"model_list:\n  - {model_name: m, litellm_params: {model: x}, model_info: {a: &a [*a]}}\n"
    with pytest.raises(ConfigError) as info:
        check_config(raw)
    assert "alias" in info.value.message


def test_env_reference_resolving_to_empty_in_a_required_field_names_the_key() -> None:
    raw = BASE.replace(b"model: openai/gpt-4o-mini", b"model: os.environ/MODEL")
    with pytest.raises(ConfigError) as info:
        load_config(raw, None, {**ENV, "MODEL": ""})
    assert info.value.path == "model_list[0].litellm_params.model"


@pytest.mark.parametrize("key", ["", "short"])
def test_empty_or_short_master_key_is_refused_after_resolution(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE, None, {**ENV, "MASTER": key})
    assert info.value.path == "general_settings.master_key"
    assert "8" in info.value.message


def test_literal_empty_master_key_is_refused_by_the_structural_check() -> None:
    with pytest.raises(ConfigError) as info:
        check_config(BASE.replace(b"os.environ/MASTER", b'""'))
    assert info.value.path == "general_settings.master_key"


def test_no_master_key_at_all_still_loads() -> None:
    loaded = load_config(BASE.replace(b"general_settings: {master_key: os.environ/MASTER}\n", b""), None, ENV)
    assert loaded.config.general_settings.master_key is None


@pytest.mark.parametrize(
    ("secret", "expected"),
    [("sk-secret-a\n", "sk-secret-a"), ("sk-secret-a\r\n", "sk-secret-a"), ("sk-secret-a", "sk-secret-a")],
)
def test_one_trailing_newline_of_a_file_mounted_secret_is_stripped(secret: str, expected: str) -> None:
    loaded = load_config(BASE, None, {**ENV, "KEY_A": secret})
    assert loaded.config.model_list[0].litellm_params.api_key == expected


@pytest.mark.parametrize("secret", ["sk-a\r\nx-injected: 1", "sk-a\n\n", "sk-\x00a", "sk-a\x7f", "sk-a\tb\x1b"])
def test_control_characters_in_a_provider_key_are_refused_without_echo(secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE, None, {**ENV, "KEY_A": secret})
    assert info.value.path == "model_list[0].litellm_params.api_key"
    assert "control character" in info.value.message
    assert "sk-a" not in str(info.value) and "sk-" not in str(info.value)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ('{model: openai/x, organization: "org\\r\\nx: y"}', "model_list[0].litellm_params.organization"),
        ('{model: openai/x, extra_headers: {x-team: "a\\nb"}}', "model_list[0].litellm_params.extra_headers.x-team"),
        ('{model: openai/x, headers: {"x-a\\nb": "v"}}', "model_list[0].litellm_params.headers"),
        ('{model: openai/x, aws_secret_access_key: "k\\r\\n"}', "model_list[0].litellm_params.aws_secret_access_key"),
    ],
)
def test_control_characters_in_any_outbound_header_value_are_refused(params: str, path: str) -> None:
    raw = f"model_list:\n  - model_name: fast\n    litellm_params: {params}\n".encode()
    with pytest.raises(ConfigError) as info:
        check_config(raw)
    assert info.value.path == path
    assert "control character" in info.value.message


def test_non_latin1_api_key_is_refused_without_echo() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE, None, {**ENV, "KEY_A": "sk-ключ"})
    assert info.value.path == "model_list[0].litellm_params.api_key"
    assert "Latin-1" in info.value.message
    assert "ключ" not in str(info.value)


@pytest.mark.parametrize(
    "api_base",
    [
        "ftp://example.com/v1",
        "example.com/v1",
        "http:///v1",
        "unix:///var/run/llm.sock",
        "the openai one",
        "http://169.254.169.254/latest",
        "http://2852039166/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/",
        "http://api.example.com/v1\\r\\nx-injected: 1",
        "http://api.exa\\tmple.com/v1",
    ],
)
def test_api_base_that_cannot_work_or_is_forbidden_is_refused(api_base: str) -> None:
    raw = BASE.replace(b'"http://127.0.0.1:1/v1"', f'"{api_base}"'.encode())
    with pytest.raises(ConfigError) as info:
        check_config(raw)
    assert info.value.path == "model_list[0].litellm_params.api_base"


def test_api_base_from_the_environment_is_checked_once_resolved() -> None:
    raw = BASE.replace(b'"http://127.0.0.1:1/v1"', b"os.environ/BASE")
    check_config(raw)  # the agent cannot know the value
    with pytest.raises(ConfigError) as info:
        load_config(raw, None, {**ENV, "BASE": "ftp://x/"})
    assert info.value.path == "model_list[0].litellm_params.api_base"
    assert load_config(raw, None, {**ENV, "BASE": "https://api.example.com/v1\n"}).config.model_list[
        0
    ].litellm_params.api_base == ("https://api.example.com/v1")


@pytest.mark.parametrize("ref", ["os.environ/", "os.environ/1ABC", "os.environ/A-B", "os.environ/A B"])
def test_malformed_env_reference_is_refused_by_the_structural_check(ref: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(BASE.replace(b"os.environ/KEY_A", f'"{ref}"'.encode()))
    assert info.value.path == "model_list[0].litellm_params.api_key"
    assert "os.environ/NAME" in info.value.message


def test_structural_check_does_not_need_the_secrets() -> None:
    # a secret mounted only in the gateway's container: the agent accepts the file
    assert check_config(BASE) == load_config(BASE, None, ENV).version


def test_egress_allowed_networks_are_validated() -> None:
    good = BASE + b"routeiq: {egress: {allowed_networks: [10.0.0.0/8, 'fd00::/8']}}\n"
    assert load_config(good, None, ENV).config.routeiq.egress.allowed_networks == ["10.0.0.0/8", "fd00::/8"]
    with pytest.raises(ConfigError) as info:
        check_config(BASE + b"routeiq: {egress: {allowed_networks: [10.0.0.0/8, not-a-net]}}\n")
    assert info.value.path == "routeiq.egress.allowed_networks[1]"
