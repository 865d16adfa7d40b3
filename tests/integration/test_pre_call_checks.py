"""router_settings.enable_pre_call_checks: a request too long for a deployment's context window skips it (the
group's larger deployment answers); too long for all of them is OpenAI's 400 context_length_exceeded, with no
upstream call; off, the small deployment is called as before."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway

pytestmark = pytest.mark.integration

KEY = "sk-precall-master"


def _config(upstream: FakeUpstream, checks: bool) -> dict[str, Any]:
    def dep(model: str, window: int) -> dict[str, Any]:
        return {
            "model_name": "g",
            "litellm_params": {"model": f"openai/{model}", "api_base": upstream.base_url, "api_key": "k"},
            "model_info": {"max_input_tokens": window},
        }

    return {
        "model_list": [dep("small", 100), dep("large", 1000)],
        "router_settings": {"num_retries": 0, "enable_pre_call_checks": checks},
        "general_settings": {"master_key": KEY},
    }


def _ask(client: openai.OpenAI, words: int) -> None:
    client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hello " * words}])


def test_a_request_goes_only_where_it_fits(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    client = start_gateway(_config(fresh_upstream, checks=True)).openai_client(KEY, max_retries=0)
    for _ in range(10):
        _ask(client, 300)  # ~300 tokens: over the small window
    models = [r["body"]["model"] for r in fresh_upstream.requests("/v1/chat/completions")]
    assert models == ["large"] * 10

    fresh_upstream.clear_requests()
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, 3000)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert "maximum context length is 1000 tokens" in info.value.message
    assert fresh_upstream.requests("/v1/chat/completions") == []


def test_without_the_check_the_small_deployment_is_called(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    client = start_gateway(_config(fresh_upstream, checks=False)).openai_client(KEY, max_retries=0)
    for _ in range(20):
        _ask(client, 300)
    models = {r["body"]["model"] for r in fresh_upstream.requests("/v1/chat/completions")}
    assert models == {"small", "large"}
