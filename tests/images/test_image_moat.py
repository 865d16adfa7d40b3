"""Moat mode: the gateway image serves with no route out. A podman pod on `--network none` (its network
namespace holds only loopback) runs the fake provider and the gateway image under the chart's container security;
a completion on the native path, one through LiteLLM, a request routed by LiteLLM's cost map and token counts
with tiktoken's encodings all succeed, and the Python socket layer's audit log shows no lookup or connect to
anything but loopback."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import podman

UPSTREAM_PORT = 4010
GATEWAY_PORT = 4000
MINI, CLAUDE = "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"
HERE = Path(__file__).resolve().parent
FAKE_UPSTREAM = podman.REPO / "tests" / "harness" / "fake_upstream.py"
MESSAGES = [{"role": "user", "content": "Count the tokens of this sentence, offline, in a moat."}]

# urllib inside the pod (the only place that can reach it): one HTTP request, its status, headers and body as JSON.
HTTP_CLIENT = """
import json, sys, urllib.request, urllib.error
method, url, body = {method!r}, {url!r}, {body!r}
req = urllib.request.Request(url, data=None if body is None else body.encode(), method=method,
                             headers={{"content-type": "application/json"}})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        status, headers, text = r.status, dict(r.headers), r.read().decode()
except urllib.error.HTTPError as e:
    status, headers, text = e.code, dict(e.headers), e.read().decode()
print(json.dumps({{"status": status, "headers": {{k.lower(): v for k, v in headers.items()}}, "body": text}}))
"""

WAIT_READY = """
import time, urllib.request
deadline = time.monotonic() + {timeout}
while True:
    try:
        with urllib.request.urlopen({url!r}, timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit("not ready: " + {url!r})
    time.sleep(0.2)
"""


def http(container: str, method: str, path: str, port: int, body: Any = None) -> dict[str, Any]:
    code = HTTP_CLIENT.format(
        method=method, url=f"http://127.0.0.1:{port}{path}", body=None if body is None else json.dumps(body)
    )
    result: dict[str, Any] = json.loads(podman.exec_python(container, code))
    return result


def wait_ready(container: str, port: int, path: str, timeout: float = 120.0) -> None:
    try:
        podman.exec_python(container, WAIT_READY.format(url=f"http://127.0.0.1:{port}{path}", timeout=timeout))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- {container} log ---\n{podman.logs(container)[-4000:]}") from None


def moat_config() -> dict[str, Any]:
    upstream = f"http://127.0.0.1:{UPSTREAM_PORT}"
    mini = {"model": MINI, "api_base": f"{upstream}/v1", "api_key": "x"}
    claude = {"model": CLAUDE, "api_base": upstream, "api_key": "x"}
    return {
        "model_list": [
            {"model_name": "mini", "litellm_params": mini},
            {"model_name": "claude", "litellm_params": claude},
            # one group, two deployments, the dearer listed first: cost-based routing orders them by LiteLLM's
            # cost map, and a gateway that found no prices would keep this order
            {"model_name": "priced", "litellm_params": claude},
            {"model_name": "priced", "litellm_params": mini},
        ],
        "router_settings": {"num_retries": 0, "routing_strategy": "cost-based-routing"},
        "routeiq": {"routers": [{"name": "auto", "strategy": "cost", "candidates": ["priced"]}]},
    }


def host_price(model: str) -> float:
    """input + output price per token in LiteLLM's cost map as the host's (same pinned) LiteLLM bundles it."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    entry = litellm.model_cost.get(model) or litellm.model_cost[model.split("/", 1)[1]]
    return float(entry["input_cost_per_token"]) + float(entry["output_cost_per_token"])


def host_token_counts() -> dict[str, int]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return {m: litellm.token_counter(model=m, messages=MESSAGES) for m in ("gpt-4o", "gpt-4", CLAUDE)}


@pytest.fixture
def moat_pod(tmp_path: Path) -> Iterator[dict[str, str]]:
    pod = podman.unique_name("moat")
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.yaml").write_text(yaml.safe_dump(moat_config()))
    audit = tmp_path / "audit"
    audit.mkdir()
    shutil.copy(HERE / "moat_audit" / "sitecustomize.py", audit / "sitecustomize.py")
    events, run = tmp_path / "events", tmp_path / "run"
    for writable in (events, run):
        writable.mkdir()
        writable.chmod(0o777)  # written by the container's uid 10001
    locked = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "10001:10001"]
    names = {"pod": pod, "upstream": f"{pod}-upstream", "gateway": f"{pod}-gateway", "events": str(events)}
    podman.podman("pod", "create", "--name", pod, "--network", "none")
    try:
        podman.podman(
            "run", "--detach", "--pod", pod, "--name", names["upstream"], *locked,
            "--volume", f"{FAKE_UPSTREAM}:/harness/fake_upstream.py:ro,Z",
            "--entrypoint", "python3", podman.image("gateway"),
            "/harness/fake_upstream.py", "--port", str(UPSTREAM_PORT),
        )  # fmt: skip
        podman.podman(
            "run", "--detach", "--pod", pod, "--name", names["gateway"], *locked,
            "--tmpfs", "/tmp:rw,mode=1777", "--volume", f"{run}:/app/run:Z",
            "--volume", f"{config}:/app/config:ro,Z",
            "--volume", f"{audit}:/audit:ro,Z", "--volume", f"{events}:/events:Z",
            "--env", "PYTHONPATH=/audit", "--env", "ROUTEIQ_AUDIT_FILE=/events/socket.jsonl",
            "--env", "ROUTEIQ_EGRESS_ALLOWED_NETWORKS=127.0.0.0/8",
            podman.image("gateway"),
            "--config", "/app/config/config.yaml", "--host", "127.0.0.1", "--port", str(GATEWAY_PORT),
        )  # fmt: skip
        wait_ready(names["gateway"], UPSTREAM_PORT, "/_control/health")
        wait_ready(names["gateway"], GATEWAY_PORT, "/health/readiness")
        yield names
    finally:
        print(f"--- gateway log ---\n{podman.logs(names['gateway'])[-3000:]}")
        podman.remove_pod(pod)


