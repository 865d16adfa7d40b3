"""The model registry's layout in the object store, and the operator's publish and rollback.

<prefix>/<name>/<version>/model.pkl
<prefix>/<name>/<version>/manifest.json   (signed; written after model.pkl, so it never names a missing file)
<prefix>/<name>/CURRENT                   (the version to serve, a signed pointer; a config pin overrides it)

CURRENT is a `CurrentPointer` signed with the same key as the manifests, with a sequence that grows with every
pointer written (`publish --set-current`, `rollback`): the agents refuse a pointer older than one they accepted,
so someone with write access to the bucket but not the key cannot roll the fleet back. The sequence is the
previous pointer's + 1, and at least the time in milliseconds, so a deleted or garbled CURRENT cannot send it
backwards. A plain-text CURRENT (the layout before) is read as an unsigned pointer.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from routeiq_shared.manifest import (
    POINTER_KIND,
    VERSION_PATTERN,
    Artifact,
    CurrentPointer,
    Manifest,
    ManifestError,
    TrainingData,
    sha256_file,
    utc_now_rfc3339,
)
from routeiq_shared.objectstore import ObjectMissing, ObjectStore
from routeiq_shared.signing import VerificationError, sign_manifest, sign_pointer, verify_manifest, verify_pointer

MANIFEST_MAX_BYTES = 64 * 1024
CURRENT_MAX_BYTES = 4 * 1024
LIBRARIES = ("scikit-learn", "joblib", "numpy", "scipy")


class RegistryError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def artifact_key(name: str, version: str) -> str:
    return f"{name}/{version}/model.pkl"


def manifest_key(name: str, version: str) -> str:
    return f"{name}/{version}/manifest.json"


def current_key(name: str) -> str:
    return f"{name}/CURRENT"


@dataclass(frozen=True, slots=True)
class Current:
    """What `<name>/CURRENT` says: the version, and the signed pointer it came in (None: a plain-text CURRENT)."""

    version: str
    pointer: CurrentPointer | None


async def read_current(store: ObjectStore, name: str) -> Current:
    try:
        obj = await store.get(current_key(name), max_bytes=CURRENT_MAX_BYTES)
    except ObjectMissing:
        raise RegistryError("no_current", f"{name}: the registry has no CURRENT") from None
    assert obj is not None
    return parse_current(name, obj.body)


def parse_current(name: str, body: bytes) -> Current:
    if body.lstrip().startswith(b"{"):
        try:
            pointer = CurrentPointer.from_json(body, source=f"{name}/CURRENT")
        except ManifestError as exc:
            raise RegistryError("bad_current", str(exc)) from None
        if pointer.name != name:
            raise RegistryError("bad_current", f"{name}/CURRENT names the model {pointer.name!r}")
        return Current(pointer.version, pointer)
    version = body.decode("utf-8", "replace").strip()
    if not version:
        raise RegistryError("no_current", f"{name}: CURRENT is empty")
    if not re.match(VERSION_PATTERN, version):
        raise RegistryError("bad_current", f"{name}/CURRENT: {version[:80]!r} is not a version")
    return Current(version, None)


async def next_sequence(store: ObjectStore, name: str, key: Ed25519PrivateKey) -> int:
    """One above the registry's pointer if this key signed it, and never below the time in milliseconds."""
    floor = time.time_ns() // 1_000_000
    try:
        current = await read_current(store, name)
    except RegistryError:
        return floor  # none yet, or garbled: the clock alone
    if current.pointer is None:
        return floor
    try:
        verify_pointer(current.pointer, key.public_key())
    except VerificationError:
        return floor  # not ours: its sequence proves nothing
    return max(current.pointer.sequence + 1, floor)


async def write_current(store: ObjectStore, name: str, version: str, key: Ed25519PrivateKey) -> CurrentPointer:
    """Point CURRENT at `version` with a new signed pointer."""
    pointer = CurrentPointer(
        kind=POINTER_KIND,
        name=name,
        version=version,
        sequence=await next_sequence(store, name, key),
        created_at=utc_now_rfc3339(),
    )
    signed = sign_pointer(pointer, key)
    await store.put(current_key(name), signed.to_json())
    return signed


async def read_manifest(store: ObjectStore, name: str, version: str) -> tuple[Manifest, bytes]:
    try:
        obj = await store.get(manifest_key(name, version), max_bytes=MANIFEST_MAX_BYTES)
    except ObjectMissing:
        raise RegistryError("missing_version", f"{name}: version {version} is not in the registry") from None
    assert obj is not None
    return Manifest.from_json(obj.body), obj.body


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return found


def build_manifest(
    name: str, version: str, artifact: Path, metrics: dict[str, float], data_digest: str, data_rows: int
) -> Manifest:
    sha, size = sha256_file(artifact)
    return Manifest(
        name=name,
        version=version,
        created_at=utc_now_rfc3339(),
        artifact=Artifact(sha256=sha, size=size, format="joblib"),
        library_versions=library_versions(),
        training_data=TrainingData(digest=data_digest, rows=data_rows),
        metrics=metrics,
    )


async def publish(
    store: ObjectStore, manifest: Manifest, artifact: Path, key: Ed25519PrivateKey, *, set_current: bool
) -> Manifest:
    """Upload a signed version. A published version is immutable: publishing it again is refused."""
    name, version = manifest.name, manifest.version
    if await store.exists(manifest_key(name, version)) or await store.exists(artifact_key(name, version)):
        raise RegistryError("exists", f"{name} {version} is already published; publish a new version")
    signed = sign_manifest(manifest, key)
    await store.put_file(artifact_key(name, version), artifact, metadata={"sha256": manifest.artifact.sha256})
    await store.put(manifest_key(name, version), signed.to_json())
    if set_current:
        await write_current(store, name, version, key)
    return signed


async def rollback(
    store: ObjectStore, name: str, version: str, key: Ed25519PrivateKey, *, check_manifest: bool = True
) -> CurrentPointer:
    """Point CURRENT at an already published version with a new signed pointer (a higher sequence, so the fleet
    takes it). The version's manifest must exist and, with `check_manifest`, be signed by this key: a rollback
    must not bring back what the fleet would refuse."""
    manifest, _ = await read_manifest(store, name, version)
    if manifest.name != name or manifest.version != version:
        raise RegistryError(
            "bad_manifest", f"{name}/{version}/manifest.json describes {manifest.name} {manifest.version}"
        )
    if check_manifest:
        try:
            verify_manifest(manifest, key.public_key())
        except VerificationError as exc:
            raise RegistryError(exc.reason, f"{name} {version} is not signed by this key: {exc}") from None
    return await write_current(store, name, version, key)
