"""The router artifact the benchmark swaps: a tiny scikit-learn Pipeline that really routes, carrying a large
unused ndarray so that loading it costs what loading a big model costs.

The routing part is cheap on purpose: the gateway runs its predict() on every request for `auto`, and a
TF-IDF + logistic regression pipeline costs ~0.8 ms per call on this machine, which would make the benchmark a
measurement of scikit-learn's per-call overhead instead of the swap. Here: prompt -> its length (numpy) -> a
depth-2 decision tree -> a candidate's name. The bulk is `ballast_`, a float64 array of random values set on the
fitted tree: pickled with the estimator, written by joblib as raw bytes after the pickle stream (uncompressed),
and materialised in memory again by joblib.load; predict() never reads it. Random values, so that neither
compression nor page sharing makes it cheaper than a real model of that size.

Published the operator's way: signed with an Ed25519 key into a file:// registry (`registry.publish`, what
`routeiq-model-sync publish` runs), then checked the agent's way (signature, size and sha256) before the
benchmark stages it on the gateway's volume.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from routeiq_model_sync import registry
from routeiq_shared.manifest import Manifest
from routeiq_shared.objectstore import open_store
from routeiq_shared.signing import generate_keypair, load_private_key, load_public_key, verify_artifact, verify_manifest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

ROUTER_ARTIFACT = "router"
SHORT, LONG = "bench-model", "bench-long"  # the router's candidates: two model groups on the same nginx
CANDIDATES = (SHORT, LONG)
_PROMPTS = (
    ("What is the capital of France?", SHORT),
    ("Translate 'good morning' into Italian.", SHORT),
    ("hi", SHORT),
    ("Give me a synonym for happy.", SHORT),
    ("Write a detailed essay on the causes of the First World War, with sources, counterarguments and a "
     "conclusion that weighs the economic against the diplomatic explanations.", LONG),
    ("Derive the equations of motion of a double pendulum with the Lagrangian method, then discuss when the "
     "small-angle approximation fails and what chaos means for numerical integration.", LONG),
    ("Review this 200-line Python module for concurrency bugs, explain each one, and propose a patch that "
     "keeps the public API unchanged while removing the shared mutable state.", LONG),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BuiltArtifact:
    version: str
    path: Path  # in the registry: <registry>/router/<version>/model.pkl
    manifest: Manifest
    size_bytes: int
    ballast_bytes: int
    build_s: float  # train + ballast + joblib.dump
    predict_us: float  # one predict([prompt]) in this process, the gateway's per-request routing cost


def train_router() -> Pipeline:
    texts = [text for text, _ in _PROMPTS]
    labels = [label for _, label in _PROMPTS]
    pipeline = Pipeline(
        [
            ("length", FunctionTransformer(np.char.str_len)),
            ("column", FunctionTransformer(np.reshape, kw_args={"shape": (-1, 1)})),
            ("tree", DecisionTreeClassifier(max_depth=2, random_state=0)),
        ]
    )
    return pipeline.fit(texts, labels)


def predict_cost_us(pipeline: Any, rounds: int = 2000) -> float:
    prompt = [_PROMPTS[0][0]]
    for _ in range(100):
        pipeline.predict(prompt)
    start = time.perf_counter()
    for _ in range(rounds):
        pipeline.predict(prompt)
    return (time.perf_counter() - start) / rounds * 1e6


def write_artifact(path: Path, size_mb: int, seed: int) -> tuple[int, float, float]:
    """(ballast bytes, build seconds, predict µs) for a router with `size_mb` MB of ballast dumped at `path`."""
    start = time.perf_counter()
    pipeline = train_router()
    assert list(pipeline.predict([_PROMPTS[0][0], _PROMPTS[-1][0]])) == [SHORT, LONG]
    predict_us = predict_cost_us(pipeline)
    ballast = np.random.default_rng(seed).random(size_mb * 1024 * 1024 // 8)
    pipeline.named_steps["tree"].ballast_ = ballast
    joblib.dump(pipeline, path)  # no compression: joblib writes the array's raw bytes
    return ballast.nbytes, time.perf_counter() - start, predict_us


def make_keys(directory: Path) -> tuple[Path, Path]:
    private_pem, public_pem = generate_keypair()
    private, public = directory / "signing.key", directory / "signing.pub"
    private.write_bytes(private_pem)
    os.chmod(private, 0o600)
    public.write_bytes(public_pem)
    return private, public


def build_and_publish(
    workdir: Path, registry_dir: Path, version: str, size_mb: int, seed: int, private_key: Path, public_key: Path
) -> BuiltArtifact:
    built = workdir / f"router-{version}.pkl"
    ballast, build_s, predict_us = write_artifact(built, size_mb, seed)
    manifest = registry.build_manifest(
        ROUTER_ARTIFACT, version, built, {"bench": 1.0}, f"sha256:bench-{seed}", len(_PROMPTS)
    )

    async def publish() -> Manifest:
        store = open_store(registry_dir.as_uri() + "/")
        try:
            key = load_private_key(private_key)
            return await registry.publish(store, manifest, built, key, set_current=False)
        finally:
            await store.close()

    signed = asyncio.run(publish())
    built.unlink()  # the registry holds its own copy
    published = registry_dir / registry.artifact_key(ROUTER_ARTIFACT, version)
    # What the agent checks before it renames anything into place.
    verify_manifest(signed, load_public_key(public_key))
    verify_artifact(signed, published)
    return BuiltArtifact(version, published, signed, published.stat().st_size, ballast, build_s, predict_us)


def stage(models_dir: Path, artifact: BuiltArtifact) -> Path:
    """Put the artifact on the gateway's volume under a temp name, as the agent's download leaves it, and verify
    it there as the agent does right before its rename (size and sha256: a full read, so the file is in the page
    cache when the gateway reads it, as after a real download). A hard link: same bytes, no copy (the registry
    and the volume share the benchmark's temp dir)."""
    staged = models_dir / f".{ROUTER_ARTIFACT}.bench-{artifact.version}.download"
    staged.unlink(missing_ok=True)
    os.link(artifact.path, staged)
    verify_artifact(artifact.manifest, staged)
    return staged


def page_cache_share(path: Path) -> float | None:
    """Share of the file's bytes in the page cache (util-linux `fincore`), None if it can't be told. Recorded at
    each swap: this VM reclaims page cache not touched for ~30 s (DAMON), and a cold artifact loads slower."""
    try:
        done = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", str(path)],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        resident, size = (int(x) for x in done.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return resident / size if size else None