@pytest.mark.timeout(400)
def test_gateway_image_serves_completions_routing_and_token_counts_with_no_route_out(
    moat_pod: dict[str, str],
) -> None:
    gw = moat_pod["gateway"]
    # The pod's network namespace: loopback only, no route anywhere.
    net = podman.exec_python(
        gw, "import os; print(sorted(os.listdir('/sys/class/net'))); print(open('/proc/net/route').read())"
    ).splitlines()
    assert net[0] == "['lo']" and len([line for line in net[1:] if line.strip()]) == 1, net

    mini = http(gw, "POST", "/v1/chat/completions", GATEWAY_PORT, {"model": "mini", "messages": MESSAGES})
    assert mini["status"] == 200, mini
    assert json.loads(mini["body"])["choices"][0]["message"]["content"]
    assert mini["headers"]["x-routeiq-provider-path"] == "native"

    claude = http(gw, "POST", "/v1/chat/completions", GATEWAY_PORT, {"model": "claude", "messages": MESSAGES})
    assert claude["status"] == 200, claude
    assert claude["headers"]["x-routeiq-provider-path"] == "litellm"
    assert json.loads(claude["body"])["choices"][0]["message"]["content"]

    # Routed: the router sends "auto" to the group "priced", where cost-based routing takes the deployment LiteLLM's
    # cost map (read from the image: nothing to fetch it from) prices lowest.
    cheapest = min(
        (CLAUDE, "litellm", "/v1/messages"), (MINI, "native", "/v1/chat/completions"), key=lambda c: host_price(c[0])
    )
    routed = http(gw, "POST", "/v1/chat/completions", GATEWAY_PORT, {"model": "auto", "messages": MESSAGES})
    assert routed["status"] == 200, routed
    assert routed["headers"]["x-routeiq-router"] == "auto"
    assert routed["headers"]["x-routeiq-model"] == "priced"
    assert routed["headers"]["x-routeiq-provider-path"] == cheapest[1]

    upstream_log = json.loads(http(gw, "GET", "/_control/requests", UPSTREAM_PORT)["body"])
    assert [r["path"] for r in upstream_log] == ["/v1/chat/completions", "/v1/messages", cheapest[2]]

    # Token counts: tiktoken's cl100k_base and o200k_base and the Anthropic tokenizer, from files in the image.
    counts = json.loads(
        podman.exec_python(
            gw,
            "import json, litellm\n"
            f"print(json.dumps({{m: litellm.token_counter(model=m, messages={MESSAGES!r})"
            f" for m in ('gpt-4o', 'gpt-4', {CLAUDE!r})}}))",
        )
    )
    assert counts == host_token_counts()
    assert all(n > 5 for n in counts.values())

    # Nothing but loopback was looked up or connected to, by the gateway or by the token counting.
    events = [json.loads(line) for line in (Path(moat_pod["events"]) / "socket.jsonl").read_text().splitlines()]
    assert any(e["event"] == "socket.connect" and e["port"] == GATEWAY_PORT for e in events)  # the hook was on
    outside = [e for e in events if not _loopback(e["host"])]
    assert outside == [], outside
    log = podman.logs(gw)
    assert "model_prices_and_context_window" not in log and "raw.githubusercontent" not in log


def _loopback(host: str) -> bool:
    if host in ("localhost", "None"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
