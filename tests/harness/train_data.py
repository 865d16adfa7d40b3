"""Small labelled routing datasets for routeiq-train's tests, shaped like ../shared/data/routellm-mmlu/train.csv.

The gain of the strong model is learnable from the text alone: questions of the `logic` subject and questions
with the word "integral" are where only the strong model is right, "trivia" questions are where only the weak
model is; the rest are mostly ties. Some label noise keeps every class present."""

from __future__ import annotations

import csv
import random
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routeiq_train.routers import TrainingSet

SUBJECTS = {
    "logic": "premise syllogism valid argument entails conclusion",
    "history": "empire treaty century dynasty revolution war",
    "biology": "cell protein enzyme membrane gene organism",
    "trivia": "capital country famous river mountain flag",
}
FIELDS = ("subject", "prompt", "mixtral_8x7b_correct", "gpt_4_1106_correct")


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subject = rng.choice(list(SUBJECTS))
        words = SUBJECTS[subject].split()
        hard = rng.random() < 0.25
        body = " ".join(rng.choice(words) for _ in range(12))
        prompt = f"Question {i}: {body}{' integral' if hard else ''}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        if subject == "logic" or hard:
            weak, strong = rng.random() < 0.2, rng.random() < 0.9
        elif subject == "trivia":
            weak, strong = rng.random() < 0.9, rng.random() < 0.5
        else:
            weak = strong = rng.random() < 0.7
            if rng.random() < 0.1:
                strong = not strong
        rows.append({"subject": subject, "prompt": prompt, FIELDS[2]: str(weak), FIELDS[3]: str(strong)})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], fields: tuple[str, ...] = FIELDS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def mmlu_csv() -> Path | None:
    """../shared/data/routellm-mmlu/train.csv beside the repository (CI lays shared/ there), or /work/shared."""
    repo = Path(__file__).resolve().parents[2]
    for base in (repo.parent / "shared", Path("/work/shared")):
        path = base / "data/routellm-mmlu/train.csv"
        if path.is_file():
            return path
    return None


def training_set(rows: list[dict[str, str]]) -> TrainingSet:
    """make_rows' rows as the TrainingSet the fitters take."""
    import numpy as np
    from routeiq_train.routers import TrainingSet

    return TrainingSet(
        [r["prompt"] for r in rows],
        [r["subject"] for r in rows],
        np.array([r["mixtral_8x7b_correct"] == "True" for r in rows]),
        np.array([r["gpt_4_1106_correct"] == "True" for r in rows]),
    )


def run_train(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The `routeiq-train` console script of the project's venv, run as a user runs it (the harness's clean
    environment plus `env`); its exit code, stdout and stderr."""
    from .processes import child_env
    from .sidecar_process import venv_script

    return subprocess.run(
        [str(venv_script("routeiq-train")), *(str(a) for a in args)],
        env=child_env(env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
