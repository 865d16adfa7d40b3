"""The gateway's life as a process: SIGHUP reload (good and bad files, and under load), SIGTERM drain with
streams in flight, the drain grace timeout, load shedding, start-up failures, the admin reload endpoint and
the pidfile.

Everything runs for real over loopback: the `routeiq-gateway` console script, the fake upstream process, and
the official `openai` SDK as the client (httpx for the non-OpenAI endpoints: health, metrics, admin).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway, VolumeDirs, config_text, gateway_script
from harness.processes import child_env, wait_until
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from routeiq_shared.config_schema import content_version

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-lifecycle-master"
CHAT_PATH = "/v1/chat/completions"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
RELOADS_TOTAL = "routeiq_config_reloads_total"
CONFIG_INFO = "routeiq_config_info"
SHED_TOTAL = "routeiq_shed_requests_total"


# -- config ------------------------------------------------------------------------------------------


def gateway_config(
    upstream: FakeUpstream,
    models: Mapping[str, str],
    *,
    router_settings: Mapping[str, Any] | None = None,
    routeiq: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A config serving each `model group -> upstream model` through the fake upstream, with no retries."""
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{upstream_model}",
                    "api_base": upstream.base_url,
                    "api_key": "sk-up",
                },
            }
            for name, upstream_model in models.items()
        ],
        "router_settings": {"num_retries": 0, **(router_settings or {})},
        "general_settings": {"master_key": MASTER_KEY},
    }
    if routeiq is not None:
        config["routeiq"] = dict(routeiq)
    return config


# -- clients -----------------------------------------------------------------------------------------


def http_client() -> httpx.Client:
    return httpx.Client(timeout=10.0, trust_env=False)


def ask(gw: GatewayHandle, model: str) -> str:
    """One chat completion through the gateway with the openai SDK; returns the reply's content."""
    with gw.openai_client(MASTER_KEY) as client:
        reply = client.chat.completions.create(model=model, messages=MESSAGES)
    content = reply.choices[0].message.content
    assert content, f"empty reply from model {model!r}: {reply}"
    return content


