"""`os.file/PATH` secrets: read through a Secret volume's symlinks at every load, refused (naming the key and the
file, never the content) when missing, empty, oversized, not text, with a control character, or outside the
allowed directories — and their syntax checked where the file cannot be read (config-sync)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from harness.secret_volume import SecretVolume
from routeiq_shared.config_schema import ConfigError, check_config, load_config
from routeiq_shared.secret_files import (
    DEFAULT_SECRET_DIRS,
    MAX_SECRET_FILE_BYTES,
    SECRET_DIRS_ENV,
    SecretFileError,
    read_secret_file,
    secret_dirs,
)

SECRET = "sk-file-secret-0123456789"
KEY_PATH = "model_list[0].litellm_params.api_key"


def _config(api_key: str, extra: str = "") -> bytes:
    return textwrap.dedent(
        f"""
        model_list:
          - model_name: fast
            litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:1/v1", api_key: "{api_key}"}}
        {extra}
        """
    ).encode()


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    vol = SecretVolume(tmp_path / "secrets" / "provider-keys")
    vol.write({"OPENAI_API_KEY": f"{SECRET}\n".encode()})
    return vol


def _env(tmp_path: Path) -> dict[str, str]:
    return {SECRET_DIRS_ENV: str(tmp_path / "secrets")}


def _refusal(raw: bytes, env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(raw, None, env)
    return info.value


def test_a_secret_volume_key_is_read_at_every_load_through_its_symlinks(volume: SecretVolume, tmp_path: Path) -> None:
    raw = _config(volume.ref("OPENAI_API_KEY"))
    loaded = load_config(raw, None, _env(tmp_path))
    assert loaded.config.model_list[0].litellm_params.api_key == SECRET
    assert loaded.secret_files == (str(volume.path("OPENAI_API_KEY")),)
    volume.write({"OPENAI_API_KEY": b"sk-rotated\r\n"})  # the kubelet's swap of ..data; CRLF is one newline too
    assert load_config(raw, None, _env(tmp_path)).config.model_list[0].litellm_params.api_key == "sk-rotated"


def test_both_spellings_of_the_path_and_any_string_field_resolve(volume: SecretVolume, tmp_path: Path) -> None:
    (volume.root.parent / "base").write_text("http://127.0.0.1:2/v1\n")
    doubled = f"os.file/{volume.path('OPENAI_API_KEY')}"  # os.file//tmp/… reads the same file
    raw = _config(doubled).replace(b'"http://127.0.0.1:1/v1"', f"os.file{volume.root.parent}/base".encode())
    params = load_config(raw, None, _env(tmp_path)).config.model_list[0].litellm_params
    assert (params.api_key, params.api_base) == (SECRET, "http://127.0.0.1:2/v1")


def test_the_master_key_can_be_a_file(volume: SecretVolume, tmp_path: Path) -> None:
    raw = _config("sk-literal", f"general_settings: {{master_key: {volume.ref('OPENAI_API_KEY')}}}")
    assert load_config(raw, None, _env(tmp_path)).config.general_settings.master_key == SECRET


def _write(volume: SecretVolume, content: bytes) -> None:
    volume.write({"OPENAI_API_KEY": content})


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"sk-a\nX-Injected: 1", "control character"),
        (b"sk-a\n\n", "control character"),  # only one trailing newline is dropped
        (b"sk-a\tb", "control character"),
        (b"sk-a\x00b", "control character"),
        (b"sk-a\x7fb", "control character"),
        ("sk-a\x85b".encode(), "control character"),  # C1 (NEL)
        (b"sk-\xff\xfe", "not UTF-8"),
        (b"s" * (MAX_SECRET_FILE_BYTES + 1), f"larger than {MAX_SECRET_FILE_BYTES} bytes"),
    ],
)
def test_a_file_that_cannot_be_a_header_value_is_refused_without_echoing_it(
    volume: SecretVolume, tmp_path: Path, content: bytes, says: str
) -> None:
    _write(volume, content)
    error = _refusal(_config(volume.ref("OPENAI_API_KEY")), _env(tmp_path))
    assert error.path == KEY_PATH
    assert says in error.message and str(volume.path("OPENAI_API_KEY")) in error.message
    if len(content) > 3:
        assert content.decode("utf-8", "replace").strip()[:4] not in str(error).replace(str(tmp_path), "")


def test_the_largest_allowed_file_loads(volume: SecretVolume, tmp_path: Path) -> None:
    _write(volume, b"s" * MAX_SECRET_FILE_BYTES)
    loaded = load_config(_config(volume.ref("OPENAI_API_KEY")), None, _env(tmp_path))
    assert loaded.config.model_list[0].litellm_params.api_key == "s" * MAX_SECRET_FILE_BYTES


def test_a_missing_file_a_directory_and_a_fifo_are_refused(volume: SecretVolume, tmp_path: Path) -> None:
    missing = _refusal(_config(volume.ref("NOT_THERE")), _env(tmp_path))
    assert missing.path == KEY_PATH and "cannot be read: No such file or directory" in missing.message
    assert "is not a regular file" in _refusal(_config(f"os.file{volume.root}"), _env(tmp_path)).message
    os.mkfifo(volume.root / "fifo")  # opened without blocking, then refused: no writer would ever come
    assert "is not a regular file" in _refusal(_config(volume.ref("fifo")), _env(tmp_path)).message


@pytest.mark.parametrize("target", ["/etc/shadow", "/proc/self/environ", "/etc/passwd"])
def test_files_outside_the_allowed_directories_are_refused_before_being_opened(
    volume: SecretVolume, tmp_path: Path, target: str
) -> None:
    error = _refusal(_config(f"os.file{target}"), _env(tmp_path))
    assert error.path == KEY_PATH
    assert f"{target} is outside the secret directories" in error.message and SECRET_DIRS_ENV in error.message


def test_a_symlink_out_of_the_secret_volume_is_refused(volume: SecretVolume, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_text("sk-not-a-secret-to-share\n")
    os.symlink(outside, volume.root / "ESCAPE")
    error = _refusal(_config(volume.ref("ESCAPE")), _env(tmp_path))
    assert "is outside the secret directories" in error.message
    assert "sk-not-a-secret" not in str(error)


def test_the_default_directories_do_not_include_the_service_account_token() -> None:
    dirs = secret_dirs({})
    assert dirs == tuple(os.path.realpath(d) for d in DEFAULT_SECRET_DIRS)
    token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    with pytest.raises(SecretFileError, match="outside the secret directories"):
        read_secret_file(token, dirs)


@pytest.mark.parametrize("value", ["/", "relative/dir", "/proc", "/proc/self", "/sys/kernel", "/dev", "/a:/dev/shm"])
def test_secret_dirs_that_would_open_system_files_are_refused(value: str, volume: SecretVolume) -> None:
    error = _refusal(_config(volume.ref("OPENAI_API_KEY")), {SECRET_DIRS_ENV: value})
    assert error.path == KEY_PATH and SECRET_DIRS_ENV in error.message


def test_a_bad_secret_dirs_setting_does_not_fail_a_config_without_file_refs() -> None:
    assert load_config(_config("sk-literal"), None, {SECRET_DIRS_ENV: "/"}).config


def test_several_secret_dirs_are_colon_separated(volume: SecretVolume, tmp_path: Path) -> None:
    env = {SECRET_DIRS_ENV: f"/etc/routeiq/secrets:{volume.root}"}
    assert load_config(_config(volume.ref("OPENAI_API_KEY")), None, env).config


def test_a_config_cannot_widen_the_secret_dirs_itself(volume: SecretVolume) -> None:
    raw = _config(volume.ref("OPENAI_API_KEY"), f"environment_variables: {{{SECRET_DIRS_ENV}: /}}")
    with pytest.raises(ConfigError) as info:
        check_config(raw)  # refused by config-sync too, before any gateway sets it in its environment
    assert info.value.path == f"environment_variables.{SECRET_DIRS_ENV}"


def test_config_sync_checks_the_syntax_without_the_file() -> None:
    assert check_config(_config("os.file/var/run/secrets/routeiq/ONLY_IN_THE_GATEWAY"))


@pytest.mark.parametrize(
    "ref",
    ["os.file/", "os.file//", "os.file/a/../etc/shadow", "os.file/a/./b", "os.file/a//b", "os.file/a/", "os.file/a\tb"],
)
def test_a_malformed_file_reference_is_refused_by_the_structural_check(ref: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(_config(ref.replace("\t", "\\t")))
    assert info.value.path == KEY_PATH and "os.file/ABSOLUTE/PATH" in info.value.message
