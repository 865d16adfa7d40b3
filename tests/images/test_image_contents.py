"""The three images as `make images` builds them: non-root with the chart's uid, no compilers, OCI labels, each
console script starting under the chart's container security (read-only root, no capabilities, no network), and
a build context that carries only what the Dockerfiles copy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from harness import podman

SCRIPTS = {"gateway": "routeiq-gateway", "config-sync": "routeiq-config-sync", "model-sync": "routeiq-model-sync"}
# What the chart's containerSecurityContext and podSecurityContext impose, as podman flags.
LOCKED_DOWN = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "none"]
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as")


@pytest.mark.parametrize("service", podman.SERVICES)
def test_image_runs_as_the_charts_non_root_user_with_oci_labels(service: str) -> None:
    info = podman.inspect_image(podman.image(service))
    config = info["Config"]
    assert config["User"] == "10001:10001"  # values.yaml podSecurityContext runAsUser / runAsGroup
    assert config["Entrypoint"] == [SCRIPTS[service]]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"routeiq-{service}"
    assert labels["org.opencontainers.image.version"] == podman.chart_version()
    # make images-test builds before it tests, so the images name the commit checked out (a LABEL step taking
    # build args would keep an earlier build's values: buildah reuses it from cache)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=podman.REPO, capture_output=True, text=True).stdout
    assert labels["org.opencontainers.image.revision"] == head.strip()
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/routeiq/python-base")


@pytest.mark.parametrize("service", podman.SERVICES)
def test_final_stage_has_no_compiler_and_no_pip(service: str) -> None:
    found = podman.run(
        [
            "run",
            "--rm",
            *LOCKED_DOWN,
            "--entrypoint",
            "sh",
            podman.image(service),
            "-c",
            f"for c in {' '.join(COMPILERS)} pip pip3; do command -v $c; done; ls /opt/venv/bin",
        ]
    )
    lines = found.stdout.split()
    assert not [line for line in lines if line.startswith("/")], found.stdout  # no compiler nor pip on PATH
    assert not [line for line in lines if line.startswith("pip")], found.stdout  # nor in the venv
    assert SCRIPTS[service] in lines


@pytest.mark.parametrize("service", podman.SERVICES)
def test_console_script_starts_read_only_as_non_root_without_network(service: str) -> None:
    out = podman.run(["run", "--rm", *LOCKED_DOWN, podman.image(service), "--help"])
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    who = podman.run(["run", "--rm", *LOCKED_DOWN, "--entrypoint", "id", podman.image(service)])
    assert who.stdout.split()[:2] == ["uid=10001(routeiq)", "gid=10001(routeiq)"], who.stdout


def test_sidecar_images_do_not_carry_the_gateways_ml_stack() -> None:
    # The sidecars install routeiq-shared without [ml]: no numpy, scikit-learn or litellm in their images.
    code = "import importlib.util as u; print([m for m in ('numpy', 'sklearn', 'litellm') if u.find_spec(m)])"
    for service in ("config-sync", "model-sync"):
        out = podman.run(["run", "--rm", *LOCKED_DOWN, "--entrypoint", "python3", podman.image(service), "-c", code])
        assert out.stdout.strip() == "[]", (service, out.stdout, out.stderr)
    gw = podman.run(["run", "--rm", *LOCKED_DOWN, "--entrypoint", "python3", podman.image("gateway"), "-c", code])
    assert gw.stdout.strip() == "['numpy', 'sklearn', 'litellm']", gw.stderr


def test_build_context_leaves_out_venvs_runs_caches_and_tests(tmp_path: Path) -> None:
    """.dockerignore at the repository root: a build sends only what the Dockerfiles copy."""
    dockerfile = tmp_path / "Containerfile"
    dockerfile.write_text(
        "FROM localhost/routeiq/python-base:3.11-bookworm\nCOPY . /ctx\n"
        'RUN cd /ctx && echo "top: $(ls -A | tr "\\n" " ")" '
        '&& echo "junk: $(find . -name __pycache__ -o -name "*.egg-info" -o -name .venv -o -name .git | tr "\\n" " ")" '
        '&& echo "kib: $(du -sk . | cut -f1)"\n'
    )
    tag = f"localhost/{podman.unique_name('context')}"
    out = podman.podman("build", "--no-cache", "-f", str(dockerfile), "-t", tag, str(podman.REPO), timeout=300)
    podman.run(["rmi", "--force", tag])
    found = {
        k: v.strip() for k, _, v in (line.partition(": ") for line in out.splitlines()) if k in ("top", "junk", "kib")
    }
    assert set(found["top"].split()) == {
        "config_sync_agent",
        "gateway",
        "model_sync_agent",
        "requirements.lock",
        "shared",
    }
    assert found["junk"] == ""
    assert int(found["kib"]) < 20_000, f"build context is {found['kib']} KiB"
