"""The config-sync agent end to end: an operator uploads config to S3 with the `aws` CLI, the agent validates it
and writes it into the gateway's volume, the gateway reloads, and clients (the official `openai` SDK) see the
change; a bad upload is rejected and the old config serves on.

Real processes over loopback: moto's S3 server, `routeiq-config-sync`, `routeiq-gateway`, the fake upstream.
CONFIG_SYNC_INTERVAL is 0.5 s, so every "within one interval" check is short.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from harness.config_sync_process import (
    AwsCli,
    ConfigSyncHandle,
    StartConfigSync,
    agent_env,
    launch_config_sync,
    run_config_sync,
    sha256_hex,
    start_moto_at,
)
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway, VolumeDirs, launch_gateway
from harness.moto_s3 import MotoS3
from harness.otlp_collector import OtlpCollector
from harness.processes import child_env, free_port, wait_until
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from routeiq_shared.config_schema import content_version, load_config

pytestmark = pytest.mark.integration

INTERVAL = 0.5  # CONFIG_SYNC_INTERVAL for every agent here
PROPAGATION_BUDGET = INTERVAL + 2.0  # the issue: a change is served within interval + 2 s of the upload
MASTER_KEY = "sk-config-sync-master"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
CHAT_PATH = "/v1/chat/completions"
ATTEMPTS = "routeiq_config_sync_attempts_total"
SIGNALS = "routeiq_config_sync_reload_signals_total"


# -- config ------------------------------------------------------------------------------------------


def config_dict(
    upstream: FakeUpstream, models: Sequence[str], *, timeout: float = 30.0, api_key: str = "sk-up"
) -> dict[str, Any]:
    """A config serving each model group through the fake upstream (upstream model `fake-<name>`)."""
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/fake-{name}", "api_base": upstream.base_url, "api_key": api_key},
            }
            for name in models
        ],
        "router_settings": {"num_retries": 0, "timeout": timeout},
        "general_settings": {"master_key": MASTER_KEY},
    }


def dump(config: Mapping[str, Any]) -> bytes:
    return yaml.safe_dump(dict(config), sort_keys=False).encode()


def config_bytes(upstream: FakeUpstream, models: Sequence[str], **kwargs: Any) -> bytes:
    return dump(config_dict(upstream, models, **kwargs))


def candidates_bytes(candidates: Mapping[str, str]) -> bytes:
    """llm_candidates.json in LLMRouter's shape: {name: {input_price, output_price, model}}."""
    body = {name: {"input_price": 0.15, "output_price": 0.6, "model": model} for name, model in candidates.items()}
    return json.dumps(body, indent=2).encode()


def volume_snapshot(dirs: VolumeDirs) -> dict[str, bytes]:
    """Every file in the config directory (temp files included), name → bytes."""
    return {p.name: p.read_bytes() for p in sorted(dirs.config_dir.iterdir()) if p.is_file()}


# -- clients -----------------------------------------------------------------------------------------


def ask(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=MESSAGES)
    content = reply.choices[0].message.content
    assert content, f"empty reply from {model!r}: {reply}"
    return content


def assert_model_not_found(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, model)
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