def assert_model_not_found(gw: GatewayHandle, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask(gw, model)
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """`response` is OpenAI's error JSON {"error": {message, type, param, code}} with this status."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def admin_reload(gw: GatewayHandle, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    with http_client() as http:
        return http.post(gw.admin("/admin/reload"), headers=headers)


# -- metrics -----------------------------------------------------------------------------------------


def metric_samples(gw: GatewayHandle) -> list[tuple[str, dict[str, str], float]]:
    with http_client() as http:
        response = http.get(gw.url("/metrics"))
    assert response.status_code == 200, response.text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    """The value of one sample; 0.0 when the labelled child was never created (a counter never incremented)."""
    values = [value for n, lbls, value in metric_samples(gw) if n == name and lbls == labels]
    assert len(values) <= 1, f"{name}{labels} matched {len(values)} samples"
    return values[0] if values else 0.0


def config_versions(gw: GatewayHandle) -> set[str]:
    """Every version routeiq_config_info exports (exactly one when healthy)."""
    return {lbls["version"] for n, lbls, value in metric_samples(gw) if n == CONFIG_INFO and value == 1.0}


# -- logs --------------------------------------------------------------------------------------------


def records_with(gw: GatewayHandle, message: str, after: int = 0) -> list[dict[str, Any]]:
    return [r for r in gw.json_logs()[after:] if message in str(r.get("message", ""))]


def log_time(record: Mapping[str, Any]) -> float:
    """A JSON log line's `ts` ("2026-01-02T03:04:05.678Z", UTC, truncated to the millisecond) as epoch seconds."""
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# -- async helpers -----------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool], seconds: float, message: str) -> None:
    """wait_until for coroutines: polls without blocking the event loop the clients run on."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {seconds:.1f}s waiting for {message}")
        await asyncio.sleep(0.02)


@dataclass
class StreamResult:
    content: str
    finish_reason: str | None
    error: BaseException | None


async def consume(stream: openai.AsyncStream[Any]) -> StreamResult:
    parts: list[str] = []
    finish: str | None = None
    try:
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.delta.content:
                parts.append(choice.delta.content)
            finish = choice.finish_reason or finish
    except (openai.APIError, httpx.HTTPError) as exc:
        return StreamResult("".join(parts), finish, exc)
    return StreamResult("".join(parts), finish, None)


# == 1. SIGHUP reload ================================================================================


def test_sighup_reload_serves_new_model_group_and_reports_version(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    fresh_upstream.add_rule(model="fake-smart", content="answer from the smart deployment")
    gw = start_gateway(gateway_config(fresh_upstream, {"fast": "fake-fast"}))
    (old_version,) = config_versions(gw)
    assert ask(gw, "fast")
    assert_model_not_found(gw, "smart")

    gw.write_config(gateway_config(fresh_upstream, {"fast": "fake-fast", "smart": "fake-smart"}))
    new_version = content_version(gw.config_path.read_bytes(), b"")
    assert new_version != old_version
    mark = len(gw.json_logs())
    gw.reload()

    record = gw.wait_for_log("Config reloaded", after=mark)
    assert record["level"] == "INFO"
    assert record["version"] == new_version
    assert record["previous_version"] == old_version
    assert ask(gw, "smart") == "answer from the smart deployment"
    assert ask(gw, "fast")
    assert metric(gw, RELOADS_TOTAL, result="success") == 1.0
    assert metric(gw, RELOADS_TOTAL, result="failure") == 0.0
    assert config_versions(gw) == {new_version}


# == 2. invalid config on SIGHUP =====================================================================

UNSET_ENV = "ROUTEIQ_LIFECYCLE_NEVER_SET"  # ROUTEIQ_* is dropped from children's env by the harness


def _bad_yaml(valid: str) -> str:
    return valid + "router_settings: {num_retries: 0\n"  # unclosed flow mapping


def _unknown_key(valid: dict[str, Any]) -> dict[str, Any]:
    return {**valid, "router_settings": {**valid["router_settings"], "num_retrys": 3}}


def _unset_env(valid: dict[str, Any]) -> dict[str, Any]:
    smart = valid["model_list"][1]
    params = {**smart["litellm_params"], "api_key": f"os.environ/{UNSET_ENV}"}
    return {**valid, "model_list": [valid["model_list"][0], {**smart, "litellm_params": params}]}


@dataclass(frozen=True)
class BadConfig:
    make: Callable[[dict[str, Any]], str]
    key_path: str | None  # None: the file has no key to blame (syntax, empty)
    reason: str


BAD_CONFIGS = {
    "yaml_syntax_error": BadConfig(lambda valid: _bad_yaml(config_text(valid)), None, "YAML syntax error"),
    "unknown_key": BadConfig(
        lambda valid: config_text(_unknown_key(valid)), "router_settings.num_retrys", "unknown key"
    ),
    "unset_env_variable": BadConfig(
        lambda valid: config_text(_unset_env(valid)),
        "model_list[1].litellm_params.api_key",
        f"environment variable {UNSET_ENV} is not set",
    ),
    "empty_file": BadConfig(lambda valid: "", None, "empty file"),
}


@pytest.mark.parametrize("kind", list(BAD_CONFIGS))
def test_sighup_with_invalid_config_keeps_old_config(
    kind: str, start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    bad = BAD_CONFIGS[kind]
    old_config = gateway_config(fresh_upstream, {"fast": "fake-fast"})
    new_config = gateway_config(fresh_upstream, {"fast": "fake-fast", "smart": "fake-smart"})
    gw = start_gateway(old_config)
    (old_version,) = config_versions(gw)

    gw.write_config(bad.make(new_config))
    mark = len(gw.json_logs())
    gw.reload()
    record = gw.wait_for_log(lambda r: r.get("event") == "config_reload", after=mark)

    assert record["level"] == "ERROR", record
    assert "reload failed" in record["message"], record
    assert record["result"] == "failure"
    assert record["version"] == old_version
    assert bad.reason in record["reason"], record
    if bad.key_path is None:
        assert not record.get("key_path"), record
    else:
        assert record["key_path"] == bad.key_path
        assert bad.key_path in record["reason"]
    assert records_with(gw, "Config reloaded", after=mark) == []
    # The old state keeps serving: the old model answers, the model the bad file would have added does not.
    assert ask(gw, "fast")
    assert_model_not_found(gw, "smart")
    assert metric(gw, RELOADS_TOTAL, result="failure") == 1.0
    assert metric(gw, RELOADS_TOTAL, result="success") == 0.0
    assert config_versions(gw) == {old_version}

    # A valid file afterwards is taken as usual.
    gw.write_config(new_config)
    mark = len(gw.json_logs())
    gw.reload()
    record = gw.wait_for_log("Config reloaded", after=mark)
    new_version = content_version(gw.config_path.read_bytes(), b"")
    assert (record["previous_version"], record["version"]) == (old_version, new_version)
    assert ask(gw, "smart")
    assert metric(gw, RELOADS_TOTAL, result="success") == 1.0
    assert metric(gw, RELOADS_TOTAL, result="failure") == 1.0
    assert config_versions(gw) == {new_version}


# == 3. SIGHUP under load ============================================================================

LOAD_REQUESTS = 480
LOAD_PACE_PER_S = 140.0  # requests started per second: ~3.4 s of load
LOAD_CONCURRENCY = 16
LOAD_RELOADS = 10
MIN_RATE_PER_S = 100.0  # demanded by the issue


@dataclass(frozen=True)
class Sample:
    started: float  # time.time(), comparable with the gateway's log timestamps
    finished: float
    status: int | None
    content: str | None
    error: str | None


async def _load_with_reloads(gw: GatewayHandle, configs: list[dict[str, Any]]) -> tuple[list[Sample], list[float]]:
    """Paced chat requests at LOAD_PACE_PER_S, with LOAD_RELOADS SIGHUPs spread evenly across the run, each
    after writing the next of `configs`. Returns the samples and the times the SIGHUPs were sent."""
    client = gw.async_openai_client(MASTER_KEY)
    slots = asyncio.Semaphore(LOAD_CONCURRENCY)
    loop = asyncio.get_running_loop()
    duration = LOAD_REQUESTS / LOAD_PACE_PER_S
    sent: list[float] = []

    async def one() -> Sample:
        async with slots:
            started = time.time()
            try:
                raw = await client.chat.completions.with_raw_response.create(model="fast", messages=MESSAGES)
                content = raw.parse().choices[0].message.content
                return Sample(started, time.time(), raw.status_code, content, None)
            except openai.APIError as exc:
                return Sample(started, time.time(), getattr(exc, "status_code", None), None, repr(exc))

    async def reloads(t0: float) -> None:
        for k in range(LOAD_RELOADS):
            await asyncio.sleep(max(0.0, t0 + (k + 0.5) * duration / LOAD_RELOADS - loop.time()))
            await asyncio.to_thread(gw.write_config, configs[k % len(configs)])
            sent.append(time.time())
            gw.reload()

    try:
        t0 = loop.time()
        reloader = asyncio.create_task(reloads(t0))
        tasks: list[asyncio.Task[Sample]] = []
        for i in range(LOAD_REQUESTS):
            await asyncio.sleep(max(0.0, t0 + i / LOAD_PACE_PER_S - loop.time()))
            tasks.append(asyncio.create_task(one()))
        samples = await asyncio.gather(*tasks)
        await reloader
    finally:
        await client.close()
    return samples, sent


def test_sighup_under_load_drops_no_request(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    # Two valid configs that both serve "fast": they differ in a harmless setting and an extra model group.
    config_a = gateway_config(fresh_upstream, {"fast": "fake-fast"}, router_settings={"timeout": 30})
    config_b = gateway_config(
        fresh_upstream, {"fast": "fake-fast", "extra": "fake-extra"}, router_settings={"timeout": 45}
    )
    gw = start_gateway(config_a)
    (version_a,) = config_versions(gw)
    version_b = content_version(config_text(config_b).encode(), b"")
    mark = len(gw.json_logs())

    samples, sent = asyncio.run(_load_with_reloads(gw, [config_b, config_a]))

    failed = [s for s in samples if s.status != 200 or not s.content]
    assert failed == [], f"{len(failed)} of {len(samples)} requests failed, e.g. {failed[:3]}"
    assert len(samples) == LOAD_REQUESTS == len(fresh_upstream.requests(CHAT_PATH))
    first_start = min(s.started for s in samples)
    last_end = max(s.finished for s in samples)
    rate = len(samples) / (last_end - first_start)
    print(f"\nSIGHUP under load: {len(samples)} requests in {last_end - first_start:.2f} s = {rate:.0f} requests/s")
    assert rate >= MIN_RATE_PER_S

    wait_until(
        lambda: len(records_with(gw, "Config reloaded", after=mark)) >= LOAD_RELOADS,
        timeout=10,
        message=f"{LOAD_RELOADS} 'Config reloaded' log lines",
    )
    reloaded = records_with(gw, "Config reloaded", after=mark)
    assert len(reloaded) == LOAD_RELOADS
    assert records_with(gw, "reload failed", after=mark) == []
    assert len(sent) == LOAD_RELOADS
    # Each reload swapped the config: the versions alternate, each one naming the one it replaced.
    expected = [version_b if k % 2 == 0 else version_a for k in range(LOAD_RELOADS)]
    assert [r["version"] for r in reloaded] == expected
    assert [r["previous_version"] for r in reloaded] == [version_a, *expected[:-1]]
    # All reloads happened while the load ran (log ts is truncated to the millisecond, hence the 1 ms).
    for record in reloaded:
        assert first_start - 0.001 <= log_time(record) <= last_end, (record, first_start, last_end)
    assert min(sent) > first_start and max(sent) < last_end
    assert metric(gw, RELOADS_TOTAL, result="success") == float(LOAD_RELOADS)
    assert config_versions(gw) == {version_a}


# == 4. SIGTERM with streams in flight ===============================================================

STREAMS = 20
STREAM_WORDS = 10
STREAM_CONTENT = " ".join(f"word{i}" for i in range(STREAM_WORDS))


def test_sigterm_drains_streams_in_flight(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    # Each stream: 10 content chunks 200 ms apart, about 2 s in all.
    fresh_upstream.add_rule(
        model="fake-stream", action="slow_stream", chunks=STREAM_WORDS, chunk_delay_ms=200, content=STREAM_CONTENT
    )
    gw = start_gateway(gateway_config(fresh_upstream, {"streamer": "fake-stream", "fast": "fake-fast"}))

    async def scenario() -> tuple[list[StreamResult], httpx.Response, openai.APIStatusError, float]:
        client = gw.async_openai_client(MASTER_KEY)
        try:
            streams = await asyncio.gather(
                *(
                    client.chat.completions.create(model="streamer", messages=MESSAGES, stream=True)
                    for _ in range(STREAMS)
                )
            )
            consumers = [asyncio.create_task(consume(s)) for s in streams]
            await wait_for(
                lambda: len(fresh_upstream.requests(CHAT_PATH)) >= STREAMS, 10, f"{STREAMS} requests upstream"
            )
            gw.send_signal(signal.SIGTERM)

            async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
                await wait_for(lambda: bool(records_with(gw, "Draining")), 5, "the 'Draining' log line")
                readiness = await http.get(gw.url("/health/readiness"))
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(model="fast", messages=MESSAGES)
            # The streams were still running while the gateway answered 503 to the newcomer.
            assert not any(c.done() for c in consumers), "streams ended before the drain checks ran"
            shed_while_draining = await asyncio.to_thread(metric, gw, SHED_TOTAL, reason="draining")
            results = await asyncio.gather(*consumers)
        finally:
            await client.close()
        return results, readiness, refused.value, shed_while_draining

    results, readiness, refused, shed_while_draining = asyncio.run(scenario())

    assert readiness.status_code == 503, readiness.text
    assert refused.status_code == 503
    assert int(refused.response.headers["retry-after"]) >= 1, dict(refused.response.headers)
    assert_openai_error(refused.response, 503, code="draining")
    assert shed_while_draining == 1.0
    assert len(results) == STREAMS
    for result in results:
        assert result.error is None, result
        assert result.content == STREAM_CONTENT
        assert result.finish_reason == "stop"
    assert gw.wait_exit(timeout=15) == 0
    (shutdown,) = records_with(gw, "Graceful shutdown")
    assert shutdown["in_flight_at_start"] >= STREAMS, shutdown
    assert shutdown["clean"] is True, shutdown
    assert shutdown["abandoned"] == 0, shutdown


# == 5. drain grace timeout ==========================================================================


@dataclass(frozen=True)
class Abandoned:
    gw: GatewayHandle
    stream: StreamResult
    exit_code: int
    exited_after: float  # seconds from SIGTERM to exit


def _sigterm_with_long_stream(start_gateway: StartGateway, upstream: FakeUpstream) -> Abandoned:
    """One stream that would last 10 s, a 1 s grace timeout, SIGTERM while the stream runs."""
    upstream.add_rule(
        model="fake-stream", action="slow_stream", chunks=STREAM_WORDS, chunk_delay_ms=1000, content=STREAM_CONTENT
    )
    gw = start_gateway(
        gateway_config(upstream, {"streamer": "fake-stream"}, routeiq={"server": {"drain_timeout_seconds": 1}})
    )

    async def scenario() -> Abandoned:
        client = gw.async_openai_client(MASTER_KEY)
        try:
            stream = await client.chat.completions.create(model="streamer", messages=MESSAGES, stream=True)
            consumer = asyncio.create_task(consume(stream))
            await wait_for(lambda: len(upstream.requests(CHAT_PATH)) >= 1, 10, "the request upstream")
            signalled = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(gw.wait_exit, 9.0)
            exited_after = time.monotonic() - signalled
            result = await asyncio.wait_for(consumer, 5)
        finally:
            await client.close()
        return Abandoned(gw, result, code, exited_after)

    return asyncio.run(scenario())


def test_sigterm_grace_timeout_abandons_long_stream(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    outcome = _sigterm_with_long_stream(start_gateway, fresh_upstream)

    assert outcome.exit_code == 0
    print(f"\nexited {outcome.exited_after:.2f} s after SIGTERM with a 1 s grace timeout")
    assert outcome.exited_after < 6.0, f"exit took {outcome.exited_after:.2f} s; the stream alone would take 10 s"
    (shutdown,) = records_with(outcome.gw, "Graceful shutdown")
    assert shutdown["clean"] is False, shutdown
    assert shutdown["abandoned"] >= 1, shutdown
    # The abandoned stream was cut, not completed.
    assert outcome.stream.content != STREAM_CONTENT
    assert outcome.stream.finish_reason is None, outcome.stream


def test_stream_abandoned_at_grace_timeout_is_not_presented_as_complete(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    """docs/architecture.md: "A stream that fails after its headers were sent ends with an in-band
    `data: {"error": ...}` event, as OpenAI does." A stream cut by the drain grace timeout has failed after its
    headers; the client must be told (in-band error, or at least a broken connection), not shown a clean end."""
    outcome = _sigterm_with_long_stream(start_gateway, fresh_upstream)

    assert outcome.stream.content != STREAM_CONTENT  # it really was cut
    assert outcome.stream.error is not None, (
        f"the stream cut at the grace timeout ended like a normal response (no in-band error, no [DONE], no "
        f"connection error): the client got {outcome.stream.content!r} and no sign that it is truncated"
    )
    # The in-band error says why, so a client knows to retry rather than use the partial answer.
    assert isinstance(outcome.stream.error, openai.APIError)
    assert "shut down" in str(outcome.stream.error)


# == 6. load shedding ================================================================================


def test_load_shedding_refuses_at_once_past_max_in_flight(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    limit = 4
    fresh_upstream.add_rule(model="fake-slow", delay_ms=1500)
    gw = start_gateway(
        gateway_config(fresh_upstream, {"slow": "fake-slow"}, routeiq={"limits": {"max_in_flight": limit}})
    )

    async def scenario() -> tuple[list[Any], openai.APIStatusError]:
        client = gw.async_openai_client(MASTER_KEY)
        try:
            pending = [
                asyncio.create_task(client.chat.completions.create(model="slow", messages=MESSAGES))
                for _ in range(limit)
            ]
            await wait_for(lambda: len(fresh_upstream.requests(CHAT_PATH)) >= limit, 10, f"{limit} requests upstream")
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(model="slow", messages=MESSAGES)
            # Answered at once, not queued behind the four: none of them has finished yet.
            assert not any(t.done() for t in pending), "the 503 came only after the in-flight requests finished"
            replies = await asyncio.gather(*pending)
        finally:
            await client.close()
        return replies, refused.value

    replies, refused = asyncio.run(scenario())

    assert refused.status_code == 503
    assert int(refused.response.headers["retry-after"]) >= 1, dict(refused.response.headers)
    assert_openai_error(refused.response, 503, code="overloaded")
    assert len(replies) == limit
    assert all(r.choices[0].message.content for r in replies)
    assert len(fresh_upstream.requests(CHAT_PATH)) == limit  # the refused request never went upstream
    assert metric(gw, SHED_TOTAL, reason="overloaded") == 1.0


# == 7. start-up with an invalid or missing config ===================================================


def _run_to_exit(dirs: VolumeDirs, config_path: Path) -> subprocess.CompletedProcess[str]:
    dirs.create()
    argv = [str(gateway_script()), "--config", str(config_path), "--host", "127.0.0.1", "--port", "0"]
    return subprocess.run(argv, env=child_env(dirs.env()), capture_output=True, text=True, timeout=60, check=False)


def _startup_failure(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    failures = [r for r in records if r.get("event") == "startup_failed"]
    assert len(failures) == 1, proc.stderr
    assert failures[0]["level"] == "ERROR"
    return failures[0]


def test_startup_with_invalid_config_exits_2_naming_the_key(tmp_path: Path, fresh_upstream: FakeUpstream) -> None:
    dirs = VolumeDirs(tmp_path)
    dirs.create()
    dirs.config_path.write_text(config_text(_unknown_key(gateway_config(fresh_upstream, {"fast": "fake-fast"}))))

    proc = _run_to_exit(dirs, dirs.config_path)

    assert proc.returncode == 2, proc.stderr
    failure = _startup_failure(proc)
    assert "router_settings.num_retrys" in failure["reason"], failure
    assert "unknown key" in failure["reason"], failure
    assert not (dirs.run_dir / "gateway.pid").exists()


def test_startup_with_missing_config_exits_2(tmp_path: Path) -> None:
    dirs = VolumeDirs(tmp_path)
    missing = dirs.config_dir / "absent.yaml"

    proc = _run_to_exit(dirs, missing)

    assert proc.returncode == 2, proc.stderr
    failure = _startup_failure(proc)
    assert str(missing) in failure["reason"], failure
    assert not (dirs.run_dir / "gateway.pid").exists()


# == 8. admin reload endpoint ========================================================================


def test_admin_reload_endpoint(start_gateway: StartGateway, fresh_upstream: FakeUpstream, tmp_path: Path) -> None:
    old_config = gateway_config(fresh_upstream, {"fast": "fake-fast"})
    new_config = gateway_config(fresh_upstream, {"fast": "fake-fast", "smart": "fake-smart"})
    gw = start_gateway(old_config, env={"ADMIN_API_KEYS": "k1,k2"}, root=tmp_path / "open")
    (old_version,) = config_versions(gw)
    gw.write_config(new_config)

    assert_openai_error(admin_reload(gw, None), 401)
    assert_openai_error(admin_reload(gw, "k3"), 401)
    with http_client() as http:  # the admin API is on its own port only, off the public path
        assert http.post(gw.url("/admin/reload"), headers={"Authorization": "Bearer k2"}).status_code == 404
    assert config_versions(gw) == {old_version}  # refused calls reloaded nothing
    assert_model_not_found(gw, "smart")

    ok = admin_reload(gw, "k2")
    assert ok.status_code == 200, ok.text
    new_version = content_version(gw.config_path.read_bytes(), b"")
    assert ok.json()["reloaded"] is True
    assert ok.json()["version"] == new_version != old_version
    assert ask(gw, "smart")
    assert config_versions(gw) == {new_version}
    assert gw.wait_for_log("Config reloaded")["trigger"] == "admin"

    gw.write_config(_unknown_key(old_config))
    refused = admin_reload(gw, "k1")
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["reloaded"] is False
    assert body["version"] == new_version
    assert "router_settings.num_retrys" in body["detail"], body
    assert ask(gw, "smart")  # the previous (good) config still serves
    assert config_versions(gw) == {new_version}
    assert metric(gw, RELOADS_TOTAL, result="failure") == 1.0

    closed = start_gateway(old_config, root=tmp_path / "closed")  # no ADMIN_API_KEYS
    assert_openai_error(admin_reload(closed, "k1"), 403)
    assert_openai_error(admin_reload(closed, None), 403)


# == 9. pidfile ======================================================================================


def test_pidfile_written_at_start_and_removed_on_clean_exit(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream
) -> None:
    gw = start_gateway(gateway_config(fresh_upstream, {"fast": "fake-fast"}))
    pidfile = gw.dirs.run_dir / "gateway.pid"
    assert pidfile.read_text().strip() == str(gw.pid)

    gw.send_signal(signal.SIGTERM)
    assert gw.wait_exit(timeout=15) == 0
    assert not pidfile.exists()
