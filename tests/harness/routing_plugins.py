"""Tiny routing plug-ins for tests, importable by a gateway process (the repo root on its PYTHONPATH):
a scorer artifact in the router-artifact contract's shape, and custom routers named by `import_path`.

Kept free of heavy imports (no scikit-learn, no harness) because the gateway imports this module when it
unpickles a test artifact or loads a custom router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

HARD_WORDS = ("prove", "derive", "theorem")


class KeywordScorer:
    """score(texts) -> the share of HARD_WORDS each text contains, scaled into [0, 1]: 0.0 for small talk,
    1/3 per hard word. Stateless, so thread-safe."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on

    def score(self, texts: list[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=float)
        for i, text in enumerate(texts):
            if self.fail_on is not None and self.fail_on in text:
                raise RuntimeError("cannot score this prompt")
            lowered = text.lower()
            out[i] = sum(w in lowered for w in HARD_WORDS) / len(HARD_WORDS)
        return out


@dataclass(frozen=True)
class ScoredArtifact:
    """Duck-typed like routeiq_shared.routing_models.RouterArtifact."""

    kind: str
    scorer: Any
    default_threshold: float
    roles: tuple[str, str] = ("weak", "strong")
    format_version: int = 1


class KeywordRouter:
    """A custom router class: instantiated once per config load with the router's params."""

    def __init__(self, keyword: str, target: str) -> None:
        self.keyword = keyword
        self.target = target

    def __call__(self, text: str, candidates: list[str]) -> str:
        return self.target if self.keyword in text else candidates[0]


def last_candidate(text: str, candidates: list[str]) -> str:
    """A custom router function: always the last (strongest) candidate."""
    return candidates[-1]


def raising_router(text: str, candidates: list[str]) -> str:
    raise RuntimeError("this custom router always fails")


class RefusesParams:
    """A custom router class whose constructor raises."""

    def __init__(self, **params: Any) -> None:
        raise ValueError("bad params")