def wait_model(client: openai.OpenAI, model: str, timeout: float) -> float:
    """Ask for `model` every ~20 ms until it answers; return time.time() of the first answer. Only 404 (model
    not there yet) is retried: any other error fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ask(client, model)
            return time.time()
        except openai.NotFoundError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"model {model!r} not served after {timeout:.1f}s") from None
        time.sleep(0.02)


def gateway_metric(gw: GatewayHandle, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        text = http.get(gw.url("/metrics")).text
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def reloaded_records(gw: GatewayHandle, after: int = 0) -> list[dict[str, Any]]:
    return [r for r in gw.json_logs()[after:] if r.get("message") == "Config reloaded"]


def failed_within(start: float, budget: float) -> str:
    return f"{time.time() - start:.2f}s after the upload (budget {budget:.1f}s)"


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def aws(moto_s3: MotoS3, tmp_path: Path) -> AwsCli:
    """The operator's `aws` CLI on the session's moto server."""
    return AwsCli.for_moto(moto_s3, tmp_path / "aws")


def sync_once_into(dirs: VolumeDirs, source: str, s3_env: Mapping[str, str]) -> None:
    """The init container: `routeiq-config-sync --once` must leave a valid config on the volume."""
    done = run_config_sync(["--once"], agent_env(dirs.create(), source, s3_env=s3_env))
    assert done.returncode == 0, done.stderr


# == 1. roll a change =================================================================================


def test_uploaded_change_is_served_within_one_interval(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
    tmp_path: Path,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, ["alpha"])
    aws.upload(v1, f"{source}config.yaml")
    dirs = VolumeDirs(tmp_path)
    sync_once_into(dirs, source, moto_s3.env())
    assert dirs.config_path.read_bytes() == v1

    gw = start_gateway(v1.decode())  # on the file the init container synced (same bytes)
    agent = start_config_sync(source, s3_env=moto_s3.env(), interval=INTERVAL)
    agent.wait_version(content_version(v1, b""))
    client = gw.openai_client(MASTER_KEY)
    assert ask(client, "alpha")
    assert_model_not_found(client, "beta")
    mark = len(gw.json_logs())

    v2 = config_bytes(fresh_upstream, ["alpha", "beta"])
    uploaded = aws.upload(v2, f"{source}config.yaml")
    served = wait_model(client, "beta", timeout=PROPAGATION_BUDGET)
    assert served - uploaded <= PROPAGATION_BUDGET, failed_within(uploaded, PROPAGATION_BUDGET)
    assert ask(client, "alpha")

    version2 = content_version(v2, b"")
    etag = moto_s3.client().head_object(Bucket=s3_bucket, Key="prod/config.yaml")["ETag"]
    health = agent.wait_version(version2)
    assert health["status"] == "ok"
    assert health["etag"] == etag
    assert health["consecutive_failures"] == 0
    assert health["last_error"] is None
    assert dirs.config_path.read_bytes() == v2
    record = gw.wait_for_log(lambda r: r.get("message") == "Config reloaded", after=mark)
    assert record["version"] == version2
    assert record["previous_version"] == content_version(v1, b"")
    assert agent.metric(SIGNALS, method="signal", result="ok") == 1.0


# == 2. bad input =====================================================================================


@dataclass
class Pod:
    """One gateway and one agent on one volume, shared by the bad-input cases (module scope)."""

    upstream: FakeUpstream
    aws: AwsCli
    gw: GatewayHandle
    agent: ConfigSyncHandle
    dirs: VolumeDirs
    source: str
    models: list[str]
    candidates: bytes | None = None
    client: openai.OpenAI = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.gw.openai_client(MASTER_KEY)

    def logs(self) -> str:
        return (
            f"--- agent log tail ---\n{self.agent.log_tail(2500)}\n"
            f"--- gateway log tail ---\n{self.gw.process.log_tail(2500)}"
        )


MAX_BYTES = 4096  # CONFIG_MAX_BYTES of the shared agent


@pytest.fixture(scope="module")
def pod(moto_s3: MotoS3, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    root = tmp_path_factory.mktemp("bad-input-pod")
    aws = AwsCli.for_moto(moto_s3, root / "aws")
    bucket = moto_s3.new_bucket("bad-input")
    source = f"s3://{bucket}/prod/"
    models = ["steady"]
    first = config_bytes(fake_upstream, models)
    aws.upload(first, f"{source}config.yaml")
    dirs = VolumeDirs(root)
    sync_once_into(dirs, source, moto_s3.env())
    gw = launch_gateway(dirs, first.decode(), log_name="gateway.log")
    try:
        agent = launch_config_sync(
            dirs, source, s3_env=moto_s3.env(), env={"CONFIG_MAX_BYTES": str(MAX_BYTES)}, interval=INTERVAL
        )
    except BaseException:
        gw.stop()
        raise
    try:
        agent.wait_version(content_version(first, b""))
        yield Pod(fake_upstream, aws, gw, agent, dirs, source, models)
    finally:
        agent.stop()
        gw.stop()


@dataclass(frozen=True)
class Upload:
    name: str
    body: bytes
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True)
class BadInput:
    id: str
    result: str  # the agent's reason, as in /health/config-sync last_result and the attempts metric
    make: Callable[[Pod, str], list[Upload]]  # (pod, name of the model the upload would add) -> uploads
    error_has: tuple[str, ...]  # substrings of last_error (the key's path where there is one)
    # Also watch the next poll: the cached rejection (the store's ETag unchanged) and the refetch paths.
    recheck: bool = False


def _next(pod: Pod, new_model: str) -> dict[str, Any]:
    """What the operator meant to upload: the current models plus a new one."""
    return config_dict(pod.upstream, [*pod.models, new_model])


def _yaml_syntax(pod: Pod, new: str) -> list[Upload]:
    broken = dump(_next(pod, new)).replace(b"model_list:\n", b"model_list: [\n", 1)
    return [Upload("config.yaml", broken)]


def _unknown_key(pod: Pod, new: str) -> list[Upload]:
    config = _next(pod, new)
    config["router_settings"]["num_retrys"] = 1  # a typo of num_retries
    return [Upload("config.yaml", dump(config))]


def _empty(pod: Pod, new: str) -> list[Upload]:
    return [Upload("config.yaml", b"")]


def _too_large(pod: Pod, new: str) -> list[Upload]:
    body = dump(_next(pod, new))  # valid, but padded past CONFIG_MAX_BYTES with comments
    body += b"# padding\n" * ((MAX_BYTES - len(body)) // 10 + 20)
    assert len(body) > MAX_BYTES
    return [Upload("config.yaml", body)]


def _unknown_candidate(pod: Pod, new: str) -> list[Upload]:
    # The candidates first, then a config that would be fine alone: validated together, both are refused.
    return [
        Upload("llm_candidates.json", candidates_bytes({"cheap": "no-such-model"})),
        Upload("config.yaml", dump(_next(pod, new))),
    ]


def _malformed_env_ref(pod: Pod, new: str) -> list[Upload]:
    # The reference's syntax is the agent's to check; its value is the gateway's (test_config_sync_verdict.py).
    config = _next(pod, new)
    config["model_list"][-1]["litellm_params"]["api_key"] = "os.environ/NOT-A-NAME"
    return [Upload("config.yaml", dump(config))]


def _malformed_file_ref(pod: Pod, new: str) -> list[Upload]:
    # Refused by its syntax before any gateway reads it: a `..` that would climb out of the secret directory.
    config = _next(pod, new)
    config["model_list"][-1]["litellm_params"]["api_key"] = "os.file/var/run/secrets/routeiq/../../../etc/shadow"
    return [Upload("config.yaml", dump(config))]


def _alias_bomb(pod: Pod, new: str) -> list[Upload]:
    config = _next(pod, new)
    anchors = ['      a0: &a0 ["lol"]'] + [f"      a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 11)]
    body = dump(config) + b"x-bomb:\n" + "\n".join(anchors).encode() + b"\n"
    return [Upload("config.yaml", body)]


def _empty_master_key(pod: Pod, new: str) -> list[Upload]:
    config = _next(pod, new)
    config["general_settings"]["master_key"] = ""
    return [Upload("config.yaml", dump(config))]


def _not_utf8(pod: Pod, new: str) -> list[Upload]:
    return [Upload("config.yaml", dump(_next(pod, new)) + "# café\n".encode("latin-1"))]


def _half_uploaded(pod: Pod, new: str) -> list[Upload]:
    full = dump(_next(pod, new))
    return [Upload("config.yaml", full[: len(full) // 2], {"sha256": sha256_hex(full)})]


BAD_INPUTS = [
    BadInput("yaml-syntax", "invalid", _yaml_syntax, ("config.yaml", "YAML syntax error at line")),
    BadInput(
        "unknown-key", "invalid", _unknown_key, ("config.yaml: router_settings.num_retrys: unknown key",), recheck=True
    ),
    BadInput("empty", "invalid", _empty, ("config.yaml: empty file",)),
    BadInput("too-large", "too_large", _too_large, ("prod/config.yaml", f"over the {MAX_BYTES} limit"), recheck=True),
    BadInput(
        "unknown-candidate",
        "invalid",
        _unknown_candidate,
        ("llm_candidates.json: cheap.model", "'no-such-model' is not in model_list"),
    ),
    BadInput(
        "malformed-env-ref",
        "invalid",
        _malformed_env_ref,
        ("litellm_params.api_key", "os.environ/NAME"),
    ),
    BadInput(
        "malformed-file-ref",
        "invalid",
        _malformed_file_ref,
        ("litellm_params.api_key", "os.file/ABSOLUTE/PATH"),
    ),
    BadInput("alias-bomb", "invalid", _alias_bomb, ("config.yaml", "alias bomb")),
    BadInput("empty-master-key", "invalid", _empty_master_key, ("general_settings.master_key", "shorter than 8")),
    BadInput("not-utf8", "invalid", _not_utf8, ("config.yaml: not UTF-8",)),
    BadInput("half-uploaded", "incomplete", _half_uploaded, ("config.yaml", "sha256 differs")),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_upload_is_rejected_and_the_old_config_serves_on(pod: Pod, case: BadInput) -> None:
    new_model = f"added-{case.id}"
    before = volume_snapshot(pod.dirs)
    attempts = pod.agent.metric(ATTEMPTS, result=case.result)
    mark = len(pod.gw.json_logs())

    uploaded = 0.0
    for upload in case.make(pod, new_model):
        uploaded = pod.aws.upload(upload.body, f"{pod.source}{upload.name}", upload.metadata)

    # Rejected by a sync that started after the upload had completed, and said so on the health endpoint.
    health = pod.agent.wait_health(
        lambda h: (h["last_attempt_at"] or 0) > uploaded and h["consecutive_failures"] >= 1,
        timeout=5,
        message=f"a failed sync after the {case.id} upload",
    )
    assert health["last_result"] == case.result, (health, pod.logs())
    assert health["status"] == "stale"
    for text in case.error_has:
        assert text in (health["last_error"] or ""), (text, health["last_error"])
    assert health["version"] == content_version(before["config.yaml"], before.get("llm_candidates.json", b""))
    assert pod.agent.metric(ATTEMPTS, result=case.result) > attempts
    assert pod.agent.metric("routeiq_config_sync_consecutive_failures") >= 1

    # The old config serves on, the rejected one was never loaded, the volume is untouched.
    for model in pod.models:
        assert ask(pod.client, model)
    assert_model_not_found(pod.client, new_model)
    assert volume_snapshot(pod.dirs) == before
    if case.recheck:
        # It stays rejected at the next poll (the store still holds it), and still nothing changes.
        failures = health["consecutive_failures"]
        again = pod.agent.wait_health(lambda h: h["consecutive_failures"] > failures, timeout=5, message="next poll")
        assert again["status"] == "stale" and again["last_result"] == case.result
        assert again["last_error"] == health["last_error"]
        assert volume_snapshot(pod.dirs) == before
    assert reloaded_records(pod.gw, after=mark) == []

    # The next valid upload is taken as usual.
    models = [*pod.models, new_model]
    good = config_bytes(pod.upstream, models)
    candidates = pod.candidates
    if case.id == "unknown-candidate":
        candidates = candidates_bytes({"cheap": "steady"})
        pod.aws.upload(candidates, f"{pod.source}llm_candidates.json")
    uploaded = pod.aws.upload(good, f"{pod.source}config.yaml")
    served = wait_model(pod.client, new_model, timeout=PROPAGATION_BUDGET)
    assert served - uploaded <= PROPAGATION_BUDGET
    health = pod.agent.wait_version(content_version(good, candidates or b""))
    assert health["consecutive_failures"] == 0 and health["last_error"] is None
    assert pod.dirs.config_path.read_bytes() == good
    if candidates is not None:
        assert pod.dirs.candidates_path.read_bytes() == candidates
    pod.models, pod.candidates = models, candidates


# == 3. S3 stopped ====================================================================================


def test_store_outage_keeps_last_good_files_and_recovers(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    fresh_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    port = free_port()
    moto = start_moto_at(tmp_path / "moto", port)
    try:
        aws = AwsCli.for_moto(moto, tmp_path / "aws")
        bucket = "routeiq-outage"
        source = f"s3://{bucket}/prod/"
        moto.client().create_bucket(Bucket=bucket)
        v1 = config_bytes(fresh_upstream, ["steady"])
        aws.upload(v1, f"{source}config.yaml")
        dirs = VolumeDirs(tmp_path)
        gw = start_gateway(v1.decode())  # the volume starts with the store's bytes (the init container: test 1)
        agent = start_config_sync(source, s3_env=moto.env(), interval=INTERVAL)
        agent.wait_version(content_version(v1, b""))
        before = volume_snapshot(dirs)
        client = gw.openai_client(MASTER_KEY)

        moto.stop()
        first = agent.wait_health(
            lambda h: h["consecutive_failures"] >= 1, timeout=10, message="a failed sync with S3 down"
        )
        assert first["status"] == "stale" and first["last_result"] == "store_unavailable", first
        assert "prod/config.yaml" in first["last_error"]
        later = agent.wait_health(
            lambda h: h["consecutive_failures"] > first["consecutive_failures"],
            timeout=10,
            message="failures piling up",
        )
        assert later["status"] == "stale" and later["last_result"] == "store_unavailable"
        assert later["staleness_seconds"] > first["staleness_seconds"] > 0
        assert later["last_success_at"] == first["last_success_at"]
        assert agent.metric(ATTEMPTS, result="store_unavailable") >= 2
        assert agent.metric("routeiq_config_sync_consecutive_failures") >= later["consecutive_failures"]
        assert agent.readiness_status() == 200  # synced once: the pod keeps serving on the last good files
        assert volume_snapshot(dirs) == before
        assert ask(client, "steady")

        moto = start_moto_at(tmp_path / "moto", port)  # same address, empty (moto keeps state in memory)
        moto.client().create_bucket(Bucket=bucket)
        v2 = config_bytes(fresh_upstream, ["steady", "recovered"])
        upload_started = time.time()
        aws.upload(v2, f"{source}config.yaml")
        wait_model(client, "recovered", timeout=10)
        health = agent.wait_version(content_version(v2, b""))
        assert health["consecutive_failures"] == 0 and health["last_error"] is None
        assert health["last_success_at"] > upload_started  # (a sync's start time: it may precede the CLI's exit)
        assert dirs.config_path.read_bytes() == v2
    finally:
        moto.stop()


# == 4. --once ========================================================================================


def test_once_writes_a_valid_source_and_exits_0(
    moto_s3: MotoS3, s3_bucket: str, fresh_upstream: FakeUpstream, aws: AwsCli, tmp_path: Path
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    config = config_bytes(fresh_upstream, ["steady"])
    candidates = candidates_bytes({"cheap": "steady"})
    aws.upload(candidates, f"{source}llm_candidates.json")
    aws.upload(config, f"{source}config.yaml")
    dirs = VolumeDirs(tmp_path).create()

    done = run_config_sync(["--once"], agent_env(dirs, source, s3_env=moto_s3.env()))

    assert done.returncode == 0, done.stderr
    version = content_version(config, candidates)
    assert f"applied, version {version}" in done.stderr
    assert volume_snapshot(dirs) == {"config.yaml": config, "llm_candidates.json": candidates}


ONCE_FAILURES = {
    "invalid": ("sync failed (invalid)", "config.yaml: router_settings.num_retrys: unknown key"),
    "missing": ("sync failed (missing)", "prod/config.yaml does not exist"),
    "unreachable": ("sync failed (store_unavailable)", "prod/config.yaml"),
}


@pytest.mark.parametrize("case", list(ONCE_FAILURES))
def test_once_exits_non_zero_with_a_clear_message_and_writes_nothing(
    case: str, moto_s3: MotoS3, s3_bucket: str, fresh_upstream: FakeUpstream, aws: AwsCli, tmp_path: Path
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    s3_env = moto_s3.env()
    if case == "invalid":
        config = config_dict(fresh_upstream, ["steady"])
        config["router_settings"]["num_retrys"] = 1
        aws.upload(dump(config), f"{source}config.yaml")
    elif case == "unreachable":
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        s3_env = {**s3_env, "AWS_ENDPOINT_URL_S3": closed, "AWS_ENDPOINT_URL": closed}
    dirs = VolumeDirs(tmp_path).create()

    started = time.monotonic()
    done = run_config_sync(["--once"], agent_env(dirs, source, s3_env=s3_env), timeout=60)

    assert done.returncode != 0
    for text in ONCE_FAILURES[case]:
        assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(dirs.config_dir.iterdir()) == []
    assert time.monotonic() - started < 30


# == 5. readiness =====================================================================================


def test_readiness_waits_for_the_first_successful_sync(
    start_config_sync: StartConfigSync, moto_s3: MotoS3, s3_bucket: str, fresh_upstream: FakeUpstream, aws: AwsCli
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    agent = start_config_sync(source, s3_env=moto_s3.env(), interval=INTERVAL)
    health = agent.wait_health(lambda h: h["consecutive_failures"] >= 1, timeout=10, message="a failed sync")
    assert health["status"] == "failing" and health["last_result"] == "missing"
    assert health["last_success_at"] is None and health["staleness_seconds"] is None
    assert agent.readiness_status() == 503
    assert not agent.dirs.config_path.exists()

    config = config_bytes(fresh_upstream, ["steady"])
    aws.upload(config, f"{source}config.yaml")
    wait_until(lambda: agent.readiness_status() == 200, timeout=PROPAGATION_BUDGET, message="readiness 200")
    assert agent.health()["status"] == "ok"
    assert agent.dirs.config_path.read_bytes() == config


# == 6. zero dropped requests =========================================================================

LOAD_PACE_PER_S = 150.0  # offered; the issue demands >= 100 achieved, so leave headroom on a busy machine
LOAD_CONCURRENCY = 16
ROLLS = 10
MIN_RATE_PER_S = 100.0


@dataclass(frozen=True)
class Sample:
    started: float
    finished: float
    ok: bool
    error: str | None


async def _load_while_rolling(
    gw: GatewayHandle, agent: ConfigSyncHandle, aws: AwsCli, source: str, versions: list[bytes]
) -> tuple[list[Sample], list[float]]:
    """Paced chat requests for "steady" (LOAD_PACE_PER_S, at most LOAD_CONCURRENCY in flight) while each of
    `versions` is uploaded with the aws CLI and awaited on the agent's health before the next. Returns the
    samples and the upload completion times."""
    client = gw.async_openai_client(MASTER_KEY)
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    uploads: list[float] = []
    done = asyncio.Event()

    async def worker(tickets: Iterator[int], t0: float) -> None:
        for i in tickets:
            if done.is_set():
                return
            await asyncio.sleep(max(0.0, t0 + i / LOAD_PACE_PER_S - loop.time()))
            started = time.time()
            try:
                reply = await client.chat.completions.create(model="steady", messages=MESSAGES)
                ok = bool(reply.choices[0].message.content)
                samples.append(Sample(started, time.time(), ok, None if ok else "empty reply"))
            except openai.APIError as exc:
                samples.append(Sample(started, time.time(), False, repr(exc)))

    async def roll() -> None:
        await asyncio.sleep(0.5)  # load first
        for body in versions:
            proc = await asyncio.create_subprocess_exec(
                *aws.argv(*aws.cp_args(body, f"{source}config.yaml")),
                env=aws.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            assert proc.returncode == 0, err
            uploads.append(time.time())
            version = content_version(body, b"")
            deadline = loop.time() + 10
            while (await asyncio.to_thread(agent.health)).get("version") != version:
                assert loop.time() < deadline, f"agent did not apply {version}"
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # and load after the last reload
        done.set()

    try:
        t0 = loop.time()
        tickets = iter(range(10**9))
        workers = [asyncio.create_task(worker(tickets, t0)) for _ in range(LOAD_CONCURRENCY)]
        await roll()
        await asyncio.gather(*workers)
    finally:
        done.set()
        await client.close()
    return samples, uploads


def test_no_request_dropped_while_ten_versions_roll_through_s3(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
    tmp_path: Path,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v0 = config_bytes(fresh_upstream, ["steady"])
    aws.upload(v0, f"{source}config.yaml")
    gw = start_gateway(v0.decode())  # the volume starts with the store's bytes (the init container: test 1)
    agent = start_config_sync(source, s3_env=moto_s3.env(), interval=INTERVAL)
    agent.wait_version(content_version(v0, b""))
    # Each version keeps "steady" and changes something harmless: the timeout, and every other one a model.
    versions = [
        config_bytes(fresh_upstream, ["steady"] + ([f"extra-{k}"] if k % 2 else []), timeout=30.0 + k)
        for k in range(1, ROLLS + 1)
    ]
    applied = agent.metric(ATTEMPTS, result="applied")
    mark = len(gw.json_logs())
    fresh_upstream.clear_requests()

    samples, uploads = asyncio.run(_load_while_rolling(gw, agent, aws, source, versions))

    failed = [s for s in samples if not s.ok]
    first_start = min(s.started for s in samples)
    last_end = max(s.finished for s in samples)
    rate = len(samples) / (last_end - first_start)
    wanted = [content_version(v, b"") for v in versions]
    wait_until(lambda: len(reloaded_records(gw, after=mark)) >= ROLLS, timeout=5, message=f"{ROLLS} reloads")
    reloaded = reloaded_records(gw, after=mark)
    print(
        f"\nconfig rolls under load: {len(samples)} requests in {last_end - first_start:.2f} s = {rate:.0f} "
        f"requests/s, {len(failed)} failed; {len(uploads)} versions uploaded, {len(reloaded)} 'Config reloaded'"
    )
    assert failed == [], f"{len(failed)} of {len(samples)} requests failed, e.g. {failed[:3]}"
    assert len(fresh_upstream.requests(CHAT_PATH)) == len(samples)
    assert rate >= MIN_RATE_PER_S
    assert len(uploads) == ROLLS and first_start < uploads[0] and uploads[-1] < last_end
    assert [r["version"] for r in reloaded] == wanted
    assert [r for r in gw.json_logs()[mark:] if "reload failed" in str(r.get("message"))] == []
    assert agent.metric(ATTEMPTS, result="applied") - applied == ROLLS
    assert [labels["version"] for labels, _ in gateway_metric(gw, "routeiq_config_info")] == [wanted[-1]]


# == 7. canary rollout ================================================================================


def test_canary_promote_and_rollback_on_a_versioned_bucket(
    moto_s3: MotoS3, fresh_upstream: FakeUpstream, aws: AwsCli
) -> None:
    bucket = moto_s3.new_bucket("canary")
    aws.enable_versioning(bucket)
    prod, canary = f"s3://{bucket}/prod/", f"s3://{bucket}/canary/"
    stable = config_bytes(fresh_upstream, ["steady"])
    trial = config_bytes(fresh_upstream, ["steady", "trial"])
    aws.upload(stable, f"{prod}config.yaml")
    aws.upload(trial, f"{canary}config.yaml")
    env = child_env(moto_s3.env())
    s3 = moto_s3.client()

    def prod_config() -> bytes:
        body: bytes = s3.get_object(Bucket=bucket, Key="prod/config.yaml")["Body"].read()
        return body

    promoted = run_config_sync(["rollout", "promote", "--from", canary, "--to", prod], env)
    assert promoted.returncode == 0, promoted.stderr
    assert f"promoted config.yaml from {canary} to {prod}" in promoted.stdout
    assert prod_config() == trial

    rolled_back = run_config_sync(["rollout", "rollback", "--source", prod], env)
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert "restored config.yaml to version" in rolled_back.stdout
    assert prod_config() == stable

    invalid = config_dict(fresh_upstream, ["steady", "trial"])
    invalid["router_settings"]["num_retrys"] = 1
    aws.upload(dump(invalid), f"{canary}config.yaml")
    versions_before = s3.list_object_versions(Bucket=bucket, Prefix="prod/config.yaml")["Versions"]
    refused = run_config_sync(["rollout", "promote", "--from", canary, "--to", prod], env)
    assert refused.returncode == 1
    assert "config.yaml: router_settings.num_retrys: unknown key" in refused.stderr
    assert prod_config() == stable
    versions_after = s3.list_object_versions(Bucket=bucket, Prefix="prod/config.yaml")["Versions"]
    assert [v["VersionId"] for v in versions_after] == [v["VersionId"] for v in versions_before]


# == 8. no pidfile: admin reload over HTTP ===========================================================


def test_without_a_pidfile_the_agent_reloads_over_http(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
    tmp_path: Path,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, ["steady"])
    aws.upload(v1, f"{source}config.yaml")
    gw = start_gateway(v1.decode(), env={"ADMIN_API_KEYS": "sk-admin"})  # the store's bytes on the volume
    agent_run_dir = tmp_path / "agent-run"  # no gateway.pid here: the agent cannot signal
    agent_run_dir.mkdir()
    agent = start_config_sync(
        source,
        s3_env=moto_s3.env(),
        interval=INTERVAL,
        env={"ROUTEIQ_RUN_DIR": str(agent_run_dir), "GATEWAY_ADMIN_URL": gw.admin_url, "GATEWAY_ADMIN_KEY": "sk-admin"},
    )
    agent.wait_version(content_version(v1, b""))
    client = gw.openai_client(MASTER_KEY)
    mark = len(gw.json_logs())

    v2 = config_bytes(fresh_upstream, ["steady", "via-http"])
    uploaded = aws.upload(v2, f"{source}config.yaml")
    served = wait_model(client, "via-http", timeout=PROPAGATION_BUDGET)
    assert served - uploaded <= PROPAGATION_BUDGET

    agent.wait_version(content_version(v2, b""))
    assert agent.metric(SIGNALS, method="http", result="ok") >= 1
    assert agent.metric(SIGNALS, method="signal", result="failed") >= 1
    record = gw.wait_for_log(lambda r: r.get("message") == "Config reloaded", after=mark)
    assert record["trigger"] == "admin" and record["version"] == content_version(v2, b"")


# == 9. traces ========================================================================================


def test_a_sync_is_traced_with_fetch_validate_write_signal(
    otlp_collector: OtlpCollector,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    aws: AwsCli,
    tmp_path: Path,
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    config = config_bytes(fresh_upstream, ["steady"])
    aws.upload(config, f"{source}config.yaml")
    dirs = VolumeDirs(tmp_path).create()
    env = agent_env(dirs, source, s3_env=moto_s3.env(), extra=otlp_collector.env("routeiq-config-sync-test"))

    done = run_config_sync(["--once"], env)
    assert done.returncode == 0, done.stderr

    version = content_version(config, b"")
    spans = otlp_collector.wait_for_spans(lambda s: len(s) >= 5, timeout=10)
    (root,) = [s for s in spans if s.name == "config_sync"]
    assert root.parent_span_id is None
    assert root.attributes["routeiq.config_version"] == version
    assert root.resource_attributes["service.name"] == "routeiq-config-sync-test"
    children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
    assert sorted(children) == ["fetch", "signal", "validate", "write"]
    assert all(s.trace_id == root.trace_id for s in children.values())
    for name in ("validate", "write", "signal"):
        assert children[name].attributes["routeiq.config_version"] == version, name
    order = sorted(children.values(), key=lambda s: s.start_ns)
    assert [s.name for s in order] == ["fetch", "validate", "write", "signal"]


# == 10. regressions: a deleted candidates file, and promote with prod's candidates ===========================


def test_deleting_a_rejected_candidates_file_lets_the_next_config_through(
    start_config_sync: StartConfigSync, moto_s3: MotoS3, s3_bucket: str, fresh_upstream: FakeUpstream, aws: AwsCli
) -> None:
    source = f"s3://{s3_bucket}/prod/"
    v1 = config_bytes(fresh_upstream, ["steady"])
    aws.upload(v1, f"{source}config.yaml")
    agent = start_config_sync(source, s3_env=moto_s3.env(), interval=INTERVAL)
    agent.wait_version(content_version(v1, b""))
    uploaded = aws.upload(candidates_bytes({"cheap": "no-such-model"}), f"{source}llm_candidates.json")
    agent.wait_health(
        lambda h: (h["last_attempt_at"] or 0) > uploaded and h["last_result"] == "invalid",
        message="the bad candidates file rejected",
    )

    # The operator takes the bad file away and uploads a new config: the store now holds a valid config alone.
    aws.run("s3", "rm", f"{source}llm_candidates.json", "--only-show-errors")
    v2 = config_bytes(fresh_upstream, ["steady", "after-rm"])
    uploaded = aws.upload(v2, f"{source}config.yaml")
    health = agent.wait_health(lambda h: (h["last_attempt_at"] or 0) > uploaded, message="a sync after the upload")

    assert health["last_error"] is None, health
    assert health["status"] == "ok" and health["version"] == content_version(v2, b"")
    assert agent.dirs.config_path.read_bytes() == v2
    assert not agent.dirs.candidates_path.exists()


def test_promote_never_leaves_prod_with_a_pair_the_pods_reject(
    moto_s3: MotoS3, s3_bucket: str, fresh_upstream: FakeUpstream, aws: AwsCli
) -> None:
    prod, canary = f"s3://{s3_bucket}/prod/", f"s3://{s3_bucket}/canary/"
    prod_candidates = candidates_bytes({"cheap": "legacy"})
    aws.upload(prod_candidates, f"{prod}llm_candidates.json")
    aws.upload(config_bytes(fresh_upstream, ["steady", "legacy"]), f"{prod}config.yaml")
    # The canary drops "legacy" and has no candidates file of its own: alone it is valid.
    canary_config = config_bytes(fresh_upstream, ["steady", "trial"])
    aws.upload(canary_config, f"{canary}config.yaml")

    promoted = run_config_sync(["rollout", "promote", "--from", canary, "--to", prod], child_env(moto_s3.env()))

    s3 = moto_s3.client()
    prod_config = s3.get_object(Bucket=s3_bucket, Key="prod/config.yaml")["Body"].read()
    prod_cands = s3.get_object(Bucket=s3_bucket, Key="prod/llm_candidates.json")["Body"].read()
    if promoted.returncode == 0:
        # Promoted: then every pod must accept what prod now holds (the validator pods and gateways run).
        load_config(prod_config, prod_cands, {})
    else:
        assert "llm_candidates.json: cheap.model" in promoted.stderr
        assert prod_config == config_bytes(fresh_upstream, ["steady", "legacy"])
        assert prod_cands == prod_candidates


def test_rollback_restores_the_candidates_that_were_live_with_the_config(
    moto_s3: MotoS3, fresh_upstream: FakeUpstream, aws: AwsCli
) -> None:
    bucket = moto_s3.new_bucket("pair")
    aws.enable_versioning(bucket)
    prod = f"s3://{bucket}/prod/"
    # Era 1, then era 2: each a candidates file and the config naming its model, uploaded candidates first.
    cands1, config1 = candidates_bytes({"cheap": "old"}), config_bytes(fresh_upstream, ["steady", "old"])
    cands2, config2 = candidates_bytes({"cheap": "new"}), config_bytes(fresh_upstream, ["steady", "new"])
    for body, name in ((cands1, "llm_candidates.json"), (config1, "config.yaml")):
        aws.upload(body, f"{prod}{name}")
    time.sleep(1.1)  # S3's LastModified has one-second resolution: keep the two eras apart
    for body, name in ((cands2, "llm_candidates.json"), (config2, "config.yaml")):
        aws.upload(body, f"{prod}{name}")

    rolled_back = run_config_sync(["rollout", "rollback", "--source", prod], child_env(moto_s3.env()))

    assert rolled_back.returncode == 0, rolled_back.stderr
    s3 = moto_s3.client()
    restored_config = s3.get_object(Bucket=bucket, Key="prod/config.yaml")["Body"].read()
    restored_cands = s3.get_object(Bucket=bucket, Key="prod/llm_candidates.json")["Body"].read()
    assert (restored_config, restored_cands) == (config1, cands1)
    load_config(restored_config, restored_cands, {})  # a pair the pods accept
