"""Loading a router model from the volume: verified first, unpickled last, never the other way round.

Unpickling is code execution, so an artifact is loaded only through its manifest, only if the manifest's
signature verifies against the pod's public key (when signatures are required), and only if the bytes being
unpickled are the bytes whose size and sha256 were checked: the file is opened once, hashed through that open
descriptor, then loaded from it, so a rename over the path in between cannot slip other bytes in.

model-sync renames the artifact first and the manifest last, keeping the pair before as `<name>.previous.*`. A
gateway started on a volume left between those renames (model-sync killed) finds an artifact that does not
match its manifest; it then loads the kept previous pair, verified the same way, rather than serving nothing.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from routeiq_shared.manifest import Manifest, ManifestError, sha256_fileobj
from routeiq_shared.signing import VerificationError, verify_manifest


class ModelLoadError(Exception):
    """Why an artifact was not loaded. `reason` is a short code for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    require_signature: bool
    public_key: Ed25519PublicKey | None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    name: str
    version: str
    sha256: str
    # A RouterArtifact (scorer.score(list[str]) -> scores for the strong model, default_threshold), or a legacy
    # fitted estimator with predict(list[str]) -> candidate names.
    model: Any
    load_seconds: float
    slot: str = ""  # "" the current pair, PREVIOUS the kept one (the current did not match its manifest)


PREVIOUS = "previous"
# The current pair is half-installed (its artifact is not the one its manifest describes): the kept pair may do.
_PAIR_REASONS = frozenset({"missing", "size_mismatch", "sha256_mismatch"})


def manifest_path(models_dir: Path, name: str, slot: str = "") -> Path:
    return models_dir / (f"{name}.{slot}.manifest.json" if slot else f"{name}.manifest.json")


def artifact_path(models_dir: Path, name: str, slot: str = "") -> Path:
    return models_dir / (f"{name}.{slot}.pkl" if slot else f"{name}.pkl")


def read_manifest(models_dir: Path, name: str, policy: VerifyPolicy, slot: str = "") -> Manifest:
    path = manifest_path(models_dir, name, slot)
    try:
        manifest = Manifest.from_json(path.read_bytes())
    except FileNotFoundError:
        raise ModelLoadError("missing", f"no {path.name} in {models_dir}") from None
    except ManifestError as exc:
        raise ModelLoadError("bad_manifest", str(exc)) from None
    if manifest.name != name:
        raise ModelLoadError("bad_manifest", f"{name}.manifest.json describes {manifest.name!r}")
    if policy.public_key is not None and (policy.require_signature or manifest.signature is not None):
        try:
            verify_manifest(manifest, policy.public_key)
        except VerificationError as exc:
            raise ModelLoadError(exc.reason, str(exc)) from None
    elif policy.require_signature:
        raise ModelLoadError("no_public_key", "signatures are required but MODEL_SIGNING_PUBLIC_KEY is not set")
    return manifest


def load_model(models_dir: Path, name: str, policy: VerifyPolicy, *, fall_back: bool = False) -> LoadedModel:
    """Verify and load `name`. Blocking (hashing, unpickling): run it in a worker thread.

    `fall_back`: when the current artifact does not match its manifest (or is missing), load the kept previous
    pair instead, if it verifies; the current pair's error is raised when it does not."""
    try:
        return _load_slot(models_dir, name, policy, "")
    except ModelLoadError as exc:
        if not fall_back or exc.reason not in _PAIR_REASONS:
            raise
        current_error = exc
    try:
        return _load_slot(models_dir, name, policy, PREVIOUS)
    except ModelLoadError:
        raise current_error from None


def _load_slot(models_dir: Path, name: str, policy: VerifyPolicy, slot: str) -> LoadedModel:
    import joblib

    start = time.perf_counter()
    manifest = read_manifest(models_dir, name, policy, slot)
    path = artifact_path(models_dir, name, slot)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise ModelLoadError("missing", f"{path.name} is not in {models_dir}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size != manifest.artifact.size:
            raise ModelLoadError(
                "size_mismatch", f"{path.name} is {size} bytes, its manifest says {manifest.artifact.size}"
            )
        digest, hashed = sha256_fileobj(fh)
        if hashed != size or not hmac.compare_digest(digest, manifest.artifact.sha256):
            raise ModelLoadError("sha256_mismatch", f"{path.name} does not match its manifest's sha256")
        fh.seek(0)
        try:
            model = joblib.load(fh)
        except Exception as exc:  # noqa: BLE001 — a verified pickle can still fail (library drift): report, keep the old
            raise ModelLoadError("load_failed", f"{name} {manifest.version}: {type(exc).__name__}: {exc}") from None
    scorer = getattr(model, "scorer", None)
    if not callable(getattr(scorer, "score", None)) and not callable(getattr(model, "predict", None)):
        raise ModelLoadError(
            "not_a_router", f"{name} {manifest.version}: the artifact has no scorer.score() or predict()"
        )
    _warm_up(model)
    return LoadedModel(name, manifest.version, manifest.artifact.sha256, model, time.perf_counter() - start, slot)


def _warm_up(model: Any) -> None:
    """One score here, in the loading thread: what a scorer derives once (lazily cached tables) is built before
    the first request, whose measured cost then says what the model costs, not what its first call did."""
    score = getattr(getattr(model, "scorer", None), "score", None)
    if callable(score):
        with contextlib.suppress(Exception):  # a scorer that fails is the request path's to report (its fallback)
            score(["warm up"])
