"""The gateway's OpenAI-compatible API through the real process, with the official openai SDK as the client.

Every behaviour is checked on both provider paths: `fast` (openai/ → native pass-through) and `claude`
(anthropic/ → LiteLLM, against the fake upstream's Anthropic Messages endpoint).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway
from harness.otlp_collector import OtlpCollector

MASTER = "sk-master-test"
UPSTREAM_KEY = "sk-upstream-secret"
MAX_BODY = 64 * 1024
PATHS = {"fast": "native", "claude": "translated"}  # anthropic/: the translation path (issue 12)
# The upstream model name each group's requests carry (what fake-upstream rules match on).
UPSTREAM_MODEL = {"fast": "fake-fast", "claude": "claude-3-haiku-20240307"}
DEMO = "This is a demo response from RouteIQ's fake provider."
USER = [{"role": "user", "content": "Say something"}]


def api_config(upstream: FakeUpstream) -> dict[str, Any]:
    def openai_dep(name: str, model: str) -> dict[str, Any]:
        params = {"model": f"openai/{model}", "api_base": upstream.base_url, "api_key": UPSTREAM_KEY}
        return {"model_name": name, "litellm_params": params}

    return {
        "model_list": [
            openai_dep("fast", "fake-fast"),
            {
                "model_name": "claude",
                "litellm_params": {
                    "model": "anthropic/claude-3-haiku-20240307",
                    "api_base": upstream.root_url,
                    "api_key": UPSTREAM_KEY,
                },
            },
            openai_dep("embed", "fake-embed"),
            openai_dep("primary", "fake-primary"),
            openai_dep("backup", "fake-backup"),
            {
                "model_name": "slow",
                "litellm_params": {
                    "model": "openai/fake-slow",
                    "api_base": upstream.base_url,
                    "api_key": UPSTREAM_KEY,
                    "timeout": 1,
                },
            },
            {
                "model_name": "claude-slow",
                "litellm_params": {
                    "model": "anthropic/claude-slow",
                    "api_base": upstream.root_url,
                    "api_key": UPSTREAM_KEY,
                    "timeout": 1,
                },
            },
        ],
        "router_settings": {"num_retries": 1, "retry_after": 0.01, "fallbacks": [{"primary": ["backup"]}]},
        "general_settings": {"master_key": MASTER},
        "routeiq": {"limits": {"max_request_body_bytes": MAX_BODY}, "server": {"access_log": True}},
    }


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector().start() as c:
        yield c


@pytest.fixture(scope="module")
def gw(
    fake_upstream: FakeUpstream, collector: OtlpCollector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayHandle]:
    """One gateway for the module (LiteLLM's import makes start-up the slow part), exporting spans."""
    handle = launch_gateway(
        VolumeDirs(tmp_path_factory.mktemp("gw-api")), api_config(fake_upstream), env=collector.env()
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def client(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> openai.OpenAI:
    return gw.openai_client(api_key=MASTER)


def raw_post(gw: GatewayHandle, path: str, content: bytes, **headers: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {MASTER}", "content-type": "application/json", **headers}
    return httpx.post(gw.url(path), content=content, headers=headers, timeout=10)


def chat_body(model: str) -> bytes:
    return b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}' % model.encode()


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    return err


def metric_value(gw: GatewayHandle, name: str, **labels: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the happy paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["fast", "claude"])
def test_chat_completion(client: openai.OpenAI, fresh_upstream: FakeUpstream, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER, max_tokens=20)
    reply = raw.parse()
    assert raw.headers["x-routeiq-model"] == model
    assert raw.headers["x-routeiq-provider-path"] == PATHS[model]
    assert reply.choices[0].message.content == DEMO
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    (sent,) = fresh_upstream.requests()
    # The provider key goes upstream; the client's master key never does.
    assert UPSTREAM_KEY in (sent["headers"].get("authorization", "") + sent["headers"].get("x-api-key", ""))
    assert MASTER not in str(sent["headers"])
    assert sent["body"]["model"] == UPSTREAM_MODEL[model]
    assert sent["body"]["max_tokens"] == 20


@pytest.mark.parametrize("model", ["fast", "claude"])
def test_streaming_chat_with_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEMO
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens > 0


def test_completions(client: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    reply = client.completions.create(model="fast", prompt="Once upon a time", max_tokens=5)
    assert reply.choices[0].text
    assert fresh_upstream.requests()[0]["path"] == "/v1/completions"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="fast", prompt="x", stream=True))
    assert streamed


def test_embeddings(client: openai.OpenAI) -> None:
    reply = client.embeddings.create(model="embed", input=["one", "two"])
    assert [d.index for d in reply.data] == [0, 1]
    assert len(reply.data[0].embedding) > 0
    assert reply.data[0].embedding != reply.data[1].embedding


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"fast", "claude", "embed", "primary", "backup", "slow", "claude-slow"}


def test_x_api_key_header_is_accepted(gw: GatewayHandle) -> None:
    resp = httpx.post(
        gw.url("/v1/chat/completions"),
        json={"model": "fast", "messages": USER},
        headers={"x-api-key": MASTER},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == DEMO


def test_client_cannot_redirect_the_provider_call(client: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    # On the LiteLLM path, api_base / api_key are call arguments; a client sending them must not steer our key.
    # They are refused by name (tests/integration/test_provider_parity.py has each field on both paths).
    hostile = {
        "api_base": "http://127.0.0.1:9/v1",
        "base_url": "http://127.0.0.1:9",
        "api_key": "attacker",
        "extra_headers": {"x-injected": "1"},
    }
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=USER, extra_body=hostile)
    assert info.value.body["param"] == "api_base"
    assert all(name in info.value.body["message"] for name in hostile)
    assert "attacker" not in info.value.body["message"]
    assert fresh_upstream.requests() == []  # nothing was sent anywhere


# --- auth and bad requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-wrong", MASTER + "x", MASTER[:-1]])
def test_wrong_key_is_401(gw: GatewayHandle, fresh_upstream: FakeUpstream, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        gw.openai_client(api_key=key).chat.completions.create(model="fast", messages=USER)
    assert info.value.status_code == 401
    assert info.value.body["code"] == "invalid_api_key"
    assert fresh_upstream.requests() == []


def test_missing_key_is_401(gw: GatewayHandle) -> None:
    resp = httpx.post(gw.url("/v1/chat/completions"), json={"model": "fast", "messages": USER}, timeout=10)
    assert_openai_error(resp, 401, "invalid_api_key")
    assert_openai_error(httpx.get(gw.url("/v1/models"), timeout=10), 401)


def test_malformed_json_is_400(gw: GatewayHandle) -> None:
    assert_openai_error(raw_post(gw, "/v1/chat/completions", b'{"model": "fast", '), 400, "invalid_json")
    assert_openai_error(raw_post(gw, "/v1/chat/completions", b""), 400, "invalid_json")
    assert_openai_error(raw_post(gw, "/v1/chat/completions", b"[1]"), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fast"}, "messages"),
        ({"messages": USER}, "model"),
        ({"model": "fast", "messages": "hello"}, "messages"),
        ({"model": "fast", "messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"model": "fast", "messages": USER, "max_tokens": "ten"}, "max_tokens"),
        ({"model": "fast", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "fast", "messages": USER, "temperature": [1]}, "temperature"),
    ],
)
def test_invalid_fields_are_400_naming_the_param(client: openai.OpenAI, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body=body, cast_to=httpx.Response)
    assert info.value.status_code == 400  # as OpenAI answers, not 422
    assert info.value.body["param"] == param


def test_unknown_model_is_404(client: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nonexistent", messages=USER)
    assert info.value.body["code"] == "model_not_found"
    assert info.value.body["param"] == "model"
    assert fresh_upstream.requests() == []


def test_body_over_limit_is_413(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> None:
    big = b'{"model": "fast", "messages": [{"role": "user", "content": "' + b"x" * MAX_BODY + b'"}]}'
    assert_openai_error(raw_post(gw, "/v1/chat/completions", big), 413, "request_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading, too
        yield big[:1000]
        yield big[1000:]

    resp = httpx.post(
        gw.url("/v1/chat/completions"),
        content=chunked(),
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=10,
    )
    assert_openai_error(resp, 413, "request_too_large")
    assert fresh_upstream.requests() == []


def test_unknown_route_and_wrong_method(gw: GatewayHandle) -> None:
    assert_openai_error(httpx.get(gw.url("/v1/nope"), timeout=5), 404)
    assert_openai_error(httpx.get(gw.url("/v1/chat/completions"), timeout=5), 405)


# --- upstream failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["fast", "claude"])
@pytest.mark.parametrize(
    ("rule", "status", "code"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503}, 502, "upstream_error"),
        ({"action": "reset"}, 502, "upstream_unreachable"),
        ({"status": 429, "retry_after": "7"}, 429, "upstream_rate_limited"),
        ({"status": 400}, 400, "upstream_rejected"),
    ],
)
def test_upstream_failures_map_to_openai_errors(
    gw: GatewayHandle,
    fresh_upstream: FakeUpstream,
    model: str,
    rule: dict[str, Any],
    status: int,
    code: str,
) -> None:
    fresh_upstream.add_rule(model=UPSTREAM_MODEL[model], **rule)
    resp = raw_post(gw, "/v1/chat/completions", chat_body(model))
    assert_openai_error(resp, status, code)
    attempts = len(fresh_upstream.requests())
    expected = 2 if status != 400 else 1  # num_retries: 1, and a 400 is not retried
    if PATHS[model] == "litellm" and rule.get("action") == "reset":
        # LiteLLM's HTTP handler itself re-sends once on a new connection after a connection error
        # (litellm/llms/custom_httpx/http_handler.py, not configurable), so each of our attempts is two.
        expected *= 2
    assert attempts == expected
    if status == 429:
        assert resp.headers["retry-after"] == "7"  # passed through from the upstream, on both paths


def test_upstream_invalid_json_is_502(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(model="fake-fast", action="invalid_json")
    resp = raw_post(gw, "/v1/chat/completions", chat_body("fast"))
    assert_openai_error(resp, 502, "upstream_invalid_response")


@pytest.mark.parametrize("model", ["slow", "claude-slow"])
def test_upstream_timeout_is_504(gw: GatewayHandle, fresh_upstream: FakeUpstream, model: str) -> None:
    fresh_upstream.add_rule(model="*", action="hang")
    resp = raw_post(gw, "/v1/chat/completions", chat_body(model))
    assert_openai_error(resp, 504, "upstream_timeout")
    assert len(fresh_upstream.requests()) == 2  # timed out twice (timeout 1 s, num_retries 1), then gave up


def test_retry_cures_a_transient_failure(client: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(model="fake-fast", status=500, times=1)
    reply = client.chat.completions.create(model="fast", messages=USER)
    assert reply.choices[0].message.content == DEMO
    assert len(fresh_upstream.requests()) == 2


def test_fallback_serves_when_the_primary_group_fails(
    gw: GatewayHandle, client: openai.OpenAI, fresh_upstream: FakeUpstream
) -> None:
    fresh_upstream.add_rule(model="fake-primary", status=503)
    before = metric_value(gw, "routeiq_fallbacks_total", model="primary", fallback="backup")
    raw = client.chat.completions.with_raw_response.create(model="primary", messages=USER)
    assert raw.parse().choices[0].message.content == DEMO
    assert raw.headers["x-routeiq-model"] == "backup"
    assert [r["body"]["model"] for r in fresh_upstream.requests()] == ["fake-primary", "fake-primary", "fake-backup"]
    assert metric_value(gw, "routeiq_fallbacks_total", model="primary", fallback="backup") == before + 1


@pytest.mark.parametrize("model", ["fast", "claude"])
def test_stream_cut_mid_way_ends_with_an_error_event(
    client: openai.OpenAI, fresh_upstream: FakeUpstream, model: str
) -> None:
    fresh_upstream.add_rule(model=UPSTREAM_MODEL[model], action="reset_mid_stream", chunks=3)
    with pytest.raises(openai.APIError):
        # The SDK raises on the in-band error event; it must not hang or end as if the answer were complete.
        for _ in client.chat.completions.create(model=model, messages=USER, stream=True):
            pass


# --- observability -----------------------------------------------------------------------------------------


def test_metrics_count_requests_tokens_and_streams(gw: GatewayHandle, client: openai.OpenAI) -> None:
    ok = metric_value(gw, "routeiq_requests_total", model="fast", endpoint="chat/completions", status="200")
    tokens_out = metric_value(gw, "routeiq_tokens_total", model="fast", direction="out")
    ttft = metric_value(gw, "routeiq_time_to_first_token_seconds_count", model="fast")
    client.chat.completions.create(model="fast", messages=USER)
    list(
        client.chat.completions.create(model="fast", messages=USER, stream=True, stream_options={"include_usage": True})
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    assert metric_value(gw, "routeiq_requests_total", model="fast", endpoint="chat/completions", status="200") == ok + 2
    assert metric_value(gw, "routeiq_requests_total", model="<unknown>", status="404") >= 1
    assert metric_value(gw, "routeiq_tokens_total", model="fast", direction="out") > tokens_out
    assert metric_value(gw, "routeiq_time_to_first_token_seconds_count", model="fast") == ttft + 1
    assert metric_value(gw, "routeiq_request_duration_seconds_count", model="fast") > 0
    assert metric_value(gw, "routeiq_upstream_duration_seconds_count", model="fast", path="native") > 0
    assert metric_value(gw, "routeiq_in_flight_requests") == 0
    assert metric_value(gw, "active_streams_count") == 0
    assert metric_value(gw, "routeiq_config_info") == 1


def test_server_span_continues_client_trace_and_reaches_upstream(
    gw: GatewayHandle, client: openai.OpenAI, fresh_upstream: FakeUpstream, collector: OtlpCollector
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    client.chat.completions.create(
        model="claude", messages=USER, extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"}
    )
    spans = collector.wait_for_spans(lambda got: any(s.trace_id == trace_id for s in got), timeout=10)
    (span,) = [s for s in spans if s.trace_id == trace_id]
    assert span.kind == "SERVER"
    assert span.parent_span_id == parent
    assert span.name == "POST /v1/chat/completions"
    assert span.resource_attributes["service.name"] == "litellm-gateway"
    assert span.attributes["routeiq.provider_path"] == "translated"  # anthropic/: the translation path (issue 12)
    assert span.attributes["routeiq.deployment"] == "anthropic/claude-3-haiku-20240307"
    assert span.attributes["http.response.status_code"] == 200
    upstream_tp = fresh_upstream.requests()[0]["headers"]["traceparent"]
    assert upstream_tp.split("-")[1] == trace_id
    assert upstream_tp.split("-")[2] == span.span_id
    # The access log line of this request carries the same trace id.
    lines = [rec for rec in gw.json_logs() if rec.get("message") == "request" and rec.get("trace_id") == trace_id]
    assert lines and lines[0]["status"] == 200 and lines[0]["model"] == "claude"


def test_health_endpoints(gw: GatewayHandle) -> None:
    for path in ("/health/liveliness", "/health/liveness", "/health/readiness"):
        assert httpx.get(gw.url(path), timeout=5).status_code == 200


def test_secrets_never_reach_logs(gw: GatewayHandle) -> None:
    text = gw.log_text()
    assert UPSTREAM_KEY not in text
    assert MASTER not in text
