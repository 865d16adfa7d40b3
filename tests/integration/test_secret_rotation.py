"""Rotating a file-mounted provider key (issue 13, "Secrets"): a Kubernetes Secret update plus a reload.

A real gateway reads its provider key as `os.file/…` from a directory laid out and updated as the kubelet does a
Secret volume (`..data` swapped atomically; tests/harness/secret_volume.py). Under steady load from the openai SDK
(streamed and whole answers), the file is rotated and the gateway reloaded with SIGHUP: no request fails, the
fake upstream sees the old key until the reload and the new one on every request started after it finished. A
rotation to a file that cannot be a header value is refused by the reload and the key before keeps serving. No
secret is ever in the gateway's output: logs, metrics, health, admin answers, the status file, the run volume.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from harness.config_sync_process import AwsCli, StartConfigSync
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.moto_s3 import MotoS3
from harness.secret_volume import SecretVolume
from harness.sidecar_process import parse_metrics
from routeiq_shared.config_schema import content_version

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-rotation-master"
ADMIN_KEY = "sk-rotation-admin"
OLD_KEY = "sk-provider-old-5f2c9e17a04b"
NEW_KEY = "sk-provider-new-b83d61e0c7aa"
BAD_KEY = b"sk-provider-bad-90e1\nX-Injected: d4c2a7"  # a header injection, were it sent
CHAT_PATH = "/v1/chat/completions"
KEY_PATH = "model_list[0].litellm_params.api_key"
CONCURRENCY = 8
PHASE_SECONDS = 1.0  # each phase of the load lasts this long and PHASE_REQUESTS answers, whichever is later
PHASE_REQUESTS = 40


@dataclass(frozen=True)
class Sample:
    rid: str
    started: float  # time.time(), comparable with the gateway's log timestamps
    finished: float
    ok: bool
    error: str | None


def log_time(record: dict[str, Any]) -> float:
    """A JSON log line's `ts` (UTC, truncated to the millisecond) as epoch seconds."""
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def reload_records(gw: GatewayHandle, after: int) -> list[dict[str, Any]]:
    return [r for r in gw.json_logs()[after:] if r.get("event") == "config_reload"]


async def wait_reload(gw: GatewayHandle, after: int, seconds: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while not (records := reload_records(gw, after)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no config_reload log line within {seconds} s\n{gw.log_text()[-3000:]}")
        await asyncio.sleep(0.02)
    return records[0]


class Load:
    """CONCURRENCY openai SDK clients in a loop, alternating streamed and whole answers, each request tagged with
    its id in the prompt so the upstream's log says which key each one was sent with."""

    def __init__(self, gw: GatewayHandle) -> None:
        self.client = gw.async_openai_client(MASTER_KEY)
        self.samples: list[Sample] = []
        self.stop = asyncio.Event()
        self._next = 0

    async def _one(self, rid: str, stream: bool) -> None:
        started = time.time()
        messages: list[Any] = [{"role": "user", "content": rid}]
        try:
            if stream:
                chunks = await self.client.chat.completions.create(model="fast", messages=messages, stream=True)
                text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
            else:
                reply = await self.client.chat.completions.create(model="fast", messages=messages)
                text = reply.choices[0].message.content or ""
            self.samples.append(Sample(rid, started, time.time(), bool(text), None if text else "empty answer"))
        except (openai.APIError, httpx.HTTPError) as exc:
            self.samples.append(Sample(rid, started, time.time(), False, repr(exc)))

    async def _worker(self) -> None:
        while not self.stop.is_set():
            self._next += 1
            await self._one(f"rq-{self._next}", stream=self._next % 2 == 0)

    async def phase(self) -> None:
        """Let the load run a while: at least PHASE_SECONDS and PHASE_REQUESTS more answers (a busy machine is
        slower, never a reason for a group of the assertions to be empty)."""
        target = len(self.samples) + PHASE_REQUESTS
        await asyncio.sleep(PHASE_SECONDS)
        deadline = time.monotonic() + 60
        while len(self.samples) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the load made {len(self.samples)} of {target} answers in 60 s")
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._worker() for _ in range(CONCURRENCY)))
        finally:
            await self.client.close()


