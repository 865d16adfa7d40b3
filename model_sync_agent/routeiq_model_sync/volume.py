"""The models on the shared volume: what is installed, and installing a verified download.

    <name>.pkl + <name>.manifest.json                    the version the gateway serves
    <name>.previous.pkl + <name>.previous.manifest.json  the one before, kept for instant rollback

Installing renames the artifact first and the manifest last: the gateway acts on a new manifest, and a
manifest always names an artifact already in place (a gateway that looks in between finds the old manifest
with the new artifact, refuses the mismatch, and keeps serving).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from routeiq_shared.atomic import atomic_write
from routeiq_shared.manifest import Manifest, ManifestError

PREVIOUS = "previous"


def artifact_file(models_dir: Path, name: str, slot: str = "") -> Path:
    return models_dir / (f"{name}.{slot}.pkl" if slot else f"{name}.pkl")


def manifest_file(models_dir: Path, name: str, slot: str = "") -> Path:
    return models_dir / (f"{name}.{slot}.manifest.json" if slot else f"{name}.manifest.json")


def installed(models_dir: Path, name: str, slot: str = "") -> Manifest | None:
    try:
        return Manifest.from_json(manifest_file(models_dir, name, slot).read_bytes())
    except (FileNotFoundError, ManifestError):
        return None


def install(models_dir: Path, manifest: Manifest, verified_artifact: Path) -> None:
    """Move a verified temp file (on the same volume) into place and write its manifest last."""
    name = manifest.name
    current_art, current_man = artifact_file(models_dir, name), manifest_file(models_dir, name)
    if current_man.exists() and current_art.exists():
        # Keep what serves now as `previous`: hard links, so nothing is copied and nothing is ever missing.
        _replace_link(current_art, artifact_file(models_dir, name, PREVIOUS))
        _replace_link(current_man, manifest_file(models_dir, name, PREVIOUS))
    os.replace(verified_artifact, current_art)
    atomic_write(current_man, manifest.to_json())


def _replace_link(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    os.link(src, tmp)
    os.replace(tmp, dest)


def temp_path(models_dir: Path, name: str) -> Path:
    """A download target on the same filesystem as its destination, so the final rename is atomic."""
    return models_dir / f".{name}.{os.getpid()}.download"


def remove_stale_downloads(models_dir: Path, name: str) -> list[Path]:
    """Delete partial downloads of `name` left by an agent that died mid-download (a restarted agent has another
    pid). Only one agent writes a volume: another pid's download is dead weight."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.\d+\.download$")
    mine = temp_path(models_dir, name)
    removed = []
    for path in models_dir.glob(f".{name}.*.download"):
        if path != mine and pattern.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
