"""The response cache end to end: real gateway processes, a real redis-server (and PostgreSQL for teams), the fake
upstream, the openai SDK. Miss then hit with one upstream call, streams replayed as streams, the per-request
controls, tenants that never share, Redis stopped under load (the LRU serves, the degraded metric flips both
ways, no request fails), and a config reload that turns the cache on and off."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.otlp_collector import OtlpCollector
from harness.postgres_server import upgraded
from harness.processes import wait_until
from harness.redis_server import RedisServer, find_redis_server

MASTER = "sk-cache-master"
ADMIN = "sk-cache-admin"
CHAT = "/v1/chat/completions"


def config(upstream: FakeUpstream, params: dict[str, Any] | None = None, **routeiq: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {"model": "openai/fake", "api_base": upstream.base_url, "api_key": "sk-up"},
            }
        ],
        "router_settings": {"num_retries": 0, "model_group_alias": {"quick": "fast"}},
        "general_settings": {"master_key": MASTER},
        "routeiq": routeiq,
    }
    if params is not None:
        out["litellm_settings"] = {"cache": True, "cache_params": params}
    return out


def post(gw: GatewayHandle, body: dict[str, Any], key: str = MASTER, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url(CHAT),
        headers={"Authorization": f"Bearer {key}", **headers},
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}], **body},
        timeout=10,
        trust_env=False,
    )


def metrics(gw: GatewayHandle) -> str:
    return httpx.get(gw.url("/metrics"), timeout=5, trust_env=False).text


def metric(gw: GatewayHandle, sample: str) -> float:
    for line in metrics(gw).splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def upstream_calls(upstream: FakeUpstream) -> int:
    return len(upstream.requests(CHAT))


def test_miss_then_hit_with_one_upstream_call(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(config(fresh_upstream, {"type": "redis", "ttl": 60}), env={"REDIS_URL": fresh_redis.url})
    client = gw.openai_client(MASTER)
    messages = [{"role": "user", "content": "What is a cache?"}]
    first = client.chat.completions.with_raw_response.create(
        model="fast", messages=messages, temperature=1, user="alice", extra_body={"cache": {"ttl": 30}}
    )
    second = client.chat.completions.with_raw_response.create(
        model="quick", messages=messages, temperature=1.0, user="bob", metadata={"run": "2"}
    )  # an alias of the group, the same number written as a float, other user and metadata: the same request
    assert first.headers["x-routeiq-cache"] == "miss" and second.headers["x-routeiq-cache"] == "hit"
    assert second.content == first.content  # the answer's bytes as the upstream sent them
    assert second.headers["x-routeiq-model"] == "fast" and second.headers["content-type"] == "application/json"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    sent = fresh_upstream.requests(CHAT)
    assert len(sent) == 1 and "cache" not in sent[0]["body"]  # one upstream call; the controls stay here
    # Another prompt is another entry.
    other = client.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert other.headers["x-routeiq-cache"] == "miss" and upstream_calls(fresh_upstream) == 2
    with fresh_redis.client() as r:
        keys = sorted(k.decode() for k in r.keys("*"))
        assert len(keys) == 2 and all(k.startswith("routeiq:cache:{") and k.endswith("}") for k in keys), keys
        assert 0 < min(r.pttl(k) for k in keys) <= 60_000  # ttl 30 (the request's) and 60 (the config's)
        assert min(r.pttl(k) for k in keys) <= 30_000
    text = metrics(gw)
    assert 'routeiq_cache_requests_total{model="fast",result="hit",store="redis"} 1.0' in text, [
        line for line in text.splitlines() if "cache" in line
    ]
    assert 'routeiq_cache_requests_total{model="fast",result="miss",store="redis"} 2.0' in text
    assert 'gateway_degraded_mode{service="cache"} 0.0' in text


def test_stream_is_replayed_as_a_stream(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(config(fresh_upstream, {"type": "redis"}), env={"REDIS_URL": fresh_redis.url})
    client = gw.openai_client(MASTER)
    messages = [{"role": "user", "content": "stream me"}]

    def stream(**extra: Any) -> tuple[str, list[str], bytes]:
        body = {"model": "fast", "messages": messages, "stream": True, **extra}
        with httpx.stream(
            "POST", gw.url(CHAT), json=body, headers={"Authorization": f"Bearer {MASTER}"}, trust_env=False
        ) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
            raw = resp.read()
            state = resp.headers["x-routeiq-cache"]
        texts = [
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="fast", messages=messages, stream=True, **extra)
            if chunk.choices
        ] if state == "hit" else []  # fmt: skip
        return state, texts, raw

    state, _, raw = stream()
    assert state == "miss" and raw.endswith(b"data: [DONE]\n\n")
    wait_until(lambda: metric(gw, 'routeiq_cache_writes_total{result="stored",store="redis"}') == 1, timeout=5)
    state, texts, replay = stream()
    assert state == "hit" and replay == raw  # the same events, same framing, ending with [DONE]
    assert "".join(texts)  # the SDK reads the replay as a stream
    assert upstream_calls(fresh_upstream) == 1
    # A stream is its own entry: the same request without stream, or asking for the usage event, is a miss.
    assert post(gw, {"messages": messages}).headers["x-routeiq-cache"] == "miss"
    state, _, with_usage = stream(stream_options={"include_usage": True})
    assert state == "miss" and b'"usage":{' in with_usage
    assert upstream_calls(fresh_upstream) == 3


def test_no_cache_no_store_ttl_and_s_maxage(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(
        config(fresh_upstream, {"type": "redis", "ttl": 60}, cache={"max_ttl_seconds": 3600}),
        env={"REDIS_URL": fresh_redis.url},
    )

    def state(body: dict[str, Any], **headers: str) -> str | None:
        resp = post(gw, body, **headers)
        assert resp.status_code == 200, resp.text
        return resp.headers.get("x-routeiq-cache")

    # no-store: answered, not kept
    assert state({"cache": {"no-store": True}}) == "miss"
    assert upstream_calls(fresh_upstream) == 1
    assert state({}) == "miss" and upstream_calls(fresh_upstream) == 2  # nothing was stored: the upstream again
    assert state({}) == "hit"
    # no-cache: the upstream answers (and the answer is stored again)
    assert state({"cache": {"no-cache": True}}) == "miss" and upstream_calls(fresh_upstream) == 3
    assert state({}) == "hit" and upstream_calls(fresh_upstream) == 3
    # both: the cache takes no part at all
    assert state({"cache": {"no-cache": True, "no-store": True}}) is None and upstream_calls(fresh_upstream) == 4

    # ttl: a second here, then gone; Cache-Control: s-maxage=N is LiteLLM's header for the same
    short = {"messages": [{"role": "user", "content": "short-lived"}]}
    assert state({**short, "cache": {"ttl": 1}}) == "miss"
    assert state(short) == "hit"
    time.sleep(1.3)
    assert state(short) == "miss"
    header = {"messages": [{"role": "user", "content": "header ttl"}]}
    assert state(header, **{"Cache-Control": "s-maxage=1"}) == "miss"
    with fresh_redis.client() as r:
        assert sorted(0 < r.pttl(k) <= 1000 for k in r.keys("*")).count(True) == 1  # that one entry: 1 s

    # s-maxage: only an entry at most that old answers
    aged = {"messages": [{"role": "user", "content": "aged"}]}
    assert state(aged) == "miss"
    time.sleep(1.2)
    assert state({**aged, "cache": {"s-maxage": 1}}) == "miss"  # 1.2 s old: too old for this request
    assert state({**aged, "cache": {"s-maxage": 600}}) == "hit"

    # Controls that are not LiteLLM's, or a ttl past routeiq.cache.max_ttl_seconds: 400 naming the field
    for body, param in (
        ({"cache": "yes"}, "cache"),
        ({"cache": {"no-cache": "true"}}, "cache.no-cache"),
        ({"cache": {"ttl": -5}}, "cache.ttl"),
        ({"cache": {"ttl": 7200}}, "cache.ttl"),
        ({"cache": {"nocache": True}}, "cache.nocache"),
        ({"cache": {"namespace": "a{b}"}}, "cache.namespace"),
    ):
        resp = post(gw, body)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text


def test_two_teams_never_share_an_entry(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_redis: RedisServer,
    fresh_database: str,
) -> None:
    gw = start_gateway(
        config(fresh_upstream, {"type": "redis"}, keys={"spend_flush_seconds": 0.2}),
        env={"REDIS_URL": fresh_redis.url, "DATABASE_URL": upgraded(fresh_database), "ADMIN_API_KEYS": ADMIN},
        candidates={"fast": {"input_price": 1.0, "output_price": 2.0, "model": "fast"}},
    )

    def admin(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = httpx.post(
            gw.admin(path), headers={"Authorization": f"Bearer {ADMIN}"}, json=body, timeout=10, trust_env=False
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    for team in ("red", "blue"):
        admin("/team/new", {"team_id": team})
    red_1, red_2, blue = (str(admin("/key/generate", {"team_id": t})["key"]) for t in ("red", "red", "blue"))
    alone = str(admin("/key/generate", {})["key"])
    states = [post(gw, {}, key).headers["x-routeiq-cache"] for key in (red_1, blue, alone, MASTER)]
    assert states == ["miss"] * 4 and upstream_calls(fresh_upstream) == 4  # the same prompt, four tenants
    assert post(gw, {}, red_2).headers["x-routeiq-cache"] == "hit"  # a key of the same team shares its team's
    assert [post(gw, {}, key).headers["x-routeiq-cache"] for key in (blue, alone, MASTER)] == ["hit"] * 3
    assert upstream_calls(fresh_upstream) == 4

    # A hit is not upstream spend: the request is counted, its tokens and cost are 0 (LiteLLM: cost 0 on a hit).
    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(fresh_database) as conn:
            query = "SELECT team_id, requests, prompt_tokens + completion_tokens, cost FROM spend ORDER BY 1, 2, 3"
            return conn.execute(query).fetchall()

    # the master key has no spend rows: 2 requests of each of the three keys' tenants
    wait_until(lambda: sum(r[1] for r in rows()) == 6, timeout=10, detail=lambda: str(rows()))
    red = [r for r in rows() if r[0] == "red"]
    assert [(n, tokens > 0, cost > 0) for _, n, tokens, cost in red] == [(1, False, False), (1, True, True)], red


@pytest.mark.parametrize("store", ["redis", "local"])
def test_default_off_mode_caches_only_who_asks(
    store: str, start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(
        config(fresh_upstream, {"type": store, "mode": "default_off"}), env={"REDIS_URL": fresh_redis.url}
    )
    assert "x-routeiq-cache" not in post(gw, {}).headers
    assert post(gw, {}).headers.get("x-routeiq-cache") is None and upstream_calls(fresh_upstream) == 2
    opt_in = {"cache": {"use-cache": True}}
    assert [post(gw, opt_in).headers["x-routeiq-cache"] for _ in range(2)] == ["miss", "hit"]
    assert upstream_calls(fresh_upstream) == 3
    with fresh_redis.client() as r:
        assert len(r.keys("routeiq:cache:*")) == (1 if store == "redis" else 0)
    assert f'routeiq_cache_requests_total{{model="fast",result="hit",store="{store}"}} 1.0' in metrics(gw)


def test_redis_stopped_the_lru_serves_and_degraded_mode_flips_both_ways(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, tmp_path: Path
) -> None:
    binary = find_redis_server()
    assert binary is not None
    redis = RedisServer.start(binary, tmp_path / "redis")
    gw = start_gateway(config(fresh_upstream, {"type": "redis", "socket_timeout": 0.05}), env={"REDIS_URL": redis.url})
    degraded = 'gateway_degraded_mode{service="cache"}'
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:  # the same handful of prompts all along, as clients would send them
        n = 0
        while not stop.is_set():
            n += 1
            try:
                resp = post(gw, {"messages": [{"role": "user", "content": f"load {n % 5}"}]})
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: metric(gw, 'routeiq_cache_requests_total{model="fast",result="hit",store="redis"}') > 5, 10)
        assert metric(gw, degraded) == 0.0
        redis.stop()
        wait_until(lambda: metric(gw, degraded) == 1.0, timeout=10)
        # Served from this replica's memory: the prompts come back as hits on the LRU.
        wait_until(lambda: metric(gw, 'routeiq_cache_requests_total{model="fast",result="hit",store="local"}') > 5, 10)
        assert post(gw, {"messages": [{"role": "user", "content": "load 1"}]}).headers["x-routeiq-cache"] == "hit"
        redis = RedisServer.start(binary, tmp_path / "redis", port=redis.port)
        wait_until(lambda: metric(gw, degraded) == 0.0, timeout=10)
        hits = metric(gw, 'routeiq_cache_requests_total{model="fast",result="hit",store="redis"}')
        wait_until(
            lambda: metric(gw, 'routeiq_cache_requests_total{model="fast",result="hit",store="redis"}') > hits + 5, 10
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        redis.stop()
    assert failures == []  # the cache never failed a request
    flips = [r for r in gw.json_logs() if r.get("event") == "degraded_mode" and r.get("service") == "cache"]
    assert [r["degraded"] for r in flips] == [True, False], flips  # one line each way
    assert flips[0]["level"] in ("ERROR", "error") and flips[0]["reason"]


def test_redis_url_unset_is_the_lru_and_degraded(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    gw = start_gateway(config(fresh_upstream, {"type": "redis"}))
    assert [post(gw, {}).headers["x-routeiq-cache"] for _ in range(2)] == ["miss", "hit"]
    assert metric(gw, 'gateway_degraded_mode{service="cache"}') == 1.0
    assert metric(gw, 'routeiq_cache_requests_total{model="fast",result="hit",store="local"}') == 1.0
    gw.wait_for_log(lambda r: r.get("event") == "degraded_mode" and "REDIS_URL is not set" in r.get("reason", ""))
    # type local asked for the LRU: not degraded
    gw.write_config(config(fresh_upstream, {"type": "local"}))
    gw.reload()
    wait_until(lambda: metric(gw, 'gateway_degraded_mode{service="cache"}') == 0.0, timeout=10)


def test_a_reload_turns_the_cache_on_and_off(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(config(fresh_upstream), env={"REDIS_URL": fresh_redis.url})

    def reload(cfg: dict[str, Any]) -> None:
        before = metric(gw, 'routeiq_config_reloads_total{result="success"}')
        gw.write_config(cfg)
        gw.reload()
        wait_until(lambda: metric(gw, 'routeiq_config_reloads_total{result="success"}') == before + 1, timeout=10)

    off = post(gw, {"cache": {"ttl": 5}})  # the controls are taken off the body even with the cache off
    assert off.status_code == 200 and "x-routeiq-cache" not in off.headers
    assert "cache" not in fresh_upstream.requests(CHAT)[0]["body"]
    reload(config(fresh_upstream, {"type": "redis"}))
    assert [post(gw, {}).headers["x-routeiq-cache"] for _ in range(2)] == ["miss", "hit"]
    assert upstream_calls(fresh_upstream) == 2
    reload(config(fresh_upstream, {"type": "redis", "supported_call_types": ["aembedding"]}))  # chat no longer
    assert "x-routeiq-cache" not in post(gw, {}).headers and upstream_calls(fresh_upstream) == 3
    reload(config(fresh_upstream))
    assert "x-routeiq-cache" not in post(gw, {}).headers and upstream_calls(fresh_upstream) == 4
    # A cache type RouteIQ does not serve is refused with its path; the previous config keeps serving.
    refused = config(fresh_upstream)
    semantic = {"type": "redis-semantic", "similarity_threshold": 0.8}
    refused["litellm_settings"] = {"cache": True, "cache_params": semantic}
    gw.write_config(refused)
    gw.reload()
    record = gw.wait_for_log(lambda r: r.get("event") == "config_reload" and r.get("result") == "failure")
    assert "litellm_settings.cache_params.type" in record["reason"]
    assert "litellm_settings.cache_params.similarity_threshold" in record["reason"]
    assert post(gw, {}).status_code == 200


def test_embeddings_responses_and_transcriptions_are_cached_too(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    gw = start_gateway(config(fresh_upstream, {"type": "redis"}), env={"REDIS_URL": fresh_redis.url})
    client = gw.openai_client(MASTER)
    audio = tmp_path / "hello.wav"
    audio.write_bytes(b"RIFF....WAVEfmt fake audio")
    calls = [
        ("/v1/embeddings", lambda: client.embeddings.with_raw_response.create(model="fast", input="hello")),
        ("/v1/responses", lambda: client.responses.with_raw_response.create(model="fast", input="hello")),
        (
            "/v1/audio/transcriptions",
            lambda: client.audio.transcriptions.with_raw_response.create(model="fast", file=audio.open("rb")),
        ),
    ]
    for path, call in calls:
        first, second = call(), call()
        assert (first.headers["x-routeiq-cache"], second.headers["x-routeiq-cache"]) == ("miss", "hit"), path
        assert second.content == first.content and len(fresh_upstream.requests(path)) == 1, path
    audio.write_bytes(b"RIFF....WAVEfmt other audio")  # another file under the same name: another entry
    assert calls[2][1]().headers["x-routeiq-cache"] == "miss"


def test_a_virtual_model_is_answered_from_the_cache_before_its_router(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    cfg = config(
        fresh_upstream, {"type": "redis"}, routers=[{"name": "auto", "strategy": "random", "candidates": ["fast"]}]
    )
    gw = start_gateway(cfg, env={"REDIS_URL": fresh_redis.url})
    first, second = post(gw, {"model": "auto"}), post(gw, {"model": "auto"})
    assert first.headers["x-routeiq-cache"] == "miss" and first.headers["x-routeiq-router"] == "auto"
    assert second.headers["x-routeiq-cache"] == "hit" and "x-routeiq-router" not in second.headers  # no decision
    assert second.headers["x-routeiq-model"] == "fast" and second.content == first.content
    assert post(gw, {"model": "fast"}).headers["x-routeiq-cache"] == "miss"  # the virtual model is its own group
    assert upstream_calls(fresh_upstream) == 2
    text = metrics(gw)
    assert 'routeiq_cache_requests_total{model="auto",result="hit",store="redis"} 1.0' in text
    decisions = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("routeiq_router_decisions_total{") and 'router="auto"' in line
    ]
    assert sum(decisions) == 1.0  # the router decided the miss only


def test_spans_carry_cache_hit(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, otlp_collector: OtlpCollector
) -> None:
    gw = start_gateway(config(fresh_upstream, {"type": "local"}), env=otlp_collector.env("routeiq-cache-test"))
    for body in ({}, {}, {"cache": {"no-cache": True, "no-store": True}}):
        assert post(gw, body).status_code == 200
    spans = otlp_collector.wait_for_spans(lambda s: len([x for x in s if x.name == f"POST {CHAT}"]) >= 3)
    served = [s for s in spans if s.name == f"POST {CHAT}"]
    served.sort(key=lambda s: s.start_ns)
    assert [s.attributes.get("cache.hit") for s in served] == [False, True, None]


def test_a_redis_that_never_answers_costs_a_request_no_more_than_its_timeout(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    """A Redis that accepts connections and never replies (a hung server, a black-holed network): each cache call
    gives up after socket_timeout, the request is served from the upstream, and the LRU takes over."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])  # kept open, never answered

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        port = listener.getsockname()[1]
        gw = start_gateway(
            config(fresh_upstream, {"type": "redis", "socket_timeout": 0.2}),
            env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"},
        )
        times, states = [], []
        for _ in range(4):
            t0 = time.monotonic()
            resp = post(gw, {})
            times.append(time.monotonic() - t0)
            assert resp.status_code == 200, resp.text
            states.append(resp.headers["x-routeiq-cache"])
        # The first request waits out one timeout for its lookup (then the LRU serves); nothing hangs.
        assert max(times) < 5.0, times
        assert states == ["miss", "hit", "hit", "hit"]  # the miss was stored in the LRU
        assert metric(gw, 'gateway_degraded_mode{service="cache"}') == 1.0
        assert metric(gw, 'routeiq_cache_redis_errors_total{error="TimeoutError"}') >= 1
    finally:
        stop.set()
        acceptor.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


