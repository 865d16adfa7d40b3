"""`make run`: a local pod on embedded defaults.

Starts, on loopback, what a Kubernetes pod runs: the gateway on :4000 with the bundled DEMO config, in front of
a DEMO fake provider on :4010 (so no API key and no network are needed). The pod's shared volume is `.run/`.
Ctrl-C (or SIGTERM) stops every process it started; the gateway drains first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from routeiq_shared.atomic import atomic_write

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUN = Path(os.environ.get("ROUTEIQ_LOCAL_POD_DIR", ROOT / ".run"))
DEMO_CONFIG = ROOT / "examples" / "demo" / "config.yaml"
PROVIDER_PORT = int(os.environ.get("DEMO_PROVIDER_PORT", "4010"))
GATEWAY_PORT = int(os.environ.get("ROUTEIQ_PORT", "4000"))


def start(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    print(f"[local-pod] starting {name}: {' '.join(cmd)}", flush=True)
    return subprocess.Popen(cmd, env={**os.environ, **env}, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[local-pod] {url} never came up: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"[local-pod] {url} not ready after {seconds:.0f} s")


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # gateway first, so it drains while its upstream is still there
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM to the launcher stops the pod as Ctrl-C does


def main() -> None:
    for sub in ("config", "models", "run"):
        (RUN / sub).mkdir(parents=True, exist_ok=True)
    # The pod's copy of the demo config, pointed at the port the demo provider really listens on.
    demo = DEMO_CONFIG.read_text().replace("127.0.0.1:4010", f"127.0.0.1:{PROVIDER_PORT}")
    atomic_write(RUN / "config" / "config.yaml", demo.encode())
    env = {
        "ROUTEIQ_CONFIG_DIR": str(RUN / "config"),
        "ROUTEIQ_MODELS_DIR": str(RUN / "models"),
        "ROUTEIQ_RUN_DIR": str(RUN / "run"),
        "DEMO_PROVIDER_KEY": "demo-key-not-secret",
        "PYTHONUNBUFFERED": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        provider = start(
            "DEMO fake provider",
            [
                sys.executable,
                str(ROOT / "tests" / "harness" / "fake_upstream.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(PROVIDER_PORT),
            ],
            env,
        )
        procs.append(provider)
        wait_ready(f"http://127.0.0.1:{PROVIDER_PORT}/v1/models", provider)
        gateway = start(
            "gateway",
            [
                str(BIN / "routeiq-gateway"),
                "--config",
                str(RUN / "config" / "config.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(GATEWAY_PORT),
            ],
            env,
        )
        procs.append(gateway)
        wait_ready(f"http://127.0.0.1:{GATEWAY_PORT}/health/readiness", gateway)
        print(
            f"\n[local-pod] ready. Gateway: http://127.0.0.1:{GATEWAY_PORT}  (DEMO provider on :{PROVIDER_PORT})\n"
            f"  curl -s http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions -H 'Authorization: Bearer sk-routeiq-demo'"
            " -H 'Content-Type: application/json' \\\n"
            '    -d \'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}\'\n'
            f"  config: {RUN / 'config' / 'config.yaml'}\n"
            f"  reload after editing it: kill -HUP $(cat {RUN / 'run' / 'gateway.pid'})\n"
            "  Ctrl-C stops the pod.\n",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p.args for p in procs if p.poll() is not None]
        print(f"[local-pod] a process exited: {dead}; stopping the pod", flush=True)
    except KeyboardInterrupt:
        print("\n[local-pod] stopping", flush=True)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
