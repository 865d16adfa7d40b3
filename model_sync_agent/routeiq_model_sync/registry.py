"""The model registry's layout in the object store, and the operator's publish and rollback.

<prefix>/<name>/<version>/model.pkl
<prefix>/<name>/<version>/manifest.json   (signed; written after model.pkl, so it never names a missing file)
<prefix>/<name>/CURRENT                   (the version to serve; a config pin overrides it)
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from routeiq_shared.manifest import Artifact, Manifest, TrainingData, sha256_file, utc_now_rfc3339
from routeiq_shared.objectstore import ObjectMissing, ObjectStore
from routeiq_shared.signing import sign_manifest

MANIFEST_MAX_BYTES = 64 * 1024
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


async def read_current(store: ObjectStore, name: str) -> str:
    try:
        obj = await store.get(current_key(name), max_bytes=1024)
    except ObjectMissing:
        raise RegistryError("no_current", f"{name}: the registry has no CURRENT") from None
    assert obj is not None
    version = obj.body.decode("utf-8", "replace").strip()
    if not version:
        raise RegistryError("no_current", f"{name}: CURRENT is empty")
    return version


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
        await store.put(current_key(name), f"{version}\n".encode())
    return signed


async def rollback(store: ObjectStore, name: str, version: str) -> None:
    """Point CURRENT at an already published version (checked to exist first)."""
    await read_manifest(store, name, version)
    await store.put(current_key(name), f"{version}\n".encode())