def test_only_whole_successful_answers_are_stored(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(config(fresh_upstream, {"type": "redis"}), env={"REDIS_URL": fresh_redis.url})
    fresh_upstream.add_rule(model="fake", status=500, times=1)
    assert post(gw, {}).status_code >= 500
    ok = post(gw, {})
    assert ok.status_code == 200 and ok.headers["x-routeiq-cache"] == "miss"  # the error was not stored
    fresh_upstream.add_rule(model="fake", action="reset_mid_stream", chunks=3, times=1)
    body = {"model": "fast", "messages": [{"role": "user", "content": "cut"}], "stream": True}
    headers = {"Authorization": f"Bearer {MASTER}"}
    with httpx.stream("POST", gw.url(CHAT), json=body, headers=headers, trust_env=False) as resp:
        cut = resp.read()
    assert resp.headers["x-routeiq-cache"] == "miss" and b'"error"' in cut  # told in-band, as OpenAI does
    with httpx.stream("POST", gw.url(CHAT), json=body, headers=headers, trust_env=False) as resp:
        whole = resp.read()
    assert resp.headers["x-routeiq-cache"] == "miss" and whole.endswith(b"data: [DONE]\n\n")  # the cut one: not kept
    with fresh_redis.client() as r:
        assert len(r.keys("routeiq:cache:*")) == 2  # the good answer and the whole stream
    assert metric(gw, 'routeiq_cache_writes_total{result="stored",store="redis"}') == 2


def test_an_answer_over_max_entry_bytes_is_not_stored(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_redis: RedisServer
) -> None:
    gw = start_gateway(
        config(fresh_upstream, {"type": "redis"}, cache={"max_entry_bytes": 2048}), env={"REDIS_URL": fresh_redis.url}
    )
    fresh_upstream.add_rule(model="fake", content="long " * 1000)  # ~5 KB of answer
    assert [post(gw, {}).headers["x-routeiq-cache"] for _ in range(2)] == ["miss", "miss"]
    assert upstream_calls(fresh_upstream) == 2
    assert metric(gw, 'routeiq_cache_writes_total{result="too_large",store="redis"}') == 2
    fresh_upstream.clear_rules()
    small = {"messages": [{"role": "user", "content": "short answer"}]}
    assert [post(gw, small).headers["x-routeiq-cache"] for _ in range(2)] == ["miss", "hit"]
