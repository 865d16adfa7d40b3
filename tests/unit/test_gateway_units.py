"""Gateway pieces that need no process: auth, body checks, the retry/fallback plan, backoff, state building."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import orjson
import pytest
from routeiq_gateway.admin.principals import AdminAuth
from routeiq_gateway.admission import auth
from routeiq_gateway.admission.validate import check_chat, check_completion, check_embedding, parse_json_object
from routeiq_gateway.dispatch.dispatcher import MAX_BACKOFF_SECONDS, attempt_plan, backoff_seconds
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import load_config

CONFIG = b"""
model_list:
  - {model_name: a, litellm_params: {model: openai/a1, api_base: "http://127.0.0.1:1/v1", api_key: k1}}
  - {model_name: a, litellm_params: {model: hosted_vllm/a2, api_base: "http://127.0.0.1:2/v1"}}
  - {model_name: b, litellm_params: {model: anthropic/b1, api_key: k2, temperature_default: 0.1}}
router_settings: {num_retries: 2, fallbacks: [{a: [b]}]}
general_settings: {master_key: sk-master}
"""


def state():
    return build_state(load_config(CONFIG, None, {}), created=0)


def test_state_splits_native_and_litellm_deployments() -> None:
    s = state()
    a1, a2 = s.groups["a"]
    (b1,) = s.groups["b"]
    assert (a1.native, a1.upstream_model, a1.url("chat/completions")) == (
        True,
        "a1",
        "http://127.0.0.1:1/v1/chat/completions",
    )
    assert ("authorization", "Bearer k1") in a1.headers
    assert a2.native and a2.upstream_model == "a2"
    assert not b1.native and b1.litellm_model == "anthropic/b1"
    assert dict(b1.extra_params) == {"temperature_default": 0.1}
    assert s.uses_litellm
    assert s.master_key == b"sk-master"
    assert orjson.loads(s.models_payload)["data"][1]["id"] == "b"


def test_attempt_plan_retries_within_group_then_falls_back() -> None:
    plan = attempt_plan(state(), "a", random.Random(1))
    names = [d.model_name for d in plan]
    assert names == ["a", "a", "a", "b", "b", "b"]
    # Retries rotate through the group's deployments rather than hammering one.
    assert {d.upstream_model for d in plan[:2]} == {"a1", "a2"}


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(7)
    first = [backoff_seconds(0.1, 1, rng) for _ in range(200)]
    assert min(first) >= 0.0 and max(first) <= 0.1 and len(set(first)) > 100
    third = [backoff_seconds(0.1, 3, rng) for _ in range(200)]
    assert min(third) >= 0.0 and max(third) <= 0.4
    assert max(backoff_seconds(1.0, 20, rng) for _ in range(50)) <= MAX_BACKOFF_SECONDS


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "ok"),
    [
        (b"Bearer sk-master", None, True),
        (b"bearer sk-master", None, True),
        (None, b"sk-master", True),
        (b"Bearer sk-wrong", None, False),
        (b"Basic sk-master", None, False),
        (None, None, False),
        (b"Bearer sk-maste", None, False),
    ],
)
def test_master_key_check(authorization: bytes | None, x_api_key: bytes | None, ok: bool) -> None:
    if ok:
        auth.check_key(b"sk-master", authorization, x_api_key)
    else:
        with pytest.raises(GatewayError) as info:
            auth.check_key(b"sk-master", authorization, x_api_key)
        assert info.value.status == 401
        assert b"sk-master" not in info.value.body()


def test_admin_api_is_closed_without_keys() -> None:
    def scope(authorization: bytes) -> dict[str, Any]:
        return {"headers": [(b"authorization", authorization)]}

    with pytest.raises(GatewayError) as info:
        asyncio.run(AdminAuth(()).authenticate(scope(b"Bearer anything")))
    assert info.value.status == 403
    principal = asyncio.run(AdminAuth((b"k1", b"k2")).authenticate(scope(b"Bearer k2")))
    # which key (a digest prefix), never the key
    assert principal.role == "admin" and principal.subject == "admin_key:" + hashlib.sha256(b"k2").hexdigest()[:12]


@pytest.mark.parametrize(
    ("body", "check", "status", "param"),
    [
        ({"model": "a"}, check_chat, 400, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, check_chat, 400, "model"),
        ({"model": "a", "messages": "hi"}, check_chat, 400, "messages"),
        ({"model": "a", "messages": []}, check_chat, 400, "messages"),
        ({"model": "a", "messages": [{"content": "x"}]}, check_chat, 400, "messages[0].role"),
        ({"model": "a", "messages": [{"role": "user"}], "stream": "yes"}, check_chat, 400, "stream"),
        ({"model": "a", "messages": [{"role": "user"}], "max_tokens": 0}, check_chat, 400, "max_tokens"),
        ({"model": "a", "messages": [{"role": "user"}], "temperature": "hot"}, check_chat, 400, "temperature"),
        ({"model": 5, "messages": [{"role": "user"}]}, check_chat, 400, "model"),
        ({"model": "a"}, check_completion, 400, "prompt"),
        ({"model": "a", "input": ""}, check_embedding, 400, "input"),
        ({"model": "a", "input": "x", "stream": True}, check_embedding, 400, "stream"),
    ],
)
def test_body_checks_name_the_field(body: dict, check, status: int, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        check(body)
    assert (info.value.status, info.value.param) == (status, param)


def test_valid_bodies_pass() -> None:
    assert check_chat({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": True}) == ("a", True)
    assert check_completion({"model": "a", "prompt": "x"}) == ("a", False)
    assert check_embedding({"model": "a", "input": ["x", "y"]}) == ("a", False)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff"])
def test_unparseable_bodies_are_400(raw: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        parse_json_object(raw)
    assert info.value.status == 400


def test_loading_litellm_freezes_the_heap_it_brought() -> None:
    """A full GC walking LiteLLM's ~280k module objects took 135 ms: once loaded they are frozen (gc.freeze)."""
    import gc

    from routeiq_gateway.lifecycle import server
    from routeiq_shared.egress import EgressPolicy

    gc.unfreeze()
    server._litellm_provider(EgressPolicy())
    assert gc.get_freeze_count() > 100_000
