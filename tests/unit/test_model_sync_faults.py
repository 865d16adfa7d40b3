"""The model-sync agent under faults and hostile registries, in-process over a file:// registry (issue 7, items
15-18): a full or odd volume never kills a pass, a replayed CURRENT is refused, an oversized artifact is not
fetched whole nor fetched again, and a half-finished install is repaired from the kept previous pair."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from routeiq_model_sync import registry, volume
from routeiq_model_sync.metrics import ModelSyncMetrics
from routeiq_model_sync.settings import ModelSyncSettings
from routeiq_model_sync.sync import ModelSyncer
from routeiq_shared.atomic import atomic_write
from routeiq_shared.objectstore import FileStore, ObjectStore, open_store

NAME = "router"
V1 = b"version one bytes\n" * 100
V2 = b"version two bytes, longer\n" * 150


@dataclass
class Rig:
    tmp: Path
    key: Ed25519PrivateKey
    store: ObjectStore
    models: Path
    root: Path  # the file:// registry's directory

    def settings(self, **env: str) -> ModelSyncSettings:
        base = {
            "MODEL_REGISTRY": f"file://{self.root}/",
            "MODEL_NAMES": NAME,
            "MODEL_SYNC_FALLBACK_DELAY_MAX": "0",
            "ROUTEIQ_MODELS_DIR": str(self.models),
            "ROUTEIQ_CONFIG_DIR": str(self.tmp / "config"),
            "ROUTEIQ_RUN_DIR": str(self.tmp / "run"),
        }
        return ModelSyncSettings.from_env(base | env)

    def syncer(self, store: ObjectStore | None = None, **env: str) -> ModelSyncer:
        settings = self.settings(**env)
        public = self.key.public_key() if settings.public_key is None else None
        return ModelSyncer(settings, store or self.store, None, ModelSyncMetrics(), public)

    def publish(self, version: str, data: bytes, *, set_current: bool = True) -> None:
        path = self.tmp / f"{version}.pkl"
        path.write_bytes(data)
        manifest = registry.build_manifest(NAME, version, path, {}, "sha256:test", 1)
        asyncio.run(registry.publish(self.store, manifest, path, self.key, set_current=set_current))

    def current_bytes(self) -> bytes:
        return (self.root / NAME / "CURRENT").read_bytes()

    def write_current(self, data: bytes) -> None:
        atomic_write(self.root / NAME / "CURRENT", data)

    def served(self) -> tuple[bytes, str]:
        """(the artifact's bytes, the manifest's version) of what the gateway would load now."""
        manifest = volume.installed(self.models, NAME)
        assert manifest is not None
        return volume.artifact_file(self.models, NAME).read_bytes(), manifest.version


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    root = tmp_path / "registry"
    root.mkdir()
    return Rig(tmp_path, Ed25519PrivateKey.generate(), open_store(f"file://{root}/"), tmp_path / "models", root)


def sync(syncer: ModelSyncer) -> dict[str, str]:
    return asyncio.run(syncer.sync_once())


def metric(syncer: ModelSyncer, sample: str, /, **labels: str) -> float:
    value = syncer.metrics.registry.get_sample_value(sample, labels)
    return 0.0 if value is None else value


def hidden_files(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith("."))


# == 15. unexpected OSErrors ==================================================================================


@pytest.fixture
def full_at_manifest_write(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """ENOSPC at the manifest's write, injected at the write boundary (the integration test fills a real tmpfs).
    Yields a switch: set [0] to False to free the space."""
    full = [True]
    real = volume.atomic_write

    def write(path: Path, data: bytes, mode: int = 0o644) -> None:
        if full[0] and path.name.endswith(".manifest.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data, mode)

    monkeypatch.setattr(volume, "atomic_write", write)
    yield full


def test_enospc_at_the_manifest_write_keeps_v1_serving_and_the_agent_running(
    rig: Rig, full_at_manifest_write: list[bool]
) -> None:
    rig.publish("v1", V1)
    full_at_manifest_write[0] = False
    syncer = rig.syncer()
    assert sync(syncer) == {NAME: "installed"}
    full_at_manifest_write[0] = True
    rig.publish("v2", V2)

    assert sync(syncer) == {NAME: "volume_error"}  # reported, not raised

    # The volume: v1's pair as it was (no new artifact under the old manifest), no partial file.
    assert rig.served() == (V1, "v1")
    assert hidden_files(rig.models) == []
    status = syncer.models[NAME]
    assert status.version == "v1" and status.last_result == "volume_error"
    assert "No space left on device" in (status.last_error or "")
    assert syncer.document()["status"] == "degraded"
    assert metric(syncer, "routeiq_model_sync_downloads_total", name=NAME, result="volume_error") == 1.0

    full_at_manifest_write[0] = False  # space freed: the next pass installs v2
    assert sync(syncer) == {NAME: "installed"}
    assert rig.served() == (V2, "v2")
    assert syncer.models[NAME].last_error is None


def test_a_model_name_too_long_for_the_file_system_is_reported_and_the_others_sync(rig: Rig) -> None:
    rig.publish("v1", V1)
    long_name = "r" * 300  # MODEL_NAMES is free text: longer than any file name (ENAMETOOLONG)
    syncer = rig.syncer(MODEL_NAMES=f"{NAME},{long_name}")

    results = sync(syncer)

    assert results[NAME] == "installed"
    assert results[long_name] == "bad_name"
    assert "MODEL_NAMES" in (syncer.models[long_name].last_error or "")
    assert syncer.document()["status"] == "degraded"
    assert sync(syncer)[NAME] == "unchanged"  # and the next pass runs too


# == 16. CURRENT is an authenticated decision ================================================================


def test_a_replayed_older_current_is_refused_and_a_signed_rollback_is_honoured(rig: Rig) -> None:
    rig.publish("v1", V1)
    old_current = rig.current_bytes()  # what an attacker with registry write access saved
    syncer = rig.syncer()
    assert sync(syncer) == {NAME: "installed"}
    rig.publish("v2", V2)
    assert sync(syncer) == {NAME: "installed"}
    assert rig.served() == (V2, "v2")

    rig.write_current(old_current)  # the rollback attack: an older (validly signed) CURRENT put back
    assert sync(syncer) == {NAME: "stale_current"}
    assert rig.served() == (V2, "v2")
    assert "sequence" in (syncer.models[NAME].last_error or "")

    # The refusal survives a restart: the highest accepted sequence is kept on the volume.
    assert sync(rig.syncer()) == {NAME: "stale_current"}
    assert rig.served() == (V2, "v2")

    # The operator's rollback is a new signed pointer with a higher sequence naming v1: honoured.
    asyncio.run(registry.rollback(rig.store, NAME, "v1", rig.key))
    assert sync(syncer) == {NAME: "restored_previous"}
    assert rig.served() == (V1, "v1")


def test_a_plain_current_naming_a_never_served_version_is_refused_when_signatures_are_required(rig: Rig) -> None:
    rig.publish("v1", V1)
    rig.publish("v0-old", V2, set_current=False)  # signed, published, never CURRENT
    syncer = rig.syncer()
    assert sync(syncer) == {NAME: "installed"}

    rig.write_current(b"v0-old\n")  # the registry layout before signed pointers
    assert sync(syncer) == {NAME: "unsigned_current"}
    assert rig.served() == (V1, "v1")

    # Only with MODEL_REQUIRE_SIGNATURE=false is a plain CURRENT followed (backward compatibility).
    lax = rig.syncer(MODEL_REQUIRE_SIGNATURE="false")
    assert sync(lax) == {NAME: "installed"}
    assert rig.served() == (V2, "v0-old")


def test_a_current_signed_by_another_key_is_refused(rig: Rig) -> None:
    rig.publish("v1", V1)
    syncer = rig.syncer()
    assert sync(syncer) == {NAME: "installed"}
    rig.publish("v2", V2, set_current=False)
    other = Ed25519PrivateKey.generate()
    asyncio.run(registry.rollback(rig.store, NAME, "v2", other, check_manifest=False))

    assert sync(syncer) == {NAME: "current_unknown_key"}
    assert rig.served() == (V1, "v1")


def test_a_config_pin_still_wins_over_a_signed_current(rig: Rig) -> None:
    rig.publish("v1", V1)
    rig.publish("v2", V2)
    (rig.tmp / "config").mkdir()
    (rig.tmp / "config" / "config.yaml").write_text(
        "model_list:\n  - {model_name: a, litellm_params: {model: openai/a}}\n"
        "routeiq:\n  routers:\n    - {name: auto, artifact: router, model_version: v1, candidates: [a]}\n"
    )
    syncer = rig.syncer(MODEL_NAMES="")
    assert sync(syncer) == {NAME: "installed"}
    assert rig.served() == (V1, "v1")


# == 17. an artifact larger than its manifest says ===========================================================


class CountingStore:
    """A FileStore that records every download (name, max_bytes) and the bytes it wrote."""

    def __init__(self, inner: FileStore) -> None:
        self.inner = inner
        self.location = inner.location
        self.downloads: list[tuple[str, int]] = []

    async def download(self, name: str, dest: Path, *, max_bytes: int) -> int:
        self.downloads.append((name, max_bytes))
        return await self.inner.download(name, dest, max_bytes=max_bytes)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def test_an_oversized_artifact_is_read_only_to_its_manifest_size_and_not_fetched_again(rig: Rig) -> None:
    rig.publish("v1", V1)
    assert isinstance(rig.store, FileStore)
    store = CountingStore(rig.store)
    syncer = rig.syncer(store)  # type: ignore[arg-type]
    assert sync(syncer) == {NAME: "installed"}
    rig.publish("v2", V2)
    (rig.root / NAME / "v2" / "model.pkl").write_bytes(V2 + b"x" * (3 * 1024 * 1024))  # grown behind the manifest

    first = sync(syncer)
    assert first == {NAME: "size_mismatch"}
    assert store.downloads[-1] == ("router/v2/model.pkl", len(V2))  # never asked for more than the manifest says
    fetched = len(store.downloads)
    assert "manifest says" in (syncer.models[NAME].last_error or "")

    for _ in range(3):  # the next polls remember the refusal instead of downloading again
        assert sync(syncer) == {NAME: "size_mismatch"}
    assert len(store.downloads) == fetched
    assert rig.served() == (V1, "v1")
    assert hidden_files(rig.models) == []


# == 18. a pair left half-installed ==========================================================================


def test_the_agent_repairs_a_pair_left_between_the_artifact_and_the_manifest_rename(rig: Rig) -> None:
    rig.publish("v1", V1)
    assert sync(rig.syncer()) == {NAME: "installed"}
    rig.publish("v2", V2, set_current=False)
    # The state an agent killed between `os.replace(artifact)` and the manifest's rename leaves: v1's pair kept as
    # previous, v2's bytes under v1's manifest.
    models = rig.models
    os.link(volume.artifact_file(models, NAME), volume.artifact_file(models, NAME, volume.PREVIOUS))
    os.link(volume.manifest_file(models, NAME), volume.manifest_file(models, NAME, volume.PREVIOUS))
    (models / "router.pkl.new").write_bytes(V2)
    os.replace(models / "router.pkl.new", volume.artifact_file(models, NAME))

    results = sync(rig.syncer())  # a restarted agent; CURRENT still names v1

    assert results == {NAME: "unchanged"}
    assert rig.served() == (V1, "v1")  # the artifact under v1's manifest is v1's again