def keys_seen(upstream: FakeUpstream) -> dict[str, str]:
    """request id -> the Authorization header the upstream received with it."""
    out: dict[str, str] = {}
    for request in upstream.requests(CHAT_PATH):
        rid = request["body"]["messages"][0]["content"]
        out[rid] = request["headers"].get("authorization", "")
    return out


def test_rotating_a_secret_volume_key_under_load(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, tmp_path: Path
) -> None:
    volume = SecretVolume(tmp_path / "secrets" / "provider-keys")
    volume.write({"OPENAI_API_KEY": f"{OLD_KEY}\n".encode()})  # as `echo KEY > file` leaves it
    config = {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {
                    "model": "openai/fake-fast",
                    "api_base": fresh_upstream.base_url,
                    "api_key": volume.ref("OPENAI_API_KEY"),
                },
            }
        ],
        "router_settings": {"num_retries": 0},  # a request the rotation broke would fail, not be retried away
        "general_settings": {"master_key": MASTER_KEY},
    }
    env = {"ROUTEIQ_SECRET_DIRS": str(tmp_path / "secrets"), "ADMIN_API_KEYS": ADMIN_KEY, "LOG_LEVEL": "DEBUG"}
    gw = start_gateway(config, env=env)

    async def scenario() -> tuple[Load, dict[str, float], dict[str, Any], dict[str, Any]]:
        load = Load(gw)
        running = asyncio.create_task(load.run())
        marks: dict[str, float] = {}
        await load.phase()
        # The Secret is updated: until the reload, the gateway keeps the key it read.
        await asyncio.to_thread(volume.write, {"OPENAI_API_KEY": f"{NEW_KEY}\n".encode()})
        marks["file_rotated"] = time.time()
        await load.phase()
        mark = len(gw.json_logs())
        marks["sighup"] = time.time()
        gw.reload()
        reloaded = await wait_reload(gw, mark)
        await load.phase()
        # A rotation to a value that cannot be a header: refused, the key before keeps serving.
        await asyncio.to_thread(volume.write, {"OPENAI_API_KEY": BAD_KEY})
        mark = len(gw.json_logs())
        gw.reload()
        refused = await wait_reload(gw, mark)
        marks["refused"] = time.time()
        await load.phase()
        load.stop.set()
        await running
        return load, marks, reloaded, refused

    load, marks, reloaded, refused = asyncio.run(scenario())

    failed = [s for s in load.samples if not s.ok]
    assert failed == [], f"{len(failed)} of {len(load.samples)} requests failed, e.g. {failed[:3]}"
    assert reloaded["result"] == "success", reloaded
    assert reloaded["secret_files"] == [str(volume.path("OPENAI_API_KEY"))]  # which files it re-read, no content
    reload_done = log_time(reloaded) + 0.001  # the swap precedes its log line, whose ts is cut to the millisecond
    seen = keys_seen(fresh_upstream)
    assert set(seen) == {s.rid for s in load.samples}
    assert set(seen.values()) == {f"Bearer {OLD_KEY}", f"Bearer {NEW_KEY}"}

    before = [s for s in load.samples if s.finished < marks["sighup"]]
    after_file = [s for s in before if s.started > marks["file_rotated"]]
    after = [s for s in load.samples if s.started > reload_done]
    after_refusal = [s for s in after if s.started > marks["refused"]]
    for group in (before, after_file, after, after_refusal):
        assert len(group) >= 10, {k: len(v) for k, v in (("before", before), ("after", after))}
    assert {seen[s.rid] for s in before} == {f"Bearer {OLD_KEY}"}  # also after the file changed, until the reload
    assert {seen[s.rid] for s in after} == {f"Bearer {NEW_KEY}"}  # from the first request after the reload on
    in_between = [s for s in load.samples if s not in before and s not in after]
    print(
        f"\nrotation under load: {len(load.samples)} requests, {len(before)} before the SIGHUP "
        f"({len(after_file)} of them after the file changed), {len(in_between)} across the reload "
        f"({reload_done - marks['sighup']:.3f} s from SIGHUP to swap), {len(after)} after it"
    )

    # The refusal names the key and the file, never the content.
    assert refused["result"] == "failure" and refused["key_path"] == KEY_PATH, refused
    assert str(volume.path("OPENAI_API_KEY")) in refused["reason"] and "control character" in refused["reason"]

    outputs = _everything_the_gateway_says(gw, tmp_path)
    assert "reload failed" in outputs and str(volume.path("OPENAI_API_KEY")) in outputs  # the scrape worked
    for secret in (OLD_KEY, NEW_KEY, *BAD_KEY.decode().split("\n")):
        assert secret not in outputs, f"{secret!r} appears in the gateway's output"


