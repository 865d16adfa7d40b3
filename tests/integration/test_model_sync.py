"""The model-sync agent and the gateway's live router-model swap, end to end.

A training job publishes a signed router model with `routeiq-model-sync publish`; the agent (a real
`routeiq-model-sync` process polling every 0.5 s) verifies it and renames it into the shared volume; the real
`routeiq-gateway` on that volume verifies it again, loads it in a worker thread and swaps it in, and clients
(the official `openai` SDK) asking for the virtual model `auto` see which artifact version chose their model
(`x-routeiq-router-version`) and which model answered (`x-routeiq-model`). Every bad artifact is refused with
its reason in health, metrics and log while the previous version serves on.

Real processes over loopback: moto's S3 server (and one file:// registry), redis-server, the fake upstream.
Routers: v1 answers "fast" for every prompt, v2 and v3 answer "strong" (tests/harness/router_artifacts.py). Most
tests share one pod (a gateway and an agent on one volume, module scope) and leave it serving v1 as they found it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis as redis_client
import yaml
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway
from harness.model_sync_process import (
    ModelSyncHandle,
    StartModelSync,
    launch_model_sync,
    model_sync_script,
    parse_metrics,
    run_model_sync,
)
from harness.moto_s3 import MotoS3
from harness.processes import ManagedProcess, child_env, free_port, wait_until
from harness.redis_server import SETUP_HINT, RedisServer, find_redis_server
from harness.router_artifacts import (
    ModelRegistry,
    SigningKeys,
    keygen,
    write_raising_pickle,
    write_router,
)
from harness.s3_counting_proxy import CountingProxy
from openai.types.chat import ChatCompletionMessageParam
from routeiq_shared.atomic import atomic_write
from routeiq_shared.manifest import (
    POINTER_KIND,
    Artifact,
    CurrentPointer,
    Manifest,
    TrainingData,
    sha256_file,
    utc_now_rfc3339,
)
from routeiq_shared.signing import load_private_key, sign_manifest, sign_pointer

pytestmark = pytest.mark.integration

NAME = "router"  # the artifact's name in the registry and on the volume
INTERVAL = 0.5  # MODEL_SYNC_INTERVAL of every agent here
FALLBACK_DELAY_MAX = 1.0  # MODEL_SYNC_FALLBACK_DELAY_MAX
SYNC_BUDGET = 8.0  # from a registry change to the agent's report: a few polls
VERSION_HEADER = "x-routeiq-router-version"
MODEL_HEADER = "x-routeiq-model"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_PATH = "/v1/chat/completions"
CHOICE = {"v1": "fast", "v2": "strong", "v3": "strong"}  # what each published router answers
AGENT_REFUSED = "Model not updated; the installed version keeps serving"
GATEWAY_REFUSED = "Router model not loaded; the previous one keeps serving"
GATEWAY_LOADED = "Router model loaded"
DOWNLOADS = "routeiq_model_sync_downloads_total"
VERIFICATION_FAILURES = "routeiq_model_sync_verification_failures_total"


# -- config, clients, metrics --------------------------------------------------------------------------------


def router_config(upstream: FakeUpstream, *, pin: str | None = None) -> dict[str, Any]:
    """Two real model groups on the fake upstream, and the virtual model `auto` choosing between them."""
    router: dict[str, Any] = {"name": "auto", "artifact": NAME, "candidates": ["fast", "strong"]}
    if pin is not None:
        router["model_version"] = pin
    return {
        "model_list": [
            {
                "model_name": group,
                "litellm_params": {"model": f"openai/fake-{group}", "api_base": upstream.base_url, "api_key": "sk-up"},
            }
            for group in ("fast", "strong")
        ],
        "router_settings": {"num_retries": 0, "timeout": 30},
        "routeiq": {"routers": [router]},
    }


@dataclass(frozen=True)
class Routed:
    version: str  # x-routeiq-router-version: the artifact version that chose ("none": no model loaded)
    model: str  # x-routeiq-model: the model group that answered


def ask_auto(client: openai.OpenAI) -> Routed:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    reply = raw.parse()
    assert raw.status_code == 200 and reply.choices[0].message.content, (raw.status_code, reply)
    return Routed(raw.headers[VERSION_HEADER], raw.headers[MODEL_HEADER])


def wait_serving(client: openai.OpenAI, version: str, timeout: float = SYNC_BUDGET) -> Routed:
    """Ask for `auto` until the router version `version` answers; every answer must be a 200."""
    seen: list[Routed] = []

    def check() -> bool:
        seen.append(ask_auto(client))
        return seen[-1].version == version

    try:
        wait_until(check, timeout, interval=0.05, message=f"auto routed by {version}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last answers {seen[-3:]}") from None
    return seen[-1]


def assert_serving(client: openai.OpenAI, version: str, times: int = 5) -> None:
    answers = [ask_auto(client) for _ in range(times)]
    assert answers == [Routed(version, CHOICE[version])] * times


def gateway_metrics(gw: GatewayHandle) -> list[tuple[str, dict[str, str], float]]:
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        return parse_metrics(http.get(gw.url("/metrics")).text)


def pick(samples: list[tuple[str, dict[str, str], float]], metric: str, /, **labels: str) -> float:
    """One sample's value from a parsed /metrics snapshot (0.0 when absent)."""
    for sample, sample_labels, value in samples:
        if sample == metric and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def gateway_metric(gw: GatewayHandle, metric: str, /, **labels: str) -> float:
    return pick(gateway_metrics(gw), metric, **labels)


def model_info_versions(gw: GatewayHandle) -> list[str]:
    return [
        labels["version"]
        for sample, labels, value in gateway_metrics(gw)
        if sample == "routeiq_router_model_info" and labels.get("name") == NAME and value == 1.0
    ]


def reload_counts(gw: GatewayHandle) -> dict[str, float]:
    """routeiq_router_model_reloads_total of the router, by result."""
    return {
        labels["result"]: value
        for sample, labels, value in gateway_metrics(gw)
        if sample == "routeiq_router_model_reloads_total" and labels.get("name") == NAME
    }


def records(handle: GatewayHandle | ModelSyncHandle, message: str, after: int = 0) -> list[dict[str, Any]]:
    return [r for r in handle.json_logs()[after:] if r.get("message") == message]


def volume_files(dirs: VolumeDirs) -> dict[str, bytes]:
    """The models directory, name → bytes (an in-flight download temp file excluded)."""
    return {p.name: p.read_bytes() for p in sorted(dirs.models_dir.iterdir()) if not p.name.endswith(".download")}


def model_files(dirs: VolumeDirs) -> dict[str, bytes]:
    """The models and their manifests, without the accepted CURRENT pointer (which a new signed pointer moves
    on even when the version it names is refused)."""
    return {name: data for name, data in volume_files(dirs).items() if not name.endswith(".current.json")}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the registry on moto ------------------------------------------------------------------------------------


