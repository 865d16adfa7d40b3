"""`routeiq-gateway check-config`, run as an operator runs it: every problem with its key path, warnings, exit 0/1;
and what it says of a missing file, a directory and bytes that are not UTF-8. Then the LiteLLM keys a gateway
honours, seen on a running gateway: an alias answers, environment_variables resolve a key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway, gateway_script
from harness.processes import child_env

pytestmark = pytest.mark.integration


def check_config(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(gateway_script()), "check-config", *(str(a) for a in args)],
        env=child_env(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_good_file_passes_with_its_warnings(tmp_path: Path) -> None:
    config = {
        "model_list": [{"model_name": "a", "litellm_params": {"model": "openai/a", "api_key": "os.environ/KEY_A"}}],
        "general_settings": {"master_key": "sk-12345678", "background_health_checks": True},
    }
    done = check_config(_write(tmp_path / "config.yaml", config), env={"KEY_A": "sk-a"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("warning: general_settings.background_health_checks: ignored")
    assert lines[-1] == f"{tmp_path / 'config.yaml'}: ok"


def test_every_problem_is_printed_with_its_path(tmp_path: Path) -> None:
    config = {
        "model_list": [{"model_name": "a", "litellm_params": {"model": "openai/a"}}],
        "litellm_settings": {"modify_params": True, "callbacks": ["langfuse"]},
        "general_settings": {"custom_auth": "x.y"},
        "vector_store_registry": [],
    }
    done = check_config(_write(tmp_path / "config.yaml", config))
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[2] for e in errors] == [
        "vector_store_registry",
        "litellm_settings.modify_params",
        "litellm_settings.callbacks[0]",
        "general_settings.custom_auth",
    ]
    assert done.stdout.splitlines()[-1].endswith("4 problem(s); a reload would keep the previous config")


def test_a_candidates_file_is_checked_with_the_config(tmp_path: Path) -> None:
    config = {"model_list": [{"model_name": "a", "litellm_params": {"model": "openai/a", "api_key": "k"}}]}
    _write(tmp_path / "config.yaml", config)
    (tmp_path / "llm_candidates.json").write_text('{"b": {"input_price": 1, "output_price": 2, "model": "b"}}')
    done = check_config(tmp_path / "config.yaml")  # found beside the config
    assert done.returncode == 1 and "llm_candidates.json: b.model: model 'b' is not in model_list" in done.stdout


@pytest.mark.parametrize("case", ["missing", "directory", "not-utf8"])
def test_files_that_cannot_be_read_are_said_plainly(tmp_path: Path, case: str) -> None:
    target = tmp_path / "config.yaml"
    if case == "directory":
        target.mkdir()
    elif case == "not-utf8":
        target.write_bytes(b"model_list:\n  - model_name: \xff\xfe\n")
    done = check_config(target)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    expected = {
        "missing": f"{target}: no such file",
        "directory": f"{target}: is a directory",
        "not-utf8": "error: config.yaml: not UTF-8 (byte 28)",  # the 0xff after "model_list:\\n  - model_name: "
    }[case]
    assert expected in done.stdout + done.stderr


def test_a_gateway_serves_an_alias_and_resolves_environment_variables(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini-2024-07-18",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": fresh_upstream.base_url,
                    "api_key": "os.environ/KEY_FROM_THE_FILE",
                },
            }
        ],
        "environment_variables": {"KEY_FROM_THE_FILE": "sk-upstream-from-file"},
        "router_settings": {"model_group_alias": {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}},
        "general_settings": {"master_key": "sk-alias-master"},
    }
    gw = start_gateway(config)  # KEY_FROM_THE_FILE is not in the gateway's environment: only in the file
    client = gw.openai_client("sk-alias-master")
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert {m.id for m in client.models.list()} == {"gpt-4o-mini-2024-07-18", "gpt-4o-mini"}
    sent = fresh_upstream.requests("/v1/chat/completions")[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-from-file"