def _everything_the_gateway_says(gw: GatewayHandle, root: Path) -> str:
    """Its log, every answer of its health, metrics, model and admin endpoints (a refused admin reload too), and
    every file it wrote on the volume."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    texts = [gw.log_text()]
    with httpx.Client(timeout=10.0, trust_env=False) as http:
        for path in ("/health/liveness", "/health/liveliness", "/health/readiness", "/metrics"):
            texts.append(http.get(gw.url(path)).text)
        texts.append(http.get(gw.url("/v1/models"), headers={"Authorization": f"Bearer {MASTER_KEY}"}).text)
        for path in ("/admin/config", "/admin/routers"):
            answer = http.get(gw.admin(path), headers=admin)
            assert answer.status_code == 200, answer.text
            texts.append(answer.text)
        refused = http.post(gw.admin("/admin/reload"), headers=admin)
        assert refused.status_code == 422 and KEY_PATH in refused.text, refused.text
        texts.append(refused.text)
    failures = [v for n, labels, v in parse_metrics(texts[4]) if n == "routeiq_config_reloads_total"]
    assert failures, texts[4][:500]
    for path in (root / "run").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


# Each provider path sends the key its own way, and the translated and LiteLLM paths keep per-deployment caches.
PATHS = {
    # group: (litellm model, api_base attribute of FakeUpstream, upstream path, header the key travels in)
    "native": ("openai/fake-native", "base_url", CHAT_PATH, "authorization"),
    "translated": ("anthropic/claude-3-haiku-20240307", "root_url", "/v1/messages", "x-api-key"),
    "litellm": ("anthropic/claude-3-haiku-20240307", "root_url", "/v1/messages", "x-api-key"),
}


def test_every_provider_path_sends_the_key_read_at_the_last_reload(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, tmp_path: Path
) -> None:
    volume = SecretVolume(tmp_path / "secrets" / "provider-keys")
    volume.write({f"{group}_KEY": f"{OLD_KEY}-{group}\n".encode() for group in PATHS})
    model_list = []
    for group, (model, base, _, _) in PATHS.items():
        params: dict[str, Any] = {
            "model": model,
            "api_base": getattr(fresh_upstream, base),
            "api_key": volume.ref(f"{group}_KEY"),
        }
        if group == "litellm":
            params["num_retries"] = 0  # a setting only litellm.acompletion takes keeps it on LiteLLM
        model_list.append({"model_name": group, "litellm_params": params})
    config = {"model_list": model_list, "general_settings": {"master_key": MASTER_KEY}}
    gw = start_gateway(config, env={"ROUTEIQ_SECRET_DIRS": str(tmp_path / "secrets")})

    def sent_keys() -> dict[str, str]:
        fresh_upstream.clear_requests()
        with gw.openai_client(MASTER_KEY) as client:
            for group in PATHS:
                raw = client.chat.completions.with_raw_response.create(
                    model=group, messages=[{"role": "user", "content": group}]
                )
                assert raw.headers["x-routeiq-provider-path"] == group
                stream = client.chat.completions.create(
                    model=group, messages=[{"role": "user", "content": group}], stream=True
                )
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        seen: dict[str, set[str]] = {}
        for group, (_, _, path, header) in PATHS.items():
            for request in fresh_upstream.requests(path):
                content = request["body"]["messages"][0]["content"]  # Anthropic's: a list of blocks
                text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
                if text == group:
                    seen.setdefault(group, set()).add(request["headers"][header].removeprefix("Bearer "))
        assert all(len(keys) == 1 for keys in seen.values()), seen  # the same key streamed and not
        return {group: keys.pop() for group, keys in seen.items()}

    assert sent_keys() == {group: f"{OLD_KEY}-{group}" for group in PATHS}
    volume.write({f"{group}_KEY": f"{NEW_KEY}-{group}\n".encode() for group in PATHS})
    assert sent_keys() == {group: f"{OLD_KEY}-{group}" for group in PATHS}  # no reload yet: the key it read
    mark = len(gw.json_logs())
    gw.reload()
    assert asyncio.run(wait_reload(gw, mark))["result"] == "success"
    assert sent_keys() == {group: f"{NEW_KEY}-{group}" for group in PATHS}


def test_config_sync_reports_a_secret_the_gateway_refused_and_has_nothing_to_put_back(
    start_gateway: StartGateway,
    start_config_sync: StartConfigSync,
    moto_s3: MotoS3,
    s3_bucket: str,
    fresh_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    """The files are the ones the gateway serves; only the secret behind them changed. The agent (which never
    reads the file: its environment does not even allow the directory) says what the gateway said, leaves the
    volume alone, and says ok again once a reload with a good file succeeds."""
    volume = SecretVolume(tmp_path / "secrets" / "provider-keys")
    volume.write({"OPENAI_API_KEY": f"{OLD_KEY}\n".encode()})
    params = {"model": "openai/fake-fast", "api_base": fresh_upstream.base_url, "api_key": volume.ref("OPENAI_API_KEY")}
    config = {
        "model_list": [{"model_name": "fast", "litellm_params": params}],
        "general_settings": {"master_key": MASTER_KEY},
    }
    raw = yaml.safe_dump(config, sort_keys=False).encode()
    source = f"s3://{s3_bucket}/prod/"
    AwsCli.for_moto(moto_s3, tmp_path / "aws").upload(raw, f"{source}config.yaml")
    gw = start_gateway(raw.decode(), env={"ROUTEIQ_SECRET_DIRS": str(tmp_path / "secrets")})
    agent = start_config_sync(source, s3_env=moto_s3.env())
    version = content_version(raw, b"")
    agent.wait_version(version)

    volume.write({"OPENAI_API_KEY": b""})  # an empty Secret key
    gw.reload()
    health = agent.wait_health(lambda h: h["gateway"]["state"] == "rejected_by_gateway", timeout=15)
    assert health["status"] == "rejected_by_gateway" and health["version"] == version
    assert KEY_PATH in health["gateway"]["reason"] and "is empty" in health["gateway"]["reason"]
    assert gw.config_path.read_bytes() == raw  # nothing put back: these very files are what it serves
    with gw.openai_client(MASTER_KEY) as client:
        assert client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}]).choices
    assert fresh_upstream.requests(CHAT_PATH)[-1]["headers"]["authorization"] == f"Bearer {OLD_KEY}"

    volume.write({"OPENAI_API_KEY": f"{NEW_KEY}\n".encode()})
    gw.reload()
    health = agent.wait_health(lambda h: h["gateway"]["state"] == "ok", timeout=15)
    assert health["status"] == "ok" and health["gateway"]["loaded_version"] == version
    with gw.openai_client(MASTER_KEY) as client:
        assert client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "y"}]).choices
    assert fresh_upstream.requests(CHAT_PATH)[-1]["headers"]["authorization"] == f"Bearer {NEW_KEY}"
    assert OLD_KEY not in agent.log_text() and NEW_KEY not in agent.log_text()