@dataclass
class S3Registry:
    """A registry at s3://bucket/models/ on the session's moto server: the CLI for publish/rollback, boto3
    for what a broken publisher or an attacker would do to the objects."""

    moto: MotoS3
    bucket: str
    key_file: Path  # the publisher's signing.key: set_current signs CURRENT as `rollback --key` does
    prefix: str = "models/"
    cli: ModelRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.cli = ModelRegistry(self.uri, self.moto.env())

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def put(self, data: bytes, *parts: str) -> None:
        self.moto.client().put_object(Bucket=self.bucket, Key=self.key(*parts), Body=data)

    def get(self, *parts: str) -> bytes:
        body: bytes = self.moto.client().get_object(Bucket=self.bucket, Key=self.key(*parts))["Body"].read()
        return body

    def set_current(self, version: str) -> None:
        """A new signed CURRENT pointer (a higher sequence), as `publish --set-current`/`rollback` write it,
        in-process (the CLI's start-up would cost a second a call)."""
        pointer = CurrentPointer(
            kind=POINTER_KIND,
            name=NAME,
            version=version,
            sequence=self._next_sequence(),
            created_at=utc_now_rfc3339(),
        )
        self.put(sign_pointer(pointer, load_private_key(self.key_file)).to_json(), NAME, "CURRENT")

    def _next_sequence(self) -> int:
        floor = time.time_ns() // 1_000_000
        try:
            return max(self.pointer().sequence + 1, floor)
        except (ValueError, self.moto.client().exceptions.NoSuchKey):
            return floor

    def pointer(self) -> CurrentPointer:
        return CurrentPointer.from_json(self.get(NAME, "CURRENT"))

    def current(self) -> str:
        return self.pointer().version

    def objects(self) -> dict[str, str]:
        """key → ETag of every object under the prefix."""
        listing = self.moto.client().list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}

    def gets(self, *parts: str) -> int:
        """GET requests for one object that moto's server has logged (its request log is the S3 side)."""
        path = f"/{self.bucket}/{self.key(*parts)}"
        text = self.moto.process.log_text()
        return text.count(f'"GET {path} ') + text.count(f'"GET {path}?')


def publish_all(registry: ModelRegistry, jobs: list[tuple[str, Path, Path, bool]]) -> dict[str, str]:
    """Publish (version, artifact, key, set_current) jobs with the real CLI, side by side; return each
    command's stdout by version."""
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        done = list(
            pool.map(lambda job: registry.publish(NAME, job[0], job[1], job[2], set_current=job[3], check=False), jobs)
        )
    for (version, *_), result in zip(jobs, done, strict=True):
        assert result.returncode == 0, f"publish {version}: {result.stderr}"
    return {version: result.stdout for (version, *_), result in zip(jobs, done, strict=True)}


def signed_manifest(artifact: Path, version: str, key: Path, *, sha256: str | None = None) -> Manifest:
    """A manifest for `artifact` built and signed here with routeiq_shared, as a publisher would; `sha256`
    overrides the real digest (a publisher that signed a wrong one)."""
    real_sha, size = sha256_file(artifact)
    manifest = Manifest(
        name=NAME,
        version=version,
        created_at=utc_now_rfc3339(),
        artifact=Artifact(sha256=sha256 or real_sha, size=size, format="joblib"),
        library_versions={"python": "3"},
        training_data=TrainingData(digest="sha256:test", rows=1),
        metrics={},
    )
    return sign_manifest(manifest, load_private_key(key))


