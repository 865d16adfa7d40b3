"""Wildcard model names as LiteLLM serves them (`openai/*`, `anthropic/*`, `*`): the requested name fills the
deployment's `*`, on the native and the LiteLLM path; an exact name wins over a pattern, a specific pattern over
`*`; a name no pattern matches is a 404; metrics carry the pattern, not the name."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway
from harness.sidecar_process import parse_metrics
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.routing.wildcards import CACHE_SIZE, WildcardGroups

KEY = "sk-wildcard-master"
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def _dep(name: str, model: str, base: str) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": model, "api_base": base, "api_key": "sk-up"}}


@pytest.mark.integration
def test_wildcards_fill_the_deployment_and_the_most_specific_wins(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    config = {
        "model_list": [
            _dep("openai/*", "openai/*", fresh_upstream.base_url),
            _dep("anthropic/*", "anthropic/*", fresh_upstream.root_url),
            _dep("openai/gpt-4o", "openai/exact-deployment", fresh_upstream.base_url),
        ],
        "general_settings": {"master_key": KEY},
    }
    gw = start_gateway(config)
    client = gw.openai_client(KEY, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-routeiq-provider-path"] == "native" and raw.parse().choices
    assert fresh_upstream.requests("/v1/chat/completions")[-1]["body"]["model"] == "gpt-4o-mini"

    raw = client.chat.completions.with_raw_response.create(model="anthropic/claude-3-haiku-20240307", messages=MESSAGES)
    assert raw.headers["x-routeiq-provider-path"] == "translated" and raw.parse().choices
    assert fresh_upstream.requests("/v1/messages")[-1]["body"]["model"] == "claude-3-haiku-20240307"

    client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)  # the exact name wins
    assert fresh_upstream.requests("/v1/chat/completions")[-1]["body"]["model"] == "exact-deployment"

    with pytest.raises(openai.NotFoundError) as info:  # no pattern matches a bare name here
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.code == "model_not_found"

    text = httpx.get(gw.url("/metrics"), timeout=10).text
    models = {labels.get("model") for name, labels, _ in parse_metrics(text) if name == "routeiq_requests_total"}
    assert {"openai/*", "anthropic/*", "openai/gpt-4o"} <= models
    assert "openai/gpt-4o-mini" not in models  # bounded: the pattern, not every name a client sends


@pytest.mark.integration
def test_a_catch_all_sends_any_name_to_its_provider(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    gw = start_gateway({"model_list": [_dep("*", "openai/*", fresh_upstream.base_url)]})
    gw.openai_client(max_retries=0).chat.completions.create(model="some-new-model", messages=MESSAGES)
    assert fresh_upstream.requests("/v1/chat/completions")[-1]["body"]["model"] == "some-new-model"


def _template(name: str, model: str) -> Deployment:
    return Deployment(name, model, "openai", True, model.split("/", 1)[1], None, None, 1.0, 1.0, (), (), id=name)


def test_specificity_ties_and_a_bounded_cache() -> None:
    groups = WildcardGroups(
        [
            ("*", (_template("*", "openai/*"),)),
            ("openai/*", (_template("openai/*", "openai/*"),)),
            ("openai/gpt-4*", (_template("openai/gpt-4*", "azure/gpt-4*"),)),
        ]
    )
    pattern, deps = groups.resolve("openai/gpt-4o") or (None, ())
    assert pattern is not None and pattern.name == "openai/gpt-4*" and deps[0].litellm_model == "azure/gpt-4o"
    assert deps[0].model_name == "openai/gpt-4o" and deps[0].id != "openai/gpt-4*"
    assert (groups.resolve("openai/o3") or (None,))[0].name == "openai/*"  # type: ignore[union-attr]
    assert (groups.resolve("mistral-large") or (None,))[0].name == "*"  # type: ignore[union-attr]
    for i in range(CACHE_SIZE + 10):
        groups.resolve(f"name-{i}")
    assert len(groups._cache) == CACHE_SIZE
