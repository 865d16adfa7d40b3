"""The response cache's parts on their own: what the key keeps and drops, the LRU's bounds, the request controls,
the stored entry's format, and what litellm_settings.cache / cache_params become (or why they are refused)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from routeiq_gateway.cache.controls import Controls, plan_for, take_controls
from routeiq_gateway.cache.entry import Entry, decode, encode
from routeiq_gateway.cache.key import cache_key, normalised, tenant_of
from routeiq_gateway.cache.lru import LocalLRU
from routeiq_gateway.cache.policy import CachePolicy
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.multipart import Upload
from routeiq_gateway.state import build_state
from routeiq_gateway.tenancy.records import Limits, Team, VirtualKey
from routeiq_shared.config_schema import CacheParams, ConfigError, LiteLLMSettings, load_config
from routeiq_shared.litellm_compat import CACHE_PARAMS, LITELLM_SETTINGS

BODY = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "max_tokens": 20}


def key(body: dict[str, Any], tenant: str = "team:a", group: str = "fast", stream: bool = False, **kw: Any) -> str:
    return cache_key(kw.get("namespace", ""), tenant, group, kw.get("endpoint", "chat/completions"), stream, body)


# --- the key -------------------------------------------------------------------------------------------------


def test_the_key_ignores_what_does_not_change_the_answer() -> None:
    base = key(BODY)
    same = [
        dict(reversed(list(BODY.items()))),  # field order
        {**BODY, "user": "alice", "metadata": {"trace": "x"}},  # who asks, and their labels
        {**BODY, "model": "an-alias"},  # the resolved group is in the key instead
        {**BODY, "temperature": 0.5, "max_tokens": 20.0},  # an integral float written as a float
        {**BODY, "stream_options": {"include_usage": True}},  # not a stream: no usage event to differ
        {**BODY, "cache": {"ttl": 5}},
    ]
    assert all(key(b) == base for b in same)
    nested = {**BODY, "response_format": {"type": "json_schema", "json_schema": {"b": 1, "a": 2}}}
    reordered = {**BODY, "response_format": {"json_schema": {"a": 2, "b": 1}, "type": "json_schema"}}
    assert key(nested) == key(reordered)  # keys sorted at every level


def test_the_key_keeps_everything_else_apart() -> None:
    base = key(BODY)
    different = [
        key({**BODY, "temperature": 0.7}),
        key({**BODY, "messages": [{"role": "user", "content": "hi!"}]}),
        key({**BODY, "seed": 1}),
        key(BODY, tenant="team:b"),
        key(BODY, group="smart"),
        key(BODY, endpoint="completions"),
        key(BODY, stream=True),
        key({**BODY, "stream_options": {"include_usage": True}}, stream=True),
        key(BODY, namespace="ns"),
    ]
    assert len({base, *different}) == len(different) + 1
    assert key({**BODY, "stream_options": {"include_usage": False}}, stream=True) == key(BODY, stream=True)


def test_the_key_is_hash_tagged_and_namespaced() -> None:
    plain, spaced = key(BODY), key(BODY, namespace="prod.v1")
    assert plain.startswith("routeiq:cache:{") and plain.endswith("}") and plain.count("{") == 1
    assert spaced.startswith("prod.v1:routeiq:cache:{")
    assert "team:a" not in plain and "hi" not in plain  # only a digest: no tenant, no prompt in Redis's key names


def test_tenants() -> None:
    red = Team("red", None, frozenset(), Limits(), 0.0)
    team_key = VirtualKey("k1", None, red, frozenset(), Limits(), 0.0, None, False)
    lone_key = VirtualKey("k2", None, None, frozenset(), Limits(), 0.0, None, False)
    assert tenant_of(team_key, b"sk-1") == "team:red"
    assert tenant_of(lone_key, b"sk-2") == "key:k2"
    assert tenant_of(None, b"sk-master") == "master"
    assert tenant_of(None, None) == "open"


def test_uploads_count_by_digest_and_unencodable_bodies_are_refused() -> None:
    a = {"model": "whisper", "file": Upload("a.wav", "audio/wav", b"\x00\x01")}
    b = {"model": "whisper", "file": Upload("a.wav", "audio/wav", b"\x00\x02")}
    assert normalised(a) != normalised(b) and b"\\u0000" not in normalised(a)
    with pytest.raises(ValueError):
        normalised({"model": "m", "seed": 2**70})  # past 64 bits: no canonical form, not cached


# --- the LRU -------------------------------------------------------------------------------------------------


def test_the_lru_is_bounded_by_entries_and_bytes_least_recently_used_first() -> None:
    lru = LocalLRU(max_entries=3, max_bytes=100)
    for name in "abc":
        assert lru.put(name, b"x" * 10, ttl=60, now=0)
    assert lru.get("a", now=1) == b"x" * 10  # a is now the most recent
    lru.put("d", b"y" * 10, ttl=60, now=1)
    assert len(lru) == 3 and lru.get("b", now=1) is None and lru.get("a", now=1) is not None
    lru.put("big", b"z" * 80, ttl=60, now=2)  # 30 + 80 > 100: the least recent go until it fits
    assert lru.bytes <= 100 and lru.get("big", now=2) is not None
    assert not lru.put("huge", b"z" * 101, ttl=60, now=2)  # alone over the bound: not kept
    assert lru.get("huge", now=2) is None and lru.bytes <= 100
    lru.resize(max_entries=1, max_bytes=100)
    assert len(lru) == 1 and lru.get("big", now=2) is not None


def test_the_lru_expires_entries_and_counts_bytes_exactly() -> None:
    lru = LocalLRU(max_entries=10, max_bytes=1000)
    lru.put("a", b"12345", ttl=5, now=100)
    lru.put("a", b"123", ttl=5, now=100)  # replaced, not counted twice
    assert lru.bytes == 3
    assert lru.get("a", now=104.9) == b"123"
    assert lru.get("a", now=105) is None and lru.bytes == 0 and len(lru) == 0


# --- controls ------------------------------------------------------------------------------------------------


def test_controls_are_taken_off_the_body() -> None:
    body = {**BODY, "cache": {"no-cache": True, "ttl": 30, "s-maxage": 10, "namespace": "x"}}
    controls = take_controls(body, None)
    assert "cache" not in body
    assert controls == Controls(no_cache=True, ttl=30.0, max_age=10.0, namespace="x")
    assert take_controls({"cache": {"s-max-age": 3}}, None).max_age == 3.0
    assert take_controls({}, b"no-transform, s-maxage=42").ttl == 42.0  # LiteLLM's header: the entry's ttl
    assert take_controls({"cache": {"ttl": 5}}, b"s-maxage=42").ttl == 5.0  # the body wins


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([], "cache"),
        ({"no-store": 1}, "cache.no-store"),
        ({"ttl": 0}, "cache.ttl"),
        ({"ttl": float("inf")}, "cache.ttl"),
        ({"ttl": True}, "cache.ttl"),
        ({"s-maxage": "10"}, "cache.s-maxage"),
        ({"namespace": ""}, "cache.namespace"),
        ({"no_cache": True}, "cache.no_cache"),
    ],
)
def test_bad_controls_are_400_naming_the_field(raw: Any, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        take_controls({"cache": raw}, None)
    assert info.value.status == 400 and info.value.param == param


def test_the_plan_of_a_request() -> None:
    on = CachePolicy(enabled=True, endpoints=frozenset({"chat/completions"}), ttl=600, max_ttl=3600, namespace="n")
    plan = plan_for(on, "chat/completions", Controls())
    assert plan is not None and (plan.read, plan.write, plan.ttl, plan.namespace) == (True, True, 600, "n")
    assert plan_for(on, "embeddings", Controls()) is None  # not a supported call type
    assert plan_for(CachePolicy(), "chat/completions", Controls()) is None  # cache off
    assert plan_for(on, "chat/completions", Controls(no_cache=True, no_store=True)) is None
    no_store = plan_for(on, "chat/completions", Controls(no_store=True, ttl=5, namespace="other"))
    assert no_store is not None and (no_store.read, no_store.write, no_store.ttl, no_store.namespace) == (
        True,
        False,
        5,
        "other",
    )
    off = CachePolicy(enabled=True, default_on=False, endpoints=frozenset({"chat/completions"}))
    assert plan_for(off, "chat/completions", Controls()) is None
    assert plan_for(off, "chat/completions", Controls(use_cache=True)) is not None
    with pytest.raises(GatewayError) as info:
        plan_for(on, "chat/completions", Controls(ttl=3601))
    assert info.value.param == "cache.ttl"


# --- entries -------------------------------------------------------------------------------------------------


def test_entries_round_trip_and_garbage_is_a_miss() -> None:
    entry = Entry(True, b"text/event-stream", "fast", 1234.5, b"data: {}\n\ndata: [DONE]\n\n")
    assert decode(encode(entry)) == entry
    raw = encode(entry)
    for bad in (b"", b"RQC1", b"hello world", raw[:6], b"RQC1" + (5).to_bytes(4, "big") + b"{nope"):
        assert decode(bad) is None


# --- config --------------------------------------------------------------------------------------------------

MODEL = {"model_name": "fast", "litellm_params": {"model": "openai/fast", "api_key": "sk-x"}}


def policy(litellm: dict[str, Any], **routeiq: Any) -> CachePolicy:
    raw = yaml.safe_dump({"model_list": [MODEL], "litellm_settings": litellm, "routeiq": {"cache": routeiq}})
    return build_state(load_config(raw.encode(), None, {}), 0).cache


def test_cache_params_become_the_policy() -> None:
    assert not policy({}).enabled and not policy({"cache": False, "cache_params": {"type": "local"}}).enabled
    on = policy({"cache": True})
    assert on.enabled and on.store == "redis" and on.default_on and on.ttl == 600  # LiteLLM's proxy default: redis
    assert on.endpoints == {"chat/completions", "completions", "embeddings", "audio/transcriptions", "rerank",
                            "responses"}  # fmt: skip
    local = policy(
        {"cache": True, "cache_params": {"type": "local", "ttl": 30, "default_in_memory_ttl": 9, "mode": "default_off"}}
    )
    assert (local.store, local.ttl, local.default_on) == ("local", 9, False)  # LiteLLM: the store's own ttl wins
    redis = policy({"cache": True, "cache_params": {"ttl": 30, "default_in_memory_ttl": 9, "namespace": "a.b"}})
    assert (redis.ttl, redis.namespace) == (30, "a.b")
    some = policy({"cache": True, "cache_params": {"supported_call_types": ["acompletion", "aembedding"]}})
    assert some.endpoints == {"chat/completions", "embeddings"}
    assert not policy({"cache": True, "cache_params": {"supported_call_types": []}}).enabled  # LiteLLM: caches nothing
    bounds = policy({"cache": True}, max_entry_bytes=2048, local_max_entries=7, local_max_bytes=2 * 1024 * 1024)
    assert (bounds.max_entry_bytes, bounds.local_max_entries, bounds.local_max_bytes) == (2048, 7, 2 * 1024 * 1024)
    timeouts = policy({"cache": True, "cache_params": {"socket_timeout": 0.02, "max_connections": 8}})
    assert (timeouts.redis_timeout, timeouts.max_connections) == (0.02, 8)


def test_cache_params_refused_with_their_paths() -> None:
    params = {"type": "s3", "s3_bucket_name": "b", "host": "redis.local", "ttl": 5}
    with pytest.raises(ConfigError) as info:
        policy({"cache": True, "cache_params": params})
    problems = dict(info.value.problems)
    assert set(problems) == {
        "litellm_settings.cache_params.type",
        "litellm_settings.cache_params.s3_bucket_name",
        "litellm_settings.cache_params.host",
    }
    assert "an S3 response cache" in problems["litellm_settings.cache_params.type"]
    assert "REDIS_URL" in problems["litellm_settings.cache_params.host"]
    for bad, path in (
        ({"type": "memcached"}, "litellm_settings.cache_params.type"),
        ({"mode": "sometimes"}, "litellm_settings.cache_params.mode"),
        ({"ttl": -1}, "litellm_settings.cache_params.ttl"),
        ({"supported_call_types": ["acompletion", "aimage"]}, "litellm_settings.cache_params.supported_call_types[1]"),
        ({"namespace": "a}b"}, "litellm_settings.cache_params.namespace"),
        ({"socket_timeout": 60}, "litellm_settings.cache_params.socket_timeout"),
        ({"tll": 5}, "litellm_settings.cache_params.tll"),
    ):
        with pytest.raises(ConfigError) as info:
            policy({"cache": True, "cache_params": bad})
        assert info.value.path == path, info.value.problems
    with pytest.raises(ConfigError) as info:
        policy({"cache": "sometimes"})
    assert info.value.path == "litellm_settings.cache"
    for semantic in ("redis-semantic", "qdrant-semantic", "disk", "gcs"):
        with pytest.raises(ConfigError) as info:
            policy({"cache": True, "cache_params": {"type": semantic}})
        assert info.value.path == "litellm_settings.cache_params.type"
        assert info.value.message.startswith("a LiteLLM feature RouteIQ does not support")


def test_the_compatibility_tables_are_the_schema() -> None:
    """Every cache_params key the schema reads is honoured in the table, and every honoured key is read."""
    assert set(CacheParams.model_fields) == {k for k, v in CACHE_PARAMS.items() if v.status == "honoured"}
    honoured = {k for k, v in LITELLM_SETTINGS.items() if v.status == "honoured"}
    assert set(LiteLLMSettings.model_fields) == honoured
