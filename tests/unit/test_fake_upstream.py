"""The test harness itself: the fake provider through its real process and the official SDKs, and one real
round trip through each service fixture (redis-server, moto S3, OTLP receiver)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from harness.fake_upstream import DEMO_CONTENT
from harness.fake_upstream_control import FakeUpstream, FakeUpstreamError
from harness.moto_s3 import MotoS3
from harness.otlp_collector import OtlpCollector
from harness.processes import ManagedProcess, ProcessStartError, wait_until
from harness.redis_server import RedisServer

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello to the test suite"}]


# -- OpenAI-compatible endpoints ---------------------------------------------------------------------


def test_chat_completion(fresh_upstream: FakeUpstream) -> None:
    client = fresh_upstream.openai_client()
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == DEMO_CONTENT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 6  # words in MESSAGES
    assert resp.usage.completion_tokens == len(DEMO_CONTENT.split())
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_stream_with_and_without_usage(fresh_upstream: FakeUpstream) -> None:
    client = fresh_upstream.openai_client()
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEMO_CONTENT
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(DEMO_CONTENT.split())
    assert all(c.usage is None for c in chunks[:-1])

    plain = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(c.choices for c in plain)
    assert all(c.usage is None for c in plain)


def test_completions(fresh_upstream: FakeUpstream) -> None:
    client = fresh_upstream.openai_client()
    resp = client.completions.create(model=MODEL, prompt="Once upon a time")
    assert resp.object == "text_completion"
    assert resp.choices[0].text == DEMO_CONTENT
    assert resp.usage is not None and resp.usage.prompt_tokens == 4

    chunks = list(
        client.completions.create(model=MODEL, prompt="Once", stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == DEMO_CONTENT
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_embeddings(fresh_upstream: FakeUpstream) -> None:
    client = fresh_upstream.openai_client()
    # The SDK asks for base64 by default and decodes it; both encodings must give the same vectors.
    resp = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta", "alpha"])
    vectors = [d.embedding for d in resp.data]
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    as_float = client.embeddings.create(model="e", input="alpha", encoding_format="float")
    assert as_float.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert resp.usage.prompt_tokens == 3
    wide = client.embeddings.create(model="e", input="alpha", dimensions=32)
    assert len(wide.data[0].embedding) == 32


def test_models(fresh_upstream: FakeUpstream) -> None:
    ids = [m.id for m in fresh_upstream.openai_client().models.list()]
    assert MODEL in ids and "claude-3-haiku-20240307" in ids


# -- behaviour control -------------------------------------------------------------------------------


def test_status_with_retry_after_expires_after_times(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(model=MODEL, status=429, retry_after="7", times=1)
    client = fresh_upstream.openai_client()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    assert fresh_upstream.rules() == []
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]


def test_rules_match_model_and_path_in_order(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(model="other-model", status=500)
    fresh_upstream.add_rule(path="/v1/embeddings", status=503, times=2)
    fresh_upstream.add_rule(status=400)  # forever, any model: after the path rule, so embeddings see 503
    client = fresh_upstream.openai_client()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="other-model", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            client.embeddings.create(model="e", input="x")
        assert caught.value.status_code == 503
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="e", input="x")
    assert len(fresh_upstream.rules()) == 2
    fresh_upstream.clear_rules()
    assert client.embeddings.create(model="e", input="x").data


def test_rule_headers_go_on_answers_errors_and_streams(fresh_upstream: FakeUpstream) -> None:
    extra = {"x-request-id": "req_1", "x-ratelimit-remaining-requests": "3"}
    fresh_upstream.add_rule(model=MODEL, headers=extra, times=3)
    fresh_upstream.add_rule(model=MODEL, status=418, headers=extra, times=1)
    client = fresh_upstream.openai_client()
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert {k: raw.headers[k] for k in extra} == extra
    with client.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    ) as streamed:
        assert {k: streamed.headers[k] for k in extra} == extra
    msg = httpx.post(f"{fresh_upstream.root_url}/v1/messages", json={"model": MODEL, "messages": MESSAGES})
    assert {k: msg.headers[k] for k in extra} == extra
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 418
    assert caught.value.response.headers["x-request-id"] == "req_1"
    assert (
        "x-request-id"
        not in client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
        ).headers
    )
    with pytest.raises(FakeUpstreamError, match="headers"):
        fresh_upstream.add_rule(headers={"x-n": 1})


def test_unknown_rule_field_is_rejected(fresh_upstream: FakeUpstream) -> None:
    with pytest.raises(FakeUpstreamError, match="statuss"):
        fresh_upstream.add_rule(statuss=500)
    with pytest.raises(FakeUpstreamError, match="unknown action"):
        fresh_upstream.add_rule(action="explode")


def test_reset_aborts_the_connection(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(action="reset", times=1)
    client = fresh_upstream.openai_client()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices  # type: ignore[arg-type]


def test_invalid_json(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(action="invalid_json", times=1)
    resp = httpx.post(f"{fresh_upstream.base_url}/chat/completions", json={"model": MODEL, "messages": []})
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        json.loads(resp.content)


def test_hang_and_delay(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(action="hang", times=1)
    client = fresh_upstream.openai_client(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2

    fresh_upstream.add_rule(delay_ms=250, times=1)
    started = time.monotonic()
    fresh_upstream.openai_client().chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert time.monotonic() - started >= 0.25


def test_slow_stream_paces_chunks(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(action="slow_stream", chunks=4, chunk_delay_ms=100, times=1)
    started = time.monotonic()
    stream = fresh_upstream.openai_client().chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    arrivals: list[tuple[float, str]] = []
    for chunk in stream:
        arrivals.append((time.monotonic() - started, chunk.choices[0].delta.content or ""))
    contents = [text for _, text in arrivals if text]
    assert len(contents) == 4
    assert arrivals[0][0] < 0.2  # the role chunk is not delayed: time-to-first-byte stays short
    assert arrivals[-1][0] >= 0.4
    assert "".join(contents) == "This is a demo"


def test_reset_mid_stream(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(action="reset_mid_stream", chunks=2, times=1)
    stream = fresh_upstream.openai_client().chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    received: list[str] = []
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "This is"


def test_request_log(fresh_upstream: FakeUpstream) -> None:
    before = time.monotonic()
    fresh_upstream.openai_client(api_key="sk-logged").chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"X-Trace-Me": "yes"},
    )
    (entry,) = fresh_upstream.requests()
    assert entry["path"] == "/v1/chat/completions"
    assert entry["method"] == "POST"
    assert entry["headers"]["authorization"] == "Bearer sk-logged"
    assert entry["headers"]["x-trace-me"] == "yes"
    assert entry["body"]["messages"] == MESSAGES
    assert before <= entry["ts"] <= time.monotonic()  # CLOCK_MONOTONIC is shared across processes
    fresh_upstream.clear_requests()
    assert fresh_upstream.requests() == []


# -- litellm's Anthropic provider against /v1/messages -----------------------------------------------


@pytest.fixture
def litellm_module(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # Offline: litellm would otherwise try to download its price map at import.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def test_litellm_anthropic_messages(fresh_upstream: FakeUpstream, litellm_module) -> None:  # type: ignore[no-untyped-def]
    model = "anthropic/claude-3-haiku-20240307"

    async def call(stream: bool) -> str:
        kwargs = {"api_base": fresh_upstream.root_url, "api_key": "x", "messages": MESSAGES, "max_tokens": 50}
        if not stream:
            resp = await litellm_module.acompletion(model=model, **kwargs)
            assert resp.usage.prompt_tokens == 6  # words in MESSAGES
            assert resp.choices[0].finish_reason == "stop"
            return str(resp.choices[0].message.content)
        parts: list[str] = []
        async for chunk in await litellm_module.acompletion(model=model, stream=True, **kwargs):
            parts.append(chunk.choices[0].delta.content or "")
        return "".join(parts)

    assert asyncio.run(call(stream=False)) == DEMO_CONTENT
    assert asyncio.run(call(stream=True)) == DEMO_CONTENT
    logged = fresh_upstream.requests("/v1/messages")
    assert len(logged) == 2
    assert logged[0]["headers"]["x-api-key"] == "x"
    assert logged[0]["body"]["model"] == "claude-3-haiku-20240307"
    assert logged[1]["body"]["stream"] is True


def test_anthropic_error_shape(fresh_upstream: FakeUpstream) -> None:
    fresh_upstream.add_rule(path="/v1/messages", status=529, times=1)
    resp = httpx.post(
        f"{fresh_upstream.root_url}/v1/messages",
        json={"model": "claude-3-haiku-20240307", "messages": MESSAGES, "max_tokens": 5},
    )
    assert resp.status_code == 529
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"


# -- the other service fixtures: one real round trip each --------------------------------------------


def test_redis_server_round_trip(fresh_redis: RedisServer) -> None:
    with fresh_redis.client() as conn:
        assert conn.dbsize() == 0
        conn.set("routeiq:test", "1", px=5000)
        assert conn.get("routeiq:test") == b"1"


def test_moto_s3_round_trip(moto_s3: MotoS3, s3_bucket: str) -> None:
    s3 = moto_s3.client()
    put = s3.put_object(Bucket=s3_bucket, Key="prod/config.yaml", Body=b"model_list: []\n")
    got = s3.get_object(Bucket=s3_bucket, Key="prod/config.yaml")
    assert got["Body"].read() == b"model_list: []\n"
    assert got["ETag"] == put["ETag"]
    assert moto_s3.new_bucket() != s3_bucket


def test_otlp_collector_receives_spans(otlp_collector: OtlpCollector) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "harness-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp_collector.traces_endpoint)))
    tracer = provider.get_tracer("harness")
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes={"http.route": "/v1/x"}),
        tracer.start_as_current_span("child", attributes={"n": 3, "ok": True}) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()

    spans = {s.name: s for s in otlp_collector.wait_for_spans(count=2, timeout=5)}
    parent, child_rec = spans["parent"], spans["child"]
    assert child_rec.parent_span_id == parent.span_id and parent.parent_span_id is None
    assert child_rec.trace_id == parent.trace_id and len(parent.trace_id) == 32
    assert parent.kind == "SERVER" and parent.attributes == {"http.route": "/v1/x"}
    assert child_rec.attributes == {"n": 3, "ok": True}
    assert (child_rec.status, child_rec.status_message) == ("ERROR", "boom")
    assert parent.resource_attributes["service.name"] == "harness-test"


# -- process management ------------------------------------------------------------------------------


def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(["sh", "-c", "echo boom-from-child; exit 3"], tmp_path / "x.log").start()
    try:
        with pytest.raises(ProcessStartError, match=r"(?s)code 3.*boom-from-child"):
            proc.wait_port("127.0.0.1", 1, timeout=5)
    finally:
        proc.stop()


def test_stop_kills_the_whole_group(tmp_path: Path) -> None:
    # A parent ignoring SIGTERM with a child: stop() must escalate to SIGKILL and reach the child too.
    script = "trap '' TERM; sleep 60 & echo child=$!; wait"
    proc = ManagedProcess(["sh", "-c", script], tmp_path / "g.log").start()
    try:
        proc.wait_ready(lambda: "child=" in proc.log_text(), 5, "child started")
        child = int(proc.log_text().split("child=")[1].split()[0])
    finally:
        code = proc.stop(timeout=0.5)
    assert code == -signal.SIGKILL
    wait_until(lambda: not _alive(child), 5, message=f"orphaned child {child} gone")


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan is a zombie until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_fake_upstream_script_runs_standalone(tmp_path: Path) -> None:
    # `make run` starts it as a plain script; check it serves and stops on SIGTERM with exit 0.
    upstream = FakeUpstream.start(tmp_path, latency_ms=50)
    try:
        started = time.monotonic()
        assert upstream.openai_client().models.list().data
        assert time.monotonic() - started >= 0.05
        upstream.process.send_signal(signal.SIGTERM)
        assert upstream.process.wait_exit(5) == 0
        assert "DEMO" in upstream.process.log_text()
    finally:
        upstream.stop()
