"""router_settings.allowed_fails / cooldown_time / disable_cooldowns (LiteLLM's keys): a deployment failing more
than allowed_fails times in a minute sits out cooldown_time seconds while the group's other deployment serves;
with cooldowns disabled it keeps being tried. On the native path and on the LiteLLM path."""

from __future__ import annotations

from typing import Any

import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway

pytestmark = pytest.mark.integration

KEY = "sk-cooldown-master"


def _config(upstream: FakeUpstream, provider: str, **router: Any) -> dict[str, Any]:
    base = upstream.base_url if provider == "openai" else upstream.root_url

    def dep(model: str) -> dict[str, Any]:
        return {"model_name": "g", "litellm_params": {"model": f"{provider}/{model}", "api_base": base, "api_key": "k"}}

    return {
        "model_list": [dep("broken"), dep("healthy")],
        "router_settings": {"num_retries": 1, "retry_after": 0, **router},
        "general_settings": {"master_key": KEY},
    }


def _broken_calls(upstream: FakeUpstream) -> int:
    return sum(1 for r in upstream.requests() if (r.get("body") or {}).get("model") == "broken")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_failing_deployment_sits_out_its_cooldown(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, provider: str
) -> None:
    fresh_upstream.add_rule(model="broken", status=500)
    gw = start_gateway(_config(fresh_upstream, provider, allowed_fails=1, cooldown_time=60))
    client = gw.openai_client(KEY, max_retries=0)
    for _ in range(20):  # every request is answered: the healthy deployment serves, first or on the retry
        assert client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}]).choices
    # more than allowed_fails (1) failures cool it down: 2 calls reach it, then none for the minute
    assert _broken_calls(fresh_upstream) == 2


def test_with_cooldowns_disabled_a_failing_deployment_keeps_being_tried(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    fresh_upstream.add_rule(model="broken", status=500)
    gw = start_gateway(_config(fresh_upstream, "openai", allowed_fails=1, cooldown_time=60, disable_cooldowns=True))
    client = gw.openai_client(KEY, max_retries=0)
    for _ in range(20):
        client.chat.completions.create(model="g", messages=[{"role": "user", "content": "hi"}])
    assert _broken_calls(fresh_upstream) > 2  # simple-shuffle puts it first about half the time
