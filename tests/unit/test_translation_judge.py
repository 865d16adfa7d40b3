"""The translation path's own mappings never outlive what LiteLLM judged them on (translate_litellm.Judge)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.litellm_client import LiteLLMProvider
from routeiq_gateway.providers.translated import TranslatedProvider
from routeiq_gateway.routing.deployments import Deployment, build_deployment
from routeiq_shared.config_schema import ModelEntry, RouterSettings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20}
MODELS = {"anthropic": "anthropic/claude-3-haiku-20240307", "gemini": "gemini/gemini-2.0-flash"}
KEY_HEADER = {"anthropic": "x-api-key", "gemini": "x-goog-api-key"}


@pytest.fixture(scope="module")
def litellm() -> LiteLLMProvider:
    return LiteLLMProvider()


def deployment(provider: str, **params: Any) -> Deployment:
    litellm_params = {"model": MODELS[provider], "api_base": "http://10.0.0.9:8080", **params}
    return build_deployment(
        ModelEntry.model_validate({"model_name": "m", "litellm_params": litellm_params}), RouterSettings()
    )


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_a_rotated_key_reaches_the_upstream_on_the_own_mapping(litellm: LiteLLMProvider, provider: str) -> None:
    translated = TranslatedProvider(Pool(), litellm)
    old = deployment(provider, api_key="sk-old-key-0000")
    for _ in range(2):  # judged, then the own mapping
        assert translated.prepare(old, BODY, False).headers[KEY_HEADER[provider]] == "sk-old-key-0000"
    new = deployment(provider, api_key="sk-new-key-1111")  # a reload: same deployment id, another key
    assert new.id == old.id
    for _ in range(2):
        assert translated.prepare(new, BODY, False).headers[KEY_HEADER[provider]] == "sk-new-key-1111"
    headered = deployment(provider, api_key="sk-new-key-1111", extra_headers={"x-team": "red"})
    assert translated.prepare(headered, BODY, False).headers["x-team"] == "red"


def test_a_reload_forgets_the_judged_heads(litellm: LiteLLMProvider) -> None:
    translated = TranslatedProvider(Pool(), litellm)
    dep = deployment("anthropic", api_key="sk-kept-out-2222")
    translated.prepare(dep, BODY, False)
    judge = translated._for(dep).judge  # type: ignore[attr-defined]
    assert "sk-kept-out-2222" in repr(judge.requests)
    translated.reloaded()
    assert "sk-kept-out-2222" not in repr(judge.requests)
