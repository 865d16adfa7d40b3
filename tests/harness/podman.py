"""podman for tests/images: the images `make images` builds, containers and pods run with the repository's
images/containers.conf (runc, no default ulimits: what Debian's podman 4.3 needs here), and their cleanup.

Every container and pod a test starts is named with a unique prefix and removed by `remove()` / the fixtures,
so a failed test leaves nothing running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "images" / "containers.conf"
IMAGES_HINT = "run `make images-test` (it builds the images first; `make images-tools` installs podman)"
SERVICES = ("gateway", "config-sync", "model-sync")


def chart_version() -> str:
    """The chart's appVersion: the tag `make images` gives the images and the chart's default image tag."""
    for line in (REPO / "charts" / "routeiq" / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise AssertionError("charts/routeiq/Chart.yaml has no appVersion")


def image(service: str) -> str:
    """The local reference of one service's image, as `make images` tags it."""
    return f"localhost/routeiq/{service}:{chart_version()}"


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120.0, input_text: str | None = None) -> str:
    """Run podman; its stdout. A failure raises with the command and podman's stderr."""
    if shutil.which("podman") is None:
        raise AssertionError(f"podman is not installed: {IMAGES_HINT}")
    proc = subprocess.run(
        ["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout, input=input_text
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc.stdout


def run(cmd: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """podman with its exit code and both streams, for tests that assert on a failure."""
    return subprocess.run(["podman", *cmd], env=env(), capture_output=True, text=True, timeout=timeout)


def inspect_image(ref: str) -> dict[str, Any]:
    out = json.loads(podman("image", "inspect", ref))
    assert out, f"no image {ref}: {IMAGES_HINT}"
    result: dict[str, Any] = out[0]
    return result


def require_images() -> None:
    missing = [image(s) for s in SERVICES if run(["image", "exists", image(s)]).returncode != 0]
    assert not missing, f"images missing: {missing}: {IMAGES_HINT}"


def unique_name(prefix: str) -> str:
    return f"riqtest-{prefix}-{uuid.uuid4().hex[:8]}"


def logs(container: str) -> str:
    proc = run(["logs", container])
    return proc.stdout + proc.stderr


def remove_pod(name: str) -> None:
    run(["pod", "rm", "--force", "--time", "2", name], timeout=60)


def remove_container(name: str) -> None:
    run(["rm", "--force", "--time", "2", name], timeout=60)


def container_state(name: str) -> dict[str, Any]:
    out = json.loads(podman("container", "inspect", name))
    state: dict[str, Any] = out[0]["State"]
    return state


def exec_python(container: str, code: str, timeout: float = 60.0) -> str:
    """Run Python code in a running container (its image's interpreter and environment); its stdout."""
    return podman("exec", "-i", container, "python3", "-", timeout=timeout, input_text=code)
