"""The gateway under test: a router config in front of nginx, and what its log says about model loads."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from proxybench.processes import BenchError, free_port
from proxybench.settings import MASTER_KEY, UPSTREAM_KEY, Settings
from proxybench.targets import Running, Upstream, run_gateway

from .artifact import CANDIDATES, ROUTER_ARTIFACT

ROUTER_MODEL = "auto"  # what the clients ask for; the router picks one of CANDIDATES
LOG_NAME = "routeiq-router"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass(frozen=True)
class LoadEvent:
    """One `Router model loaded` (or `not loaded`) line of the gateway's JSON log."""

    ok: bool
    version: str | None  # the version loaded (None for a failed load)
    at: float  # epoch seconds of the log record (millisecond resolution)
    load_seconds: float | None
    reason: str | None


def gateway_config(upstream: Upstream) -> str:
    # Two model groups on the same nginx, and the virtual model `auto` choosing between them with the learned
    # router. JSON strings are valid YAML scalars (as in proxybench).
    q = json.dumps
    groups = "".join(
        f"  - model_name: {q(group)}\n"
        "    litellm_params:\n"
        f"      model: {q('openai/bench-model')}\n"
        f"      api_base: {q(upstream.api_base)}\n"
        f"      api_key: {q(UPSTREAM_KEY)}\n"
        for group in CANDIDATES
    )
    return (
        f"model_list:\n{groups}"
        f"general_settings:\n  master_key: {q(MASTER_KEY)}\n"
        "routeiq:\n  routers:\n"
        f"    - name: {q(ROUTER_MODEL)}\n"
        f"      artifact: {q(ROUTER_ARTIFACT)}\n"
        f"      candidates: {q(list(CANDIDATES))}\n"
    )


@contextlib.contextmanager
def run_router_gateway(
    settings: Settings, upstream: Upstream, home: Path, public_key: Path
) -> Iterator[tuple[Running, Path]]:
    """`routeiq-gateway` alone on the gateway CPU, signatures required, its volume under `home`. Yields the
    target and the path of its log."""
    port = free_port()
    config = home / "config" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(gateway_config(upstream))
    env = {f"ROUTEIQ_{kind}_DIR": str(home / kind.lower()) for kind in ("CONFIG", "MODELS", "RUN")}
    env |= {"MODEL_REQUIRE_SIGNATURE": "true", "MODEL_SIGNING_PUBLIC_KEY": str(public_key)}
    argv = [str(settings.routeiq_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with run_gateway(LOG_NAME, argv, port, settings, home.parent, env) as running:
        yield running, home.parent / f"{LOG_NAME}.log"


def load_events(log_path: Path) -> list[LoadEvent]:
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"event":"model_load"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(line)
            at = dt.datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
            events.append(
                LoadEvent(
                    ok=record.get("result") == "ok",
                    version=record.get("version") if record.get("result") == "ok" else None,
                    at=at,
                    load_seconds=record.get("load_seconds"),
                    reason=record.get("reason"),
                )
            )
    return events


def routed_version(url: str) -> str:
    """One chat request for `auto`: the router artifact version that chose (x-routeiq-router-version)."""
    body = {"model": ROUTER_MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"},
    )
    try:
        with _OPENER.open(request, timeout=30) as response:
            if response.status != 200:
                raise BenchError(f"request for {ROUTER_MODEL} got HTTP {response.status}")
            model = response.headers.get("x-routeiq-model")
            version = response.headers.get("x-routeiq-router-version", "")
    except urllib.error.HTTPError as exc:
        raise BenchError(f"request for {ROUTER_MODEL} got HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    except OSError as exc:
        raise BenchError(f"request for {ROUTER_MODEL} failed: {exc}") from exc
    if model not in CANDIDATES:
        raise BenchError(f"{ROUTER_MODEL} was answered by {model!r}, not one of the router's candidates")
    return version
