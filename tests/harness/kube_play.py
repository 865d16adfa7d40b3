"""The chart's Deployment run with `podman kube play` (Debian's podman 4.3), for tests/images.

`adapt_for_podman` is everything the test changes in the rendered Deployment, each for a reason of this machine
or of podman 4.3, not of the chart; `KubePod` plays it with the Secrets it references, and reads and stops the pod.

Secrets: kube play 4.3 resolves `secretKeyRef` and `envFrom.secretRef` from podman's secret store, where each
secret must hold the Secret's `data` alone, as a JSON object of key → base64 value (a whole Secret manifest is
refused with "secret … is not valid JSON").
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from . import podman
from .processes import json_records

INIT_CONTAINER = "config-sync-init"


def adapt_for_podman(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The rendered Deployment as this machine can run it:
    - hostNetwork: the pod reaches moto, redis and the fake provider on the host's loopback, and the test reaches
      the pod's ports there (podman's bridge would put the pod on a private range, off loopback);
    - the gateway binds 127.0.0.1 instead of 0.0.0.0, so the host network exposes nothing beyond loopback;
    - no `ports` lists (podman turns them into port mappings, refused on the host network: "PortMappings can only
      be used with Bridge or slirp4netns networking"); probes name the port by number instead of by name;
    - restartPolicy OnFailure instead of a Deployment's Always: podman 4.3 gives the init container the pod's
      restart policy, so with Always it restarts the finished `config-sync --once` at once, then fails to remove
      that "once" init container ("cannot remove container … as it is running") and kube play exits 125 before
      starting the pod's containers. With OnFailure the init container runs to success once (a failure is
      retried, as a kubelet does) and is removed; the containers start after it.
    Everything else (init container, images, volumes, security contexts, env, probes) is the chart's."""
    adapted = copy.deepcopy(dict(deployment))
    spec = adapted["spec"]["template"]["spec"]
    spec["hostNetwork"] = True
    spec["restartPolicy"] = "OnFailure"
    for container in spec["containers"]:
        args = container.get("args", [])
        if "--host" in args:
            args[args.index("--host") + 1] = "127.0.0.1"
        numbers = {p["name"]: p["containerPort"] for p in container.pop("ports", []) if "name" in p}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get and get["port"] in numbers:
                get["port"] = numbers[get["port"]]
    return adapted


class KubePod:
    def __init__(self, kube_file: Path, pod: str, secrets: Sequence[str]) -> None:
        self.kube_file = kube_file
        self.pod = pod
        self.secrets = list(secrets)
        self.started = time.time()

    @classmethod
    def play(cls, deployment: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]], work_dir: Path) -> KubePod:
        work_dir.mkdir(parents=True, exist_ok=True)
        names = []
        for secret in secrets:
            name = secret["metadata"]["name"]
            path = work_dir / f"secret-{name}.json"
            path.write_text(json.dumps(secret["data"]))
            podman.run(["secret", "rm", name])
            podman.podman("secret", "create", name, str(path))
            names.append(name)
        kube_file = work_dir / "deployment.yaml"
        kube_file.write_text(yaml.safe_dump(dict(deployment)))
        pod = f"{deployment['metadata']['name']}-pod-0"
        played = cls(kube_file, pod, names)
        played.started = time.time()
        try:
            podman.podman("kube", "play", "--replace", str(kube_file), timeout=180)
        except AssertionError:
            played.down()
            raise
        return played

    def container(self, name: str) -> str:
        return f"{self.pod}-{name}"

    def containers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            podman.podman("ps", "--all", "--filter", f"pod={self.pod}", "--format", "json")
        )
        return found

    def running_containers(self) -> list[str]:
        prefix = f"{self.pod}-"
        return [
            n.removeprefix(prefix)
            for c in self.containers()
            if c["State"] == "running"
            for n in c["Names"]
            if n.startswith(prefix)
        ]

    def init_exit_codes(self) -> list[int]:
        """Exit codes of the init container's runs, from podman's events: kube play removes a finished init
        container, so its state is gone."""
        out = podman.podman(
            "events", "--stream=false", "--since", str(int(self.started) - 1),
            "--filter", f"container={self.container(INIT_CONTAINER)}", "--filter", "event=died", "--format", "json",
        )  # fmt: skip
        # podman 4.3 leaves ContainerExitCode out of the JSON when it is 0 (omitempty)
        return [int(json.loads(line).get("ContainerExitCode", 0)) for line in out.splitlines() if line.strip()]

    def exit_code(self, name: str) -> int:
        state = podman.container_state(self.container(name))
        code: int = state["ExitCode"]
        return code

    def exec(self, name: str, *cmd: str) -> str:
        return podman.podman("exec", self.container(name), *cmd)

    def logs(self, name: str) -> str:
        return podman.logs(self.container(name))

    def json_logs(self, name: str) -> list[dict[str, Any]]:
        return json_records(self.logs(name))

    def stop(self, timeout: float) -> None:
        """As a kubelet stops a pod: SIGTERM to every container at once, SIGKILL to what still runs after `timeout`
        seconds, the infra container last. Neither `podman pod stop` nor `podman stop` does this on podman 4.3:
        the pod's infra container (whose catatonit is PID 1 of the shared process namespace, so its exit SIGKILLs
        every process left) is stopped as soon as no container counts as running, and a container being stopped
        does not count. With `podman stop` the sidecars exit at once, the infra goes with them, and the draining
        gateway dies with 137. `podman kill --signal TERM` leaves a draining container "running"."""
        prefix = f"{self.pod}-"
        names = [n for c in self.containers() if c["State"] == "running" for n in c["Names"] if n.startswith(prefix)]
        podman.podman("kill", "--signal", "TERM", *names)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the grace period is over: SIGKILL below
            podman.run(["wait", *names], timeout=timeout)
        podman.podman("pod", "stop", "--time", "0", self.pod, timeout=60)

    def describe(self) -> str:
        lines = [f"pod {self.pod}:"]
        for c in self.containers():
            state = podman.container_state(c["Names"][0])
            lines.append(
                f"  {c['Names']} {c['State']} exit={c.get('ExitCode')} oom={state.get('OOMKilled')}"
                f" finished={state.get('FinishedAt')}"
            )
            for name in c["Names"]:
                lines.append("    " + podman.logs(name)[-1500:].replace("\n", "\n    "))
        return "\n".join(lines)

    def down(self) -> None:
        podman.run(["kube", "down", str(self.kube_file)], timeout=120)
        podman.remove_pod(self.pod)
        for name in self.secrets:
            podman.run(["secret", "rm", name])