@pytest.fixture
def registry(moto_s3: MotoS3, s3_bucket: str, keys: SigningKeys) -> S3Registry:
    return S3Registry(moto_s3, s3_bucket, keys.private)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained routers saved with joblib: v1 → "fast", v2 and v3 → "strong"."""
    root = tmp_path_factory.mktemp("artifacts")
    return {version: write_router(root / f"{version}.pkl", choice) for version, choice in CHOICE.items()}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return keygen(tmp_path_factory.mktemp("keys") / "trusted")


# == the shared pod: one gateway and one agent on one volume ==================================================


@dataclass(frozen=True)
class Boot:
    """What the pod's start-up showed, recorded by the fixture: the gateway started first on an empty models
    directory, then the agent installed v1 (published by the CLI with --set-current)."""

    publish_stdout: str  # `routeiq-model-sync publish … --set-current` of v1
    before_model: Routed  # `auto` answered before any model was installed
    agent_started: float  # time.time()
    entry: dict[str, Any]  # /health/model-sync models.router once v1 was installed
    health: dict[str, Any]  # the whole document, then
    first_v1: Routed  # the first answer routed by v1
    agent_metrics: list[tuple[str, dict[str, str], float]]
    gateway_metrics: list[tuple[str, dict[str, str], float]]
    agent_logs: list[dict[str, Any]]
    gateway_logs: list[dict[str, Any]]
    files: dict[str, bytes]  # the models directory
    upstream_models: list[str]  # the upstream model of every chat request the gateway sent, in order


@dataclass
class Pod:
    """One gateway and one agent on one volume, serving v1 from an S3 registry (module scope: the swap, the
    rollbacks, the bad inputs and the gateway's own check run on it). Every test leaves it as it found it:
    CURRENT at v1, config.yaml without a pin, the published objects as the CLI wrote them, v1 serving."""

    gw: GatewayHandle
    agent: ModelSyncHandle
    dirs: VolumeDirs
    registry: S3Registry
    keys: SigningKeys
    artifacts: dict[str, Path]
    upstream: FakeUpstream
    published: dict[str, bytes] = field(default_factory=dict)  # registry key → bytes, as the CLI wrote them
    boot: Boot | None = None
    client: openai.OpenAI = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.gw.openai_client()

    def write_config(self, *, pin: str | None = None) -> None:
        """config.yaml on the shared volume, as config-sync writes it (atomically, then SIGHUP)."""
        self.gw.write_config(router_config(self.upstream, pin=pin))
        self.gw.reload()

    def restore(self) -> None:
        """Back to the pod's resting state (see the class docstring)."""
        if b"model_version" in self.dirs.config_path.read_bytes():
            self.write_config()
        self.registry.set_current("v1")
        self.agent.wait_model(
            NAME,
            lambda m: m.get("version") == "v1" and m.get("last_error") is None,
            timeout=SYNC_BUDGET,
            message="back at v1",
        )
        wait_serving(self.client, "v1")
        client = self.registry.moto.client()
        for key, body in self.published.items():
            if client.get_object(Bucket=self.registry.bucket, Key=key)["Body"].read() != body:
                client.put_object(Bucket=self.registry.bucket, Key=key, Body=body)


BROKEN = "v2-broken"  # a properly published version the bad-input cases break
# Its own version: the agent remembers a version whose bytes it refused (not fetched again until its manifest
# changes or a backoff passes), so a second break of BROKEN's bytes would not be fetched at all.
TRUNCATED = "v2-truncated"


def audit_spool(dirs: VolumeDirs) -> list[dict[str, Any]]:
    """The gateway's audit records still in its spool (open and sealed segments), oldest first."""
    lines = [line for p in sorted((dirs.run_dir / "audit").glob("seg-*.jsonl")) for line in p.read_bytes().splitlines()]
    return sorted((json.loads(line) for line in lines), key=lambda r: r["at"])


@pytest.fixture(scope="module")
def pod(
    moto_s3: MotoS3,
    redis_server: RedisServer,
    fake_upstream: FakeUpstream,
    artifacts: dict[str, Path],
    keys: SigningKeys,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pod]:
    root = tmp_path_factory.mktemp("pod")
    other_keys = keygen(root / "other-key")
    registry = S3Registry(moto_s3, moto_s3.new_bucket("pod"), keys.private)
    raising = write_raising_pickle(root / "raises.pkl")
    # Published properly by the real CLI (the bad-input cases then break BROKEN in the registry, and put it back;
    # it is never installed, so the agent has no verified copy of it on disk).
    stdout = publish_all(
        registry.cli,
        [
            ("v1", artifacts["v1"], keys.private, True),
            ("v2", artifacts["v2"], keys.private, False),
            (BROKEN, artifacts["v2"], keys.private, False),
            (TRUNCATED, artifacts["v2"], keys.private, False),
            ("v2-otherkey", artifacts["v2"], other_keys.private, False),
            ("v2-raises", raising, keys.private, False),
        ],
    )
    published = {key: registry.get(*key[len(registry.prefix) :].split("/")) for key in registry.objects()}
    dirs = VolumeDirs(root)
    fake_upstream.reset()
    # The gateway first, on an empty models directory; then the agent.
    gw = launch_gateway(dirs, router_config(fake_upstream), env={"MODEL_SIGNING_PUBLIC_KEY": str(keys.public)})
    agent: ModelSyncHandle | None = None
    try:
        before_model = ask_auto(gw.openai_client())
        agent_started = time.time()
        agent = launch_model_sync(
            dirs, registry.uri, s3_env=moto_s3.env(), public_key=keys.public, redis_url=redis_server.url
        )
        pod = Pod(gw, agent, dirs, registry, keys, artifacts, fake_upstream, published)
        entry = agent.wait_version(NAME, "v1", timeout=SYNC_BUDGET)
        health = agent.health()
        first_v1 = wait_serving(pod.client, "v1")
        pod.boot = Boot(
            publish_stdout=stdout["v1"],
            before_model=before_model,
            agent_started=agent_started,
            entry=entry,
            health=health,
            first_v1=first_v1,
            agent_metrics=agent.metric_samples(),
            gateway_metrics=gateway_metrics(gw),
            agent_logs=agent.json_logs(),
            gateway_logs=gw.json_logs(),
            files=volume_files(dirs),
            upstream_models=[r["body"]["model"] for r in fake_upstream.requests(CHAT_PATH)],
        )
        yield pod
    finally:
        if agent is not None:
            agent.stop()
            print(f"\n---- pod: model-sync log tail ----\n{agent.log_tail()}")
        gw.stop()
        print(f"\n---- pod: gateway log tail ----\n{gw.process.log_tail()}")


# == 1. publish v1 → served ==================================================================================


def test_published_v1_is_installed_and_served(pod: Pod) -> None:
    boot = pod.boot
    assert boot is not None
    v1_bytes = pod.artifacts["v1"].read_bytes()
    # Before the agent had installed anything, `auto` fell back to its first candidate.
    assert boot.before_model == Routed("none", "fast")
    assert "published router v1" in boot.publish_stdout and "(now CURRENT)" in boot.publish_stdout
    # Then the agent installed v1 and the gateway, watching the volume, loaded it without a restart.
    assert boot.first_v1 == Routed("v1", "fast")
    assert boot.upstream_models[0] == "fake-fast" and set(boot.upstream_models) == {"fake-fast"}
    entry = boot.entry
    assert set(entry) >= {"version", "sha256", "synced_at", "last_error"}
    assert entry["version"] == "v1" and entry["sha256"] == sha256_hex(v1_bytes)
    assert boot.agent_started < entry["synced_at"] < boot.agent_started + SYNC_BUDGET
    assert entry["last_error"] is None
    assert boot.health["status"] == "ok" and boot.health["redis"] == "ok"
    assert boot.health["registry"] == pod.registry.uri and list(boot.health["models"]) == [NAME]
    # The agent's metrics: what it installed and how (a Redis permit, one download of v1's bytes).
    agent_metrics = boot.agent_metrics
    assert pick(agent_metrics, "routeiq_model_sync_version_info", name=NAME, version="v1") == 1.0
    assert pick(agent_metrics, DOWNLOADS, name=NAME, result="installed") == 1.0
    assert pick(agent_metrics, "routeiq_model_sync_bytes_total") == len(v1_bytes)
    assert pick(agent_metrics, "routeiq_model_sync_lock_waits_total") == 1.0
    assert pick(agent_metrics, "routeiq_model_sync_redis_fallbacks_total") == 0.0
    # The gateway's: the version serving, one good load.
    gateway = boot.gateway_metrics
    assert pick(gateway, "routeiq_router_model_info", name=NAME, version="v1") == 1.0
    assert pick(gateway, "routeiq_router_model_reloads_total", name=NAME, result="ok") == 1.0
    assert pick(gateway, "routeiq_router_model_load_seconds_count", name=NAME) == 1.0
    (loaded,) = [r for r in boot.gateway_logs if r.get("message") == GATEWAY_LOADED]
    assert loaded["version"] == "v1" and loaded["previous_version"] is None
    (installed,) = [r for r in boot.agent_logs if r.get("message") == "Model installed"]
    assert installed["version"] == "v1" and installed["result"] == "installed"
    permit = [r for r in boot.agent_logs if r.get("message") == "Download permit acquired"]
    assert len(permit) == 1 and permit[0]["trace_id"] == installed["trace_id"]  # one sync, one trace
    # On the volume: exactly what was published, and nothing else.
    assert sorted(boot.files) == ["router.current.json", "router.manifest.json", "router.pkl"]
    assert CurrentPointer.from_json(boot.files["router.current.json"]).version == "v1"  # the accepted CURRENT
    assert boot.files["router.pkl"] == v1_bytes
    assert boot.files["router.manifest.json"] == pod.registry.get(NAME, "v1", "manifest.json")
    # And now, after whatever other tests did to the pod: v1 serves, in agent and gateway alike.
    assert_serving(pod.client, "v1")
    assert pod.agent.metric("routeiq_model_sync_version_info", name=NAME, version="v1") == 1.0
    assert model_info_versions(pod.gw) == ["v1"]


# == 2. publish a new version → swapped under load ===========================================================

LOAD_PACE_PER_S = 150.0
LOAD_CONCURRENCY = 16
MIN_RATE_PER_S = 80.0


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic()
    finished: float
    ok: bool
    version: str | None
    model: str | None
    error: str | None


async def _swap_under_load(
    gw: GatewayHandle, publish_argv: list[str], publish_env: Mapping[str, str], mark: int
) -> tuple[list[Sample], float, float]:
    """Paced `auto` requests (LOAD_PACE_PER_S, at most LOAD_CONCURRENCY in flight) for 1 s, then publish the
    new version with the CLI, keep the load on until the gateway logs the swap and for 1 s more. Returns the
    samples, when the publish command was started and when the swap was seen in the log (time.monotonic())."""
    client = gw.async_openai_client()
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    done = asyncio.Event()
    times: dict[str, float] = {}

    async def one() -> Sample:
        started = time.monotonic()
        try:
            raw = await client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
            reply = raw.parse()
            ok = raw.status_code == 200 and bool(reply.choices[0].message.content)
            return Sample(
                started, time.monotonic(), ok, raw.headers.get(VERSION_HEADER), raw.headers.get(MODEL_HEADER), None
            )
        except openai.APIError as exc:
            return Sample(started, time.monotonic(), False, None, None, repr(exc))

    async def worker(tickets: Iterator[int], t0: float) -> None:
        for i in tickets:
            if done.is_set():
                return
            await asyncio.sleep(max(0.0, t0 + i / LOAD_PACE_PER_S - loop.time()))
            samples.append(await one())

    async def swap() -> None:
        await asyncio.sleep(1.0)  # load first
        times["publishing"] = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *publish_argv, env=dict(publish_env), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err
        deadline = loop.time() + SYNC_BUDGET
        while not await asyncio.to_thread(lambda: records(gw, GATEWAY_LOADED, after=mark)):
            assert loop.time() < deadline, f"no swap logged within {SYNC_BUDGET} s of the publish"
            await asyncio.sleep(0.05)
        times["swapped"] = time.monotonic()
        await asyncio.sleep(1.0)  # and load after the swap
        done.set()

    try:
        t0 = loop.time()
        tickets = iter(range(10**9))
        workers = [asyncio.create_task(worker(tickets, t0)) for _ in range(LOAD_CONCURRENCY)]
        await swap()
        await asyncio.gather(*workers)
    finally:
        done.set()
        await client.close()
    return samples, times["publishing"], times["swapped"]


def test_published_version_is_swapped_in_with_no_failed_request_under_load(pod: Pod) -> None:
    gw, agent, upstream = pod.gw, pod.agent, pod.upstream
    mark = len(gw.json_logs())
    reloads = reload_counts(gw)
    installed = agent.metric(DOWNLOADS, name=NAME, result="installed")
    upstream.clear_requests()

    # v3 is the "strong" router, published by the real CLI while the load runs.
    argv = [str(model_sync_script()), *pod.registry.cli.publish_args(NAME, "v3", pod.artifacts["v3"], pod.keys.private)]
    argv.append("--set-current")
    try:
        samples, publishing, swapped = asyncio.run(_swap_under_load(gw, argv, pod.registry.cli.env, mark))

        failed = [s for s in samples if not s.ok]
        assert failed == [], f"{len(failed)} of {len(samples)} requests failed, e.g. {failed[:3]}"
        assert len(upstream.requests(CHAT_PATH)) == len(samples)  # each answered once, by the upstream
        samples.sort(key=lambda s: s.started)
        rate = len(samples) / (samples[-1].finished - samples[0].started)
        before = [s for s in samples if s.finished < publishing]
        after = [s for s in samples if s.started > swapped]
        print(
            f"\nrouter swap under load: {len(samples)} requests at {rate:.0f}/s, 0 failed; "
            f"{len(before)} finished before the publish started, {len(after)} started after the swap was logged"
        )
        assert rate >= MIN_RATE_PER_S
        assert len(before) >= 50 and len(after) >= 50
        # Each answer is consistent: the version that chose, and the model its choice sent the request to.
        assert {(s.version, s.model) for s in samples} == {("v1", "fast"), ("v3", "strong")}
        assert {s.version for s in before} == {"v1"}
        assert {s.version for s in after} == {"v3"}
        # The swap is atomic: once any client has seen v3, no request started later is routed by v1.
        first_v3_seen = min(s.finished for s in samples if s.version == "v3")
        assert [s for s in samples if s.started > first_v3_seen and s.version != "v3"] == []

        (loaded,) = records(gw, GATEWAY_LOADED, after=mark)
        assert loaded["level"] == "INFO" and loaded["version"] == "v3" and loaded["previous_version"] == "v1"
        assert records(gw, GATEWAY_REFUSED, after=mark) == []
        assert model_info_versions(gw) == ["v3"]
        assert reload_counts(gw) == {**reloads, "ok": reloads["ok"] + 1}
        entry = agent.wait_version(NAME, "v3")
        assert entry["sha256"] == sha256_hex(pod.artifacts["v3"].read_bytes())
        assert agent.metric("routeiq_model_sync_version_info", name=NAME, version="v3") == 1.0
        assert agent.metric("routeiq_model_sync_version_info", name=NAME, version="v1") == 0.0
        assert agent.metric(DOWNLOADS, name=NAME, result="installed") == installed + 1

        # The version it replaced is kept beside it for an instant rollback.
        files = volume_files(pod.dirs)
        assert sorted(files) == [
            "router.current.json",
            "router.manifest.json",
            "router.pkl",
            "router.previous.manifest.json",
            "router.previous.pkl",
        ]
        assert files["router.pkl"] == pod.artifacts["v3"].read_bytes()
        assert json.loads(files["router.manifest.json"])["version"] == "v3"
        assert files["router.previous.pkl"] == pod.artifacts["v1"].read_bytes()
        assert json.loads(files["router.previous.manifest.json"])["version"] == "v1"
    finally:
        pod.restore()


# == 4. rollback =============================================================================================


def test_rollback_through_current_restores_the_kept_copy_without_a_download(pod: Pod) -> None:
    agent, registry = pod.agent, pod.registry
    registry.set_current("v2")  # what `publish --set-current` writes
    try:
        agent.wait_version(NAME, "v2")
        assert wait_serving(pod.client, "v2") == Routed("v2", "strong")
        assert json.loads(volume_files(pod.dirs)["router.previous.manifest.json"])["version"] == "v1"
        restored = agent.metric(DOWNLOADS, name=NAME, result="restored_previous")
        downloaded = agent.metric("routeiq_model_sync_bytes_total")
        v1_gets, polls = registry.gets(NAME, "v1", "model.pkl"), registry.gets(NAME, "CURRENT")
        agent_mark = len(agent.json_logs())

        done = registry.cli.rollback(NAME, "v1", pod.keys.private)  # the operator's command

        assert done.stdout.strip() == "router: CURRENT is now v1"
        assert registry.current() == "v1"
        entry = agent.wait_version(NAME, "v1")
        assert entry["sha256"] == sha256_hex(pod.artifacts["v1"].read_bytes())
        assert wait_serving(pod.client, "v1") == Routed("v1", "fast")
        # The gateway's audit trail (kept in its spool: this pod ships it nowhere) has the swap back, by digest
        v1_sha, v2_sha = (sha256_hex(pod.artifacts[v].read_bytes()) for v in ("v1", "v2"))
        swaps = [r for r in audit_spool(pod.dirs) if r["action"] == "model.swap" and r["target"] == f"model:{NAME}@v1"]
        assert swaps and swaps[-1]["actor"] == {"subject": "gateway", "how": "system"}
        assert (swaps[-1]["before_digest"], swaps[-1]["after_digest"], swaps[-1]["result"]) == (v2_sha, v1_sha, "ok")
        assert agent.metric(DOWNLOADS, name=NAME, result="restored_previous") == restored + 1
        assert agent.metric("routeiq_model_sync_bytes_total") == downloaded
        (record,) = [r for r in agent.json_logs()[agent_mark:] if r.get("message") == "Model installed"]
        assert record["result"] == "restored_previous" and record["version"] == "v1"
        # The S3 side: moto logs each request once answered; after two more polls of CURRENT, still no GET of v1.
        wait_until(lambda: registry.gets(NAME, "CURRENT") >= polls + 2, SYNC_BUDGET, message="two more polls")
        assert registry.gets(NAME, "v1", "model.pkl") == v1_gets
        files = volume_files(pod.dirs)
        assert files["router.pkl"] == pod.artifacts["v1"].read_bytes()
        assert files["router.previous.pkl"] == pod.artifacts["v2"].read_bytes()  # and v2 is kept in turn
    finally:
        pod.restore()


def test_rollback_through_the_config_pin_wins_over_current(pod: Pod) -> None:
    agent, registry = pod.agent, pod.registry
    registry.set_current("v2")
    try:
        agent.wait_version(NAME, "v2")
        wait_serving(pod.client, "v2")
        agent_mark = len(agent.json_logs())

        pod.write_config(pin="v1")  # `model_version: v1` in config.yaml on the shared volume

        entry = agent.wait_version(NAME, "v1")
        assert entry["sha256"] == sha256_hex(pod.artifacts["v1"].read_bytes())
        assert wait_serving(pod.client, "v1") == Routed("v1", "fast")
        assert registry.current() == "v2"  # CURRENT still says v2: the pin wins …
        (record,) = [r for r in agent.json_logs()[agent_mark:] if r.get("message") == "Model installed"]
        assert record["version"] == "v1"
        synced = agent.metric("routeiq_model_sync_last_success_timestamp_seconds", name=NAME)
        wait_until(
            lambda: (
                agent.metric("routeiq_model_sync_last_success_timestamp_seconds", name=NAME) > synced + 2 * INTERVAL
            ),
            SYNC_BUDGET,
            message="passes with the pin for two intervals more",
        )
        assert agent.model(NAME)["version"] == "v1"  # … pass after pass
        assert agent.model(NAME)["last_error"] is None
        assert_serving(pod.client, "v1")

        pod.write_config()  # unpinned: CURRENT again
        agent.wait_version(NAME, "v2")
        wait_serving(pod.client, "v2")
    finally:
        pod.restore()


# == 3. bad input ============================================================================================


@dataclass(frozen=True)
class BadInput:
    id: str
    reason: str  # the agent's result code: health last_result, metric label, log "result"
    error_has: str  # a substring of health last_error
    verification: bool  # counted in routeiq_model_sync_verification_failures_total too
    fetches_artifact: bool  # the refusal comes after the download (bytes checks), not before (manifest checks)
    make: Callable[[Pod], str]  # breaks the registry; returns the version CURRENT is then set to


def _tampered(pod: Pod) -> str:
    data = bytearray(pod.registry.get(NAME, BROKEN, "model.pkl"))
    data[len(data) // 2] ^= 0xFF  # other bytes, same size
    pod.registry.put(bytes(data), NAME, BROKEN, "model.pkl")
    return BROKEN


def _bad_signature(pod: Pod) -> str:
    manifest = json.loads(pod.registry.get(NAME, BROKEN, "manifest.json"))
    value = bytearray(base64.b64decode(manifest["signature"]["value"]))
    value[0] ^= 0x01  # still 64 bytes of valid base64, by the trusted key's id, but not its signature
    manifest["signature"]["value"] = base64.b64encode(bytes(value)).decode()
    pod.registry.put(json.dumps(manifest).encode(), NAME, BROKEN, "manifest.json")
    return BROKEN


def _other_key(pod: Pod) -> str:
    return "v2-otherkey"  # published and signed properly, by a key the pod does not trust


def _wrong_sha256(pod: Pod) -> str:
    # Only a publisher holding the key can sign a wrong digest: a manifest built and signed here, over v1's.
    wrong = sha256_hex(pod.artifacts["v1"].read_bytes())
    manifest = signed_manifest(pod.artifacts["v2"], "v2-wrongsha", pod.keys.private, sha256=wrong)
    pod.registry.put(pod.artifacts["v2"].read_bytes(), NAME, "v2-wrongsha", "model.pkl")
    pod.registry.put(manifest.to_json(), NAME, "v2-wrongsha", "manifest.json")
    return "v2-wrongsha"


def _truncated(pod: Pod) -> str:
    data = pod.registry.get(NAME, TRUNCATED, "model.pkl")
    pod.registry.put(data[: len(data) // 2], NAME, TRUNCATED, "model.pkl")
    return TRUNCATED


def _unsigned(pod: Pod) -> str:
    manifest = signed_manifest(pod.artifacts["v2"], "v2-unsigned", pod.keys.private).with_signature(None)
    assert b"signature" not in manifest.to_json()
    pod.registry.put(pod.artifacts["v2"].read_bytes(), NAME, "v2-unsigned", "model.pkl")
    pod.registry.put(manifest.to_json(), NAME, "v2-unsigned", "manifest.json")
    return "v2-unsigned"


def _not_json(pod: Pod) -> str:
    pod.registry.put(pod.artifacts["v2"].read_bytes(), NAME, "v2-notjson", "model.pkl")
    pod.registry.put(b"{ this is not JSON\n", NAME, "v2-notjson", "manifest.json")
    return "v2-notjson"


def _missing(pod: Pod) -> str:
    return "v2-never-published"


BAD_INPUTS = [
    BadInput("tampered-artifact", "sha256_mismatch", "manifest says", True, True, _tampered),
    BadInput("bad-signature", "bad_signature", "signature does not match", True, False, _bad_signature),
    BadInput("other-key", "unknown_key", "signed by key", True, False, _other_key),
    BadInput("wrong-sha256", "sha256_mismatch", "manifest says", True, True, _wrong_sha256),
    BadInput("truncated", "size_mismatch", "bytes, manifest says", True, True, _truncated),
    BadInput("unsigned", "unsigned", "has no signature", True, False, _unsigned),
    BadInput("not-json", "bad_manifest", "not valid JSON", True, False, _not_json),
    BadInput("missing-version", "missing_version", "is not in the registry", False, False, _missing),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_artifact_is_refused_and_v1_serves_on(pod: Pod, case: BadInput) -> None:
    agent, gw = pod.agent, pod.gw
    before = model_files(pod.dirs)
    assert before["router.pkl"] == pod.artifacts["v1"].read_bytes()
    v1_sha = sha256_hex(pod.artifacts["v1"].read_bytes())
    downloads = agent.metric(DOWNLOADS, name=NAME, result=case.reason)
    failures = agent.metric(VERIFICATION_FAILURES, reason=case.reason)
    agent_mark, gw_mark = len(agent.json_logs()), len(gw.json_logs())
    reloads = reload_counts(gw)

    version = case.make(pod)
    gets = pod.registry.gets(NAME, version, "model.pkl")
    pod.registry.set_current(version)
    try:
        entry = agent.wait_model(
            NAME, lambda m: m.get("last_result") == case.reason, SYNC_BUDGET, f"the agent refusing {version}"
        )
        # Health: the installed version is still v1, and why the new one is not.
        assert entry["version"] == "v1" and entry["sha256"] == v1_sha
        assert case.error_has in (entry["last_error"] or ""), entry
        assert agent.health()["status"] == "degraded"
        # Metrics and log.
        assert agent.metric(DOWNLOADS, name=NAME, result=case.reason) > downloads
        verification = agent.metric(VERIFICATION_FAILURES, reason=case.reason)
        assert verification > failures if case.verification else verification == failures == 0.0
        record = agent.wait_for_log(
            lambda r: r.get("message") == AGENT_REFUSED and r.get("result") == case.reason, after=agent_mark
        )
        assert record["level"] == "ERROR" and record["model"] == NAME and record["serving_version"] == "v1"
        assert case.error_has in record["reason"]
        # Nothing was renamed into place; the gateway saw no new manifest and serves v1 on.
        assert_serving(pod.client, "v1")
        assert model_files(pod.dirs) == before
        assert records(gw, GATEWAY_LOADED, after=gw_mark) == records(gw, GATEWAY_REFUSED, after=gw_mark) == []
        assert reload_counts(gw) == reloads
        assert model_info_versions(gw) == ["v1"]
        # Refused again at the next poll (the registry still says so), and still nothing changes.
        counted = agent.metric(DOWNLOADS, name=NAME, result=case.reason)
        wait_until(
            lambda: agent.metric(DOWNLOADS, name=NAME, result=case.reason) > counted,
            SYNC_BUDGET,
            message="the next refusal",
        )
        assert agent.model(NAME)["version"] == "v1"
        assert model_files(pod.dirs) == before
        # A signature or manifest problem is found before a byte of the artifact is fetched.
        fetched = pod.registry.gets(NAME, version, "model.pkl") - gets
        assert fetched >= 1 if case.fetches_artifact else fetched == 0, fetched
    finally:
        pod.restore()
    # No temp file left behind, and the same v1 still in place.
    assert sorted(p.name for p in pod.dirs.models_dir.iterdir()) == sorted([*before, "router.current.json"])
    assert model_files(pod.dirs) == before


def test_pickle_that_raises_on_load_is_never_swapped_in(pod: Pod) -> None:
    """Signed and intact, so the agent installs it; unpickling it raises, so the gateway keeps v1."""
    gw, agent = pod.gw, pod.agent
    gw_mark = len(gw.json_logs())
    failed = gateway_metric(gw, "routeiq_router_model_reloads_total", name=NAME, result="load_failed")
    assert failed == 0.0

    pod.registry.set_current("v2-raises")
    try:
        agent.wait_version(NAME, "v2-raises", timeout=SYNC_BUDGET)
        record = gw.wait_for_log(lambda r: r.get("message") == GATEWAY_REFUSED, after=gw_mark)
        assert record["level"] == "ERROR" and record["result"] == "load_failed", record
        assert record["model"] == NAME and record["serving_version"] == "v1"
        assert "v2-raises" in record["reason"] and "ZeroDivisionError" in record["reason"]
        assert gateway_metric(gw, "routeiq_router_model_reloads_total", name=NAME, result="load_failed") == 1.0
        assert_serving(pod.client, "v1")
        assert model_info_versions(gw) == ["v1"]
        assert records(gw, GATEWAY_LOADED, after=gw_mark) == []
        refused = [r for r in audit_spool(pod.dirs) if r["result"] == "load_failed"]
        assert refused and refused[-1]["action"] == "model.swap" and refused[-1]["after_digest"] is None
        assert refused[-1]["before_digest"] == sha256_hex(pod.artifacts["v1"].read_bytes())
    finally:
        pod.restore()
    # Back at v1 from the copy the agent kept: the gateway loads it again.
    reloaded = gw.wait_for_log(lambda r: r.get("message") == GATEWAY_LOADED, after=gw_mark)
    assert reloaded["version"] == "v1" and reloaded["previous_version"] == "v1"
    assert agent.model(NAME)["last_result"] in ("restored_previous", "unchanged")


def test_gateway_refuses_a_tampered_file_written_past_the_agent(pod: Pod) -> None:
    """The gateway's own check: a valid signed manifest beside other bytes, written straight into the models
    directory while the agent is stopped (SIGSTOP), is refused; v1 serves on."""
    gw, models = pod.gw, pod.dirs.models_dir
    before = volume_files(pod.dirs)
    mark = len(gw.json_logs())
    reloads = reload_counts(gw)
    tampered = bytearray(pod.artifacts["v2"].read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # v2's size, other bytes …
    manifest = pod.registry.get(NAME, "v2", "manifest.json")  # … and v2's valid, signed manifest

    pod.agent.process.send_signal(signal.SIGSTOP)
    try:
        atomic_write(models / "router.pkl", bytes(tampered))
        atomic_write(models / "router.manifest.json", manifest)

        record = gw.wait_for_log(lambda r: r.get("message") == GATEWAY_REFUSED, after=mark)
        assert record["level"] == "ERROR" and record["result"] == "sha256_mismatch", record
        assert record["model"] == NAME and record["serving_version"] == "v1"
        assert reload_counts(gw) == {**reloads, "sha256_mismatch": reloads.get("sha256_mismatch", 0.0) + 1}
        assert_serving(pod.client, "v1")
        assert model_info_versions(gw) == ["v1"]
        assert records(gw, GATEWAY_LOADED, after=mark) == []
    finally:
        for name in ("router.pkl", "router.manifest.json"):  # put v1 back, artifact first, then continue the agent
            atomic_write(models / name, before[name])
        pod.agent.process.send_signal(signal.SIGCONT)
    pod.restore()


# == 5. Redis unreachable, on a file:// registry =============================================================


def test_air_gapped_pod_with_redis_unreachable_installs_after_a_random_delay(
    start_model_sync: StartModelSync, artifacts: dict[str, Path], keys: SigningKeys, tmp_path: Path
) -> None:
    store = tmp_path / "registry"
    store.mkdir()
    registry = ModelRegistry(f"file://{store}/")  # a mounted directory as the registry
    publish_all(registry, [("v1", artifacts["v1"], keys.private, True), ("v2", artifacts["v2"], keys.private, False)])
    assert CurrentPointer.from_json((store / NAME / "CURRENT").read_bytes()).version == "v1"
    assert (store / NAME / "v1" / "model.pkl").read_bytes() == artifacts["v1"].read_bytes()
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    agent = start_model_sync(
        registry.uri,
        public_key=keys.public_pem(),  # PEM text, as a pod spec sets it from a Secret
        redis_url=closed,
        fallback_delay_max=FALLBACK_DELAY_MAX,
        env={"MODEL_NAMES": NAME},  # no config.yaml on this volume: follow the model by name
    )
    agent.wait_version(NAME, "v1", timeout=SYNC_BUDGET)
    registry.rollback(NAME, "v2", keys.private)  # a signed CURRENT naming v2, on a file:// registry
    entry = agent.wait_version(NAME, "v2", timeout=SYNC_BUDGET)

    assert entry["sha256"] == sha256_hex(artifacts["v2"].read_bytes())
    files = volume_files(VolumeDirs(tmp_path))
    assert files["router.pkl"] == artifacts["v2"].read_bytes()
    assert files["router.manifest.json"] == (store / NAME / "v2" / "manifest.json").read_bytes()
    assert files["router.previous.pkl"] == artifacts["v1"].read_bytes()
    health = agent.health()
    assert health["redis"] == "unreachable" and health["status"] == "degraded"
    assert agent.metric("routeiq_model_sync_redis_fallbacks_total") == 2.0
    assert agent.metric("routeiq_model_sync_lock_waits_total") == 0.0
    assert agent.metric(DOWNLOADS, name=NAME, result="installed") == 2.0
    logs = agent.json_logs()
    fallbacks = [r for r in logs if r.get("event") == "model_permit"]
    installs = [r for r in logs if r.get("message") == "Model installed"]
    assert [r["version"] for r in installs] == ["v1", "v2"]
    assert len(fallbacks) == 2
    for fallback, installed in zip(fallbacks, installs, strict=True):
        assert fallback["message"] == "No download permit (Redis unavailable): downloading after a random delay"
        assert fallback["level"] == "WARNING" and fallback["model"] == NAME
        assert 0.0 <= fallback["delay_s"] <= FALLBACK_DELAY_MAX
        assert fallback["reason"]
        # It did wait that long before installing (log timestamps have millisecond resolution).
        waited = _log_time(installed) - _log_time(fallback)
        assert waited >= fallback["delay_s"] - 0.002, (fallback, installed)
    assert agent.is_running()
    assert "Traceback" not in agent.log_text()
    assert [r for r in logs if r["level"] not in ("INFO", "WARNING")] == []


def test_health_reports_redis_as_it_is_between_downloads(
    start_model_sync: StartModelSync, artifacts: dict[str, Path], keys: SigningKeys, tmp_path: Path
) -> None:
    """/health/model-sync "redis" must follow Redis going away and coming back even when there is nothing to
    download (a pod restarted while Redis is down, a Redis that recovers after the last download)."""
    store = tmp_path / "registry"
    store.mkdir()
    registry = ModelRegistry(f"file://{store}/")
    registry.publish(NAME, "v1", artifacts["v1"], keys.private, set_current=True)
    port = free_port()
    agent = start_model_sync(
        registry.uri,
        public_key=keys.public,
        redis_url=f"redis://127.0.0.1:{port}/0",  # nothing listens there yet
        fallback_delay_max=0.1,
        env={"MODEL_NAMES": NAME},
    )
    agent.wait_version(NAME, "v1", timeout=SYNC_BUDGET)
    assert agent.health()["redis"] == "unreachable"  # learnt while downloading v1

    redis = start_redis_at(port, tmp_path / "redis")  # Redis comes back; v1 stays CURRENT, nothing to download
    try:
        agent.wait_health(
            lambda h: h["redis"] == "ok" and h["status"] == "ok",
            timeout=SYNC_BUDGET,
            message='health "redis": "ok" once Redis answers again',
        )
    finally:
        redis.stop()
    agent.wait_health(
        lambda h: h["redis"] == "unreachable",
        timeout=SYNC_BUDGET,
        message='health "redis": "unreachable" once Redis is gone again',
    )


def start_redis_at(port: int, work_dir: Path) -> ManagedProcess:
    """A redis-server (no persistence) on a given loopback port."""
    binary = find_redis_server()
    assert binary is not None, SETUP_HINT
    work_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(work_dir)]
    process = ManagedProcess(argv, work_dir / "redis-server.log", env=child_env(), name="redis-server").start()

    def pings() -> bool:
        try:
            with redis_client.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2) as conn:
                return bool(conn.ping())
        except redis_client.RedisError:
            return False

    try:
        process.wait_ready(pings, 10.0, f"PING on 127.0.0.1:{port}")
    except BaseException:
        process.stop()
        raise
    return process


def _log_time(record: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


# == 6. operator commands ====================================================================================


def test_keygen_publish_and_rollback_refuse_what_they_must(
    registry: S3Registry, artifacts: dict[str, Path], keys: SigningKeys, tmp_path: Path
) -> None:
    out = tmp_path / "keys"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # independent commands, side by side
        made_f = pool.submit(keygen, out)
        pool.submit(registry.cli.publish, NAME, "v1", artifacts["v1"], keys.private, set_current=True).result()
        made = made_f.result()
        before = registry.objects()
        private, public = made.private.read_bytes(), made.public.read_bytes()
        again_f = pool.submit(run_model_sync, ["keygen", "--out", out])
        refused_f = pool.submit(
            registry.cli.publish, NAME, "v1", artifacts["v2"], keys.private, set_current=True, check=False
        )
        missing_f = pool.submit(registry.cli.rollback, NAME, "v9", keys.private, check=False)
        again, refused, missing = again_f.result(), refused_f.result(), missing_f.result()

    # keygen: an Ed25519 pair, the private key 0600; a second keygen into the same place refuses, changes nothing.
    assert stat.S_IMODE(made.private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private and b"PUBLIC KEY" in public
    assert again.returncode == 1
    assert "already exists" in again.stderr and "refusing to overwrite" in again.stderr
    assert made.private.read_bytes() == private and made.public.read_bytes() == public
    assert stat.S_IMODE(made.private.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["signing.key", "signing.pub"]

    # publish: a published version is immutable; the registry is exactly as the first publish left it.
    assert sorted(before) == [
        registry.key(NAME, "CURRENT"),
        registry.key(NAME, "v1", "manifest.json"),
        registry.key(NAME, "v1", "model.pkl"),
    ]
    assert refused.returncode == 1
    assert "router v1 is already published" in refused.stderr
    assert registry.get(NAME, "v1", "model.pkl") == artifacts["v1"].read_bytes()

    # rollback: to a version never published, refused; CURRENT stays.
    assert missing.returncode == 1
    assert "version v9 is not in the registry" in missing.stderr
    assert registry.current() == "v1"
    assert registry.objects() == before


# == 7. faults of the volume (issue 7, items 15 and 18) ======================================================


def _half_installed(models: Path, artifacts: dict[str, Path], keys: SigningKeys) -> bytes:
    """The volume an agent killed between the artifact's rename and the manifest's leaves: v1's pair kept as
    previous, v2's bytes under v1's manifest. Returns v1's manifest bytes."""
    models.mkdir(parents=True, exist_ok=True)
    v1_manifest = signed_manifest(artifacts["v1"], "v1", keys.private).to_json()
    for name, data in (
        ("router.previous.pkl", artifacts["v1"].read_bytes()),
        ("router.previous.manifest.json", v1_manifest),
        ("router.pkl", artifacts["v2"].read_bytes()),
        ("router.manifest.json", v1_manifest),
    ):
        atomic_write(models / name, data)
    return v1_manifest


def test_gateway_restarted_on_a_half_installed_pair_serves_the_kept_previous_pair(
    start_gateway: Callable[..., GatewayHandle],
    fresh_upstream: FakeUpstream,
    artifacts: dict[str, Path],
    keys: SigningKeys,
    tmp_path: Path,
) -> None:
    _half_installed(VolumeDirs(tmp_path).models_dir, artifacts, keys)

    gw = start_gateway(router_config(fresh_upstream), env={"MODEL_SIGNING_PUBLIC_KEY": str(keys.public)})

    assert wait_serving(gw.openai_client(), "v1") == Routed("v1", "fast")
    record = gw.wait_for_log(lambda r: r.get("message") == GATEWAY_LOADED)
    assert record["version"] == "v1" and record["slot"] == "previous", record
    assert model_info_versions(gw) == ["v1"]
    assert gateway_metric(gw, "routeiq_router_model_reloads_total", name=NAME, result="previous") == 1.0
    (rollback,) = [r for r in audit_spool(VolumeDirs(tmp_path)) if r["action"].startswith("model.")]
    assert (rollback["action"], rollback["target"], rollback["result"]) == ("model.rollback", f"model:{NAME}@v1", "ok")
    assert rollback["before_digest"] is None
    assert rollback["after_digest"] == sha256_hex(artifacts["v1"].read_bytes())


def test_gateway_refuses_a_tampered_previous_pair_too(
    start_gateway: Callable[..., GatewayHandle],
    fresh_upstream: FakeUpstream,
    artifacts: dict[str, Path],
    keys: SigningKeys,
    tmp_path: Path,
) -> None:
    """The fallback is verified the same way: a previous pair whose bytes differ is not loaded either."""
    models = VolumeDirs(tmp_path).models_dir
    _half_installed(models, artifacts, keys)
    atomic_write(models / "router.previous.pkl", artifacts["v3"].read_bytes())

    gw = start_gateway(router_config(fresh_upstream), env={"MODEL_SIGNING_PUBLIC_KEY": str(keys.public)})

    record = gw.wait_for_log(lambda r: r.get("message") == GATEWAY_REFUSED)
    assert record["result"] == "sha256_mismatch", record
    assert ask_auto(gw.openai_client()) == Routed("none", "fast")


# == 8. hostile registries (issue 7, items 16 and 17) ========================================================


def test_an_older_signed_current_put_back_is_refused_and_v1_serves_on(pod: Pod) -> None:
    """The rollback attack: someone with write access to the bucket but not the key puts back a CURRENT signed
    earlier (naming v2, which this pod served once); the agent refuses it, the gateway keeps v1."""
    agent, registry = pod.agent, pod.registry
    registry.set_current("v2")
    old_pointer = registry.get(NAME, "CURRENT")  # what the attacker saved
    try:
        agent.wait_version(NAME, "v2")
        pod.restore()  # a legitimate signed move back to v1 (a higher sequence)
        mark = len(agent.json_logs())

        registry.put(old_pointer, NAME, "CURRENT")

        entry = agent.wait_model(NAME, lambda m: m.get("last_result") == "stale_current", SYNC_BUDGET, "refusal")
        assert entry["version"] == "v1" and "sequence" in entry["last_error"]
        record = agent.wait_for_log(lambda r: r.get("result") == "stale_current", after=mark)
        assert record["message"] == AGENT_REFUSED and record["serving_version"] == "v1"
        assert agent.metric(DOWNLOADS, name=NAME, result="stale_current") >= 1.0
        assert_serving(pod.client, "v1")
    finally:
        pod.restore()


def test_an_artifact_grown_behind_its_manifest_is_read_to_the_manifest_size_once(
    start_model_sync: StartModelSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_redis: RedisServer,
    artifacts: dict[str, Path],
    keys: SigningKeys,
) -> None:
    """A 30 MB object under a manifest saying a few KB: the store serves at most the manifest's size + 1 byte,
    and the next polls do not fetch it again (what the store saw, counted by a proxy in front of moto)."""
    registry = S3Registry(moto_s3, s3_bucket, keys.private)
    publish_all(
        registry.cli, [("v1", artifacts["v1"], keys.private, True), ("v2", artifacts["v2"], keys.private, False)]
    )
    size = json.loads(registry.get(NAME, "v2", "manifest.json"))["artifact"]["size"]
    registry.put(b"\0" * (30 * 1024 * 1024), NAME, "v2", "model.pkl")
    with CountingProxy(moto_s3.endpoint_url) as proxy:
        s3_env = {**moto_s3.env(), "AWS_ENDPOINT_URL_S3": proxy.url(0)}
        agent = start_model_sync(
            registry.uri, s3_env=s3_env, public_key=keys.public, redis_url=fresh_redis.url, env={"MODEL_NAMES": NAME}
        )
        agent.wait_version(NAME, "v1", timeout=SYNC_BUDGET)
        registry.set_current("v2")
        agent.wait_model(NAME, lambda m: m.get("last_result") == "size_mismatch", SYNC_BUDGET, "the refusal")
        refused = agent.metric(DOWNLOADS, name=NAME, result="size_mismatch")
        wait_until(
            lambda: agent.metric(DOWNLOADS, name=NAME, result="size_mismatch") >= refused + 3,
            SYNC_BUDGET,
            message="three more polls",
        )
        v2 = [t for t in proxy.transfers() if t.path.endswith("/v2/model.pkl")]
    assert len(v2) == 1, v2  # fetched once, not once a poll
    assert v2[0].bytes_sent <= size + 1, v2  # and only as far as the manifest says (+1 byte to see more)
    assert agent.model(NAME)["version"] == "v1"


@pytest.fixture
def tiny_models_volume(tmp_path: Path) -> Iterator[Path]:
    """The models directory on a 2 MiB tmpfs of its own, to fill for real (skipped where mounting is not allowed)."""
    models = VolumeDirs(tmp_path).models_dir
    models.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(models)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield models
    finally:
        subprocess.run(["umount", "-l", str(models)], check=False)  # lazy: the agent may still hold it


def test_a_full_volume_at_the_manifest_write_is_reported_and_v1_serves_on(
    start_model_sync: StartModelSync,
    fresh_upstream: FakeUpstream,
    artifacts: dict[str, Path],
    keys: SigningKeys,
    tmp_path: Path,
    tiny_models_volume: Path,
) -> None:
    models = tiny_models_volume
    store = tmp_path / "registry"
    store.mkdir()
    registry = ModelRegistry(f"file://{store}/")
    publish_all(registry, [("v1", artifacts["v1"], keys.private, True), ("v2", artifacts["v2"], keys.private, False)])
    dirs = VolumeDirs(tmp_path)
    dirs.config_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(dirs.config_path, yaml.safe_dump(router_config(fresh_upstream, pin="v1")).encode())
    agent = start_model_sync(registry.uri, public_key=keys.public, fallback_delay_max=0.0)
    agent.wait_version(NAME, "v1", timeout=SYNC_BUDGET)
    # Leave room for v2's artifact and not one page more: its manifest, written last, finds the volume full.
    page = os.statvfs(models).f_frsize
    free = os.statvfs(models).f_bavail * page
    need = -(-artifacts["v2"].stat().st_size // page) * page
    filler = models / "filler"
    filler.write_bytes(b"\0" * (free - need))
    mark = len(agent.json_logs())

    atomic_write(dirs.config_path, yaml.safe_dump(router_config(fresh_upstream, pin="v2")).encode())

    entry = agent.wait_model(NAME, lambda m: m.get("last_result") == "volume_error", SYNC_BUDGET, "volume_error")
    assert entry["version"] == "v1" and "ENOSPC" in entry["last_error"], entry
    record = agent.wait_for_log(lambda r: r.get("result") == "volume_error", after=mark)
    assert record["message"] == AGENT_REFUSED and record["serving_version"] == "v1"
    assert agent.metric(DOWNLOADS, name=NAME, result="volume_error") >= 1.0
    assert agent.health()["status"] == "degraded" and agent.is_running()
    # The volume holds v1's pair, consistent, and no partial file.
    assert (models / "router.pkl").read_bytes() == artifacts["v1"].read_bytes()
    assert json.loads((models / "router.manifest.json").read_bytes())["version"] == "v1"
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []

    filler.unlink()  # space again: the next pass installs v2
    agent.wait_version(NAME, "v2", timeout=SYNC_BUDGET)
    assert (models / "router.pkl").read_bytes() == artifacts["v2"].read_bytes()
    assert "Traceback" not in agent.log_text()
