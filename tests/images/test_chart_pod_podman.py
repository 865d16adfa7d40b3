"""The chart's pod, for real: charts/routeiq rendered by Helm's engine and run with `podman kube play` from the
images `make images` built — the init container, the three containers, the shared emptyDirs and the shared process
namespace — against moto's S3 and a redis-server on the host (the pod on the host's network, so everything stays
on loopback). Readiness goes green, a completion is answered, `aws s3 cp` of a new config reaches the gateway
(config-sync's SIGHUP crosses containers), a published model reaches it, and SIGTERM to the pod drains a stream.

What differs from a cluster, and why: harness/kube_play.py — `adapt_for_podman` (host network without `ports`,
restartPolicy OnFailure against podman 4.3's init-container cleanup bug), `KubePod.stop` (SIGTERM as a kubelet
sends it: podman 4.3's own pod stop SIGKILLs a draining gateway) and its note on secrets.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import helm_chart, podman
from harness.config_sync_process import AwsCli
from harness.fake_upstream_control import FakeUpstream
from harness.kube_play import KubePod, adapt_for_podman
from harness.moto_s3 import MotoS3
from harness.processes import free_port, url_status, wait_until
from harness.redis_server import RedisServer
from harness.router_artifacts import ModelRegistry, keygen, write_router

DRAIN_SECONDS = 10
STREAM_WORDS = 8
STREAM_CONTENT = " ".join(f"word{i}" for i in range(STREAM_WORDS))
EGRESS = {"name": "ROUTEIQ_EGRESS_ALLOWED_NETWORKS", "value": "127.0.0.0/8"}  # moto, redis, the upstream


def pod_config(upstream: FakeUpstream, groups: dict[str, str]) -> bytes:
    config = {
        "model_list": [
            {"model_name": g, "litellm_params": {"model": f"openai/{m}", "api_base": upstream.base_url, "api_key": "x"}}
            for g, m in groups.items()
        ],
        "router_settings": {"num_retries": 0},
        "routeiq": {
            "server": {"drain_timeout_seconds": DRAIN_SECONDS},  # = the chart's gateway.drainTimeoutSeconds
            "routers": [{"name": "auto", "artifact": "router", "candidates": ["fast", "strong"]}],
        },
    }
    return yaml.safe_dump(config).encode()


def chart_values(bucket: str, moto: MotoS3, ports: dict[str, int], secrets: dict[str, str]) -> dict[str, Any]:
    version = podman.chart_version()
    images = {
        key: {"repository": f"localhost/routeiq/{svc}", "tag": version, "pullPolicy": "Never"}
        for key, svc in (("gateway", "gateway"), ("configSync", "config-sync"), ("modelSync", "model-sync"))
    }
    return {
        "replicaCount": 1,
        "images": images,
        "store": {
            "configSource": f"s3://{bucket}/prod/",
            "modelRegistry": f"s3://{bucket}/models/",
            "endpointUrl": moto.endpoint_url,
            "region": "us-east-1",
            "credentialsSecret": secrets["aws"],
        },
        "redis": {"urlSecret": {"name": secrets["redis"], "key": "url"}},
        "gateway": {"port": ports["gateway"], "drainTimeoutSeconds": DRAIN_SECONDS, "extraEnv": [EGRESS]},
        "configSync": {"interval": 1, "healthPort": ports["config-sync"], "extraEnv": [EGRESS]},
        "modelSync": {
            "interval": 1,
            "healthPort": ports["model-sync"],
            "publicKeySecret": {"name": secrets["signing"], "key": "signing.pub"},
            "extraEnv": [EGRESS],
        },
    }


def kube_secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": encoded}


def chat(port: int, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello from the pod test"}]}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10, trust_env=False)


def answers(port: int, model: str) -> bool:
    return chat(port, model).status_code == 200


def router_version(port: int) -> str | None:
    response = chat(port, "auto")
    return response.headers.get("x-routeiq-router-version") if response.status_code == 200 else None


@pytest.fixture
def pod_setup(
    tmp_path: Path, moto_s3: MotoS3, s3_bucket: str, redis_server: RedisServer, fresh_upstream: FakeUpstream
) -> Iterator[tuple[KubePod, dict[str, Any]]]:
    ports = {"gateway": free_port(), "config-sync": free_port(), "model-sync": free_port()}
    aws = AwsCli.for_moto(moto_s3, tmp_path / "aws")
    keys = keygen(tmp_path / "keys")
    registry = ModelRegistry(f"s3://{s3_bucket}/models/", moto_s3.env())
    registry.publish("router", "v1", write_router(tmp_path / "v1.pkl", "fast"), keys.private, set_current=True)
    aws.upload(
        pod_config(fresh_upstream, {"fast": "fake-fast", "strong": "fake-strong"}), f"s3://{s3_bucket}/prod/config.yaml"
    )

    names = {key: podman.unique_name(key) for key in ("aws", "redis", "signing")}
    rendered = helm_chart.render(chart_values(s3_bucket, moto_s3, ports, names))
    env = moto_s3.env()
    secrets = [
        kube_secret(names["aws"], {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}),
        kube_secret(names["redis"], {"url": redis_server.url}),
        kube_secret(names["signing"], {"signing.pub": keys.public_pem()}),
    ]
    deployment = adapt_for_podman(rendered.one("Deployment"))
    pod = KubePod.play(deployment, secrets, tmp_path / "kube")
    context = {"ports": ports, "aws": aws, "keys": keys, "registry": registry, "bucket": s3_bucket, "tmp": tmp_path}
    try:
        yield pod, context
    finally:
        print(pod.describe())  # shown when the test fails
        pod.down()


@pytest.mark.timeout(600)
def test_chart_pod_under_podman_syncs_config_and_models_and_drains_on_sigterm(
    pod_setup: tuple[KubePod, dict[str, Any]], fresh_upstream: FakeUpstream
) -> None:
    pod, ctx = pod_setup
    port = ctx["ports"]["gateway"]

    # The init container ran config-sync --once to success before the gateway started; readiness goes green.
    wait_until(
        lambda: url_status(f"http://127.0.0.1:{port}/health/readiness") == 200,
        timeout=120,
        message="gateway readiness 200",
        detail=pod.describe,
    )
    assert pod.init_exit_codes() == [0]  # ran once, to success
    assert "config-sync-init" not in pod.running_containers()
    assert set(pod.running_containers()) == {"gateway", "config-sync", "model-sync"}

    # One process namespace: config-sync sees the gateway's pid, from the pidfile on the shared run volume.
    gateway_pid = pod.exec("config-sync", "cat", "/app/run/gateway.pid").strip()
    cmdline = pod.exec("config-sync", "cat", f"/proc/{gateway_pid}/cmdline").replace("\0", " ")
    assert "routeiq-gateway" in cmdline

    reply = chat(port, "fast")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]

    # The model-sync sidecar installed the signed v1 into the shared models volume; the gateway routes with it.
    wait_until(lambda: router_version(port) == "v1", timeout=60, message="router v1 serving", detail=pod.describe)
    assert chat(port, "auto").headers["x-routeiq-model"] == "fast"

    # The operator rolls the config with aws s3 cp: config-sync fetches it and SIGHUPs the gateway next door.
    assert not answers(port, "third")
    groups = {"fast": "fake-fast", "strong": "fake-strong", "third": "fake-third"}
    ctx["aws"].upload(pod_config(fresh_upstream, groups), f"s3://{ctx['bucket']}/prod/config.yaml")
    wait_until(lambda: answers(port, "third"), timeout=60, message="config v2 serving", detail=pod.describe)
    reloads = [r for r in pod.json_logs("gateway") if r.get("message") == "Config reloaded"]
    assert reloads, pod.logs("gateway")[-3000:]

    # A newly published model reaches the gateway.
    ctx["registry"].publish(
        "router", "v2", write_router(ctx["tmp"] / "v2.pkl", "strong"), ctx["keys"].private, set_current=True
    )
    wait_until(lambda: router_version(port) == "v2", timeout=60, message="router v2 serving", detail=pod.describe)
    assert chat(port, "auto").headers["x-routeiq-model"] == "strong"

    # SIGTERM to the pod while a stream runs: the gateway drains it to the end, then exits 0.
    fresh_upstream.add_rule(
        model="fake-fast", action="slow_stream", chunks=STREAM_WORDS, chunk_delay_ms=400, content=STREAM_CONTENT
    )
    received: list[str] = []
    stream_done = threading.Event()

    def consume() -> None:
        body = {"model": "fast", "messages": [{"role": "user", "content": "stream"}], "stream": True}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=30, trust_env=False) as response:
            for line in response.iter_lines():
                received.append(line)
        stream_done.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    wait_until(lambda: any("word0" in line for line in received), timeout=15, message="the stream's first chunk")
    pod.stop(timeout=DRAIN_SECONDS + 15)  # SIGTERM to every container, SIGKILL after the timeout
    assert stream_done.wait(30)
    chunks = [json.loads(line[6:]) for line in received if line.startswith("data: {")]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert content == STREAM_CONTENT
    assert received[-1] == "data: [DONE]" or "data: [DONE]" in received
    assert pod.exit_code("gateway") == 0, pod.logs("gateway")[-3000:]
    shutdown = [r for r in pod.json_logs("gateway") if r.get("message") == "Graceful shutdown"]
    assert shutdown and shutdown[-1]["clean"] is True and shutdown[-1]["abandoned"] == 0, shutdown
