"""The models on the shared volume: what is installed, and installing a verified download.

    <name>.pkl + <name>.manifest.json                    the version the gateway serves
    <name>.previous.pkl + <name>.previous.manifest.json  the one before, kept for instant rollback
    <name>.current.json                                  the newest signed CURRENT pointer accepted (its sequence
                                                         is the floor for the next one)

Installing renames the artifact first and the manifest last: the gateway acts on a new manifest, and a
manifest always names an artifact already in place (a gateway that looks in between finds the old manifest
with the new artifact, refuses the mismatch, and keeps serving; restarted there, it loads the previous pair).
A failed write puts the serving pair back; `repair` mends a pair an agent killed mid-install left behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from routeiq_shared.atomic import atomic_write
from routeiq_shared.manifest import CurrentPointer, Manifest, ManifestError
from routeiq_shared.signing import VerificationError, verify_artifact

PREVIOUS = "previous"


def artifact_file(models_dir: Path, name: str, slot: str = "") -> Path:
    return models_dir / (f"{name}.{slot}.pkl" if slot else f"{name}.pkl")


def manifest_file(models_dir: Path, name: str, slot: str = "") -> Path:
    return models_dir / (f"{name}.{slot}.manifest.json" if slot else f"{name}.manifest.json")


def pointer_file(models_dir: Path, name: str) -> Path:
    return models_dir / f"{name}.current.json"


def installed(models_dir: Path, name: str, slot: str = "") -> Manifest | None:
    """The manifest in a slot, or None when there is none that parses (or it cannot be read at all)."""
    try:
        return Manifest.from_json(manifest_file(models_dir, name, slot).read_bytes())
    except (OSError, ManifestError):
        return None


def intact(models_dir: Path, name: str, slot: str = "") -> Manifest | None:
    """The slot's manifest if its artifact matches it (size and sha256), else None. Hashes the artifact."""
    manifest = installed(models_dir, name, slot)
    if manifest is None:
        return None
    try:
        verify_artifact(manifest, artifact_file(models_dir, name, slot))
    except (VerificationError, OSError):
        return None
    return manifest


def install(models_dir: Path, manifest: Manifest, verified_artifact: Path) -> None:
    """Move a verified temp file (on the same volume) into place and write its manifest last.

    If the manifest cannot be written (a full volume), the pair that served before is put back, so the volume
    never holds the new artifact under the old manifest; the OSError is raised for the caller to report."""
    name = manifest.name
    current_art, current_man = artifact_file(models_dir, name), manifest_file(models_dir, name)
    prev_art = artifact_file(models_dir, name, PREVIOUS)
    # Keep what serves now as `previous` (only an intact pair: a broken one would poison the fallback): hard
    # links, so nothing is copied and nothing is ever missing.
    kept = intact(models_dir, name) is not None
    if kept:
        _replace_link(current_art, prev_art)
        _replace_link(current_man, manifest_file(models_dir, name, PREVIOUS))
    os.replace(verified_artifact, current_art)
    try:
        atomic_write(current_man, manifest.to_json())
    except OSError:
        if kept:
            _replace_link(prev_art, current_art)  # the old manifest names these bytes again
        else:
            current_art.unlink(missing_ok=True)  # no manifest names it
        raise


def repair(models_dir: Path, name: str) -> str | None:
    """Mend what an agent killed (or failed) mid-install left: a manifest whose artifact does not match it.
    The kept previous pair, if intact, becomes current again; with none, the broken manifest is removed, so the
    version is downloaded again instead of being taken as installed. Returns what was done, or None."""
    if installed(models_dir, name) is None or intact(models_dir, name) is not None:
        return None
    current_art, current_man = artifact_file(models_dir, name), manifest_file(models_dir, name)
    if intact(models_dir, name, PREVIOUS) is not None:
        _replace_link(artifact_file(models_dir, name, PREVIOUS), current_art)
        _replace_link(manifest_file(models_dir, name, PREVIOUS), current_man)
        return "restored the previous pair"
    current_man.unlink(missing_ok=True)
    return "removed a manifest whose artifact does not match it"


def accepted_pointer(models_dir: Path, name: str) -> CurrentPointer | None:
    """The CURRENT pointer last accepted for `name` (unverified here: the caller checks its signature)."""
    try:
        return CurrentPointer.from_json(pointer_file(models_dir, name).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ManifestError):
        return None  # unreadable: the caller's memory still holds the floor while the process lives


def keep_pointer(models_dir: Path, pointer: CurrentPointer) -> None:
    atomic_write(pointer_file(models_dir, pointer.name), pointer.to_json())


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
