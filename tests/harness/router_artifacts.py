"""Router model artifacts for tests, and publishing them the way a training job does: the real CLI.

A router is a scikit-learn Pipeline (TfidfVectorizer + LogisticRegression) from prompt text to a candidate's
name, saved with joblib: the very kind of artifact the gateway serves. `train_router("fast")` makes one that
answers "fast" for every prompt the tests send (and `"strong"` the other way round), so which artifact version
chose shows in the response (`x-routeiq-model`, `x-routeiq-router-version`).

`ModelRegistry` runs `routeiq-model-sync publish|rollback` as a subprocess against one registry URI
(`s3://…` on moto, or `file:///…`), and `keygen()` runs `routeiq-model-sync keygen`.
"""

from __future__ import annotations

import operator
import pickle
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from .model_sync_process import run_model_sync
from .processes import child_env

# What the tests send as the user's message; every router here is checked against these before it is saved.
PROMPTS: tuple[str, ...] = (
    "hello",
    "What is the capital of France?",
    "Summarise this paragraph in one sentence.",
    "Write a haiku about the sea.",
    "Translate 'good morning' into German.",
    "Explain recursion to a child.",
    "List three prime numbers.",
    "How do I sort a list in Python?",
    "Give me a name for a cat.",
    "What time zone is Tokyo in?",
)
# The second class LogisticRegression needs: a token no test prompt contains.
_SENTINEL = "zzqx-sentinel-prompt"


def train_router(choice: str, other: str | None = None) -> Pipeline:
    """A fitted TfidfVectorizer + LogisticRegression that answers `choice` for every prompt in PROMPTS (and
    for text it has never seen: the intercept favours the majority class)."""
    other = other or ("strong" if choice != "strong" else "fast")
    texts = [*PROMPTS, *(p.upper() for p in PROMPTS), _SENTINEL]
    labels = [choice] * (2 * len(PROMPTS)) + [other]
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=200))])
    pipeline.fit(texts, labels)
    probes = [*PROMPTS, "something it has never seen before", "42"]
    predicted = {str(p) for p in pipeline.predict(probes)}
    if predicted != {choice}:
        raise AssertionError(f"router trained for {choice!r} predicts {sorted(predicted)} on the test prompts")
    return pipeline


def write_router(path: Path, choice: str, other: str | None = None) -> Path:
    """Train a router for `choice` and save it with joblib at `path`; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(train_router(choice, other), path)
    return path


def raising_pickle_bytes() -> bytes:
    """A pickle whose loading raises ZeroDivisionError: it unpickles to a call of operator.truediv(1, 0).

    Nothing of the test code is referenced, so it is the load itself that fails (as a pickle from a
    mismatched library version would), not an import.
    """

    class _RaisesOnLoad:
        def __reduce__(self) -> tuple[object, tuple[int, int]]:
            return (operator.truediv, (1, 0))

    return pickle.dumps(_RaisesOnLoad(), protocol=pickle.HIGHEST_PROTOCOL)


def write_raising_pickle(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raising_pickle_bytes())
    return path


# -- keys ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKeys:
    """A key pair written by `routeiq-model-sync keygen`."""

    private: Path  # signing.key (0600): the publisher's
    public: Path  # signing.pub: what pods get as MODEL_SIGNING_PUBLIC_KEY

    def public_pem(self) -> str:
        return self.public.read_text()


def keygen(out_dir: Path) -> SigningKeys:
    """`routeiq-model-sync keygen --out out_dir`; fails the caller if the command fails."""
    done = run_model_sync(["keygen", "--out", out_dir])
    if done.returncode != 0:
        raise AssertionError(f"keygen exited {done.returncode}: {done.stderr.strip()}")
    return SigningKeys(out_dir / "signing.key", out_dir / "signing.pub")


# -- the registry, through the CLI ---------------------------------------------------------------------------


class ModelRegistry:
    """`routeiq-model-sync publish|rollback --registry URI` as subprocesses; `s3_env` (e.g. moto_s3.env())
    points the CLI at the test's S3 server."""

    def __init__(self, uri: str, s3_env: Mapping[str, str] | None = None) -> None:
        self.uri = uri
        self.env = child_env(dict(s3_env or {}))

    def run(self, args: Sequence[str | Path], check: bool = True) -> subprocess.CompletedProcess[str]:
        done = run_model_sync(args, self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"routeiq-model-sync {args[0]} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def publish_args(
        self, name: str, version: str, artifact: Path, key: Path, *, set_current: bool = False
    ) -> list[str]:
        """The arguments of `routeiq-model-sync publish` (after the script), for `run` or an async subprocess."""
        args = [
            "publish",
            "--registry", self.uri,
            "--name", name,
            "--version", version,
            "--artifact", str(artifact),
            "--key", str(key),
            "--metrics", '{"accuracy": 0.9}',
            "--data-digest", "sha256:test",
            "--data-rows", "21",
        ]  # fmt: skip
        return [*args, "--set-current"] if set_current else args

    def publish(
        self,
        name: str,
        version: str,
        artifact: Path,
        key: Path,
        *,
        set_current: bool = False,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(self.publish_args(name, version, artifact, key, set_current=set_current), check=check)

    def rollback(self, name: str, version: str, key: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`rollback --to version --key key`: a new signed CURRENT pointer."""
        args = ["rollback", "--registry", self.uri, "--name", name, "--to", version, "--key", str(key)]
        return self.run(args, check=check)
