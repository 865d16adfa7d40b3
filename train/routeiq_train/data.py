"""Reading a labelled routing dataset: a CSV with a `prompt` column and two correctness columns (weak, strong),
e.g. ../shared/data/routellm-mmlu/train.csv. `subject` is optional: it stratifies splits and teaches the `gain`
router's subject classifier, but is never a feature (at serving time the router sees only the prompt)."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from routeiq_shared.manifest import sha256_file

from .routers import TrainingSet

DEFAULT_WEAK = "mixtral_8x7b_correct"
DEFAULT_STRONG = "gpt_4_1106_correct"
PROMPT = "prompt"
SUBJECT = "subject"
TRUE = frozenset({"true", "1", "yes", "t", "y"})
FALSE = frozenset({"false", "0", "no", "f", "n"})
FIELD_LIMIT = 16 * 1024 * 1024  # one prompt may be long; csv's default 128 KiB would refuse it


class DataError(Exception):
    """The file cannot be used as given; the message names the file and, where there is one, the line."""


@dataclass(frozen=True, slots=True)
class Dataset:
    rows: TrainingSet
    digest: str  # "sha256:<hex>" of the file's bytes
    path: Path | str  # a CSV file, or a records source (directory, .jsonl, s3:// prefix)


def _boolean(value: str, column: str, where: str) -> bool:
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    shown = value if len(value) <= 40 else value[:40] + "…"
    raise DataError(f"{where}: column {column} is {shown!r}, not a boolean (True/False or 1/0)")


def load_dataset(path: Path, weak: str = DEFAULT_WEAK, strong: str = DEFAULT_STRONG) -> Dataset:
    if weak == strong:
        raise DataError(f"--weak and --strong name the same column {weak!r}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from None
    if size == 0:
        raise DataError(f"{path} is empty")
    csv.field_size_limit(min(FIELD_LIMIT, sys.maxsize))
    texts: list[str] = []
    subjects: list[str] = []
    weak_ok: list[bool] = []
    strong_ok: list[bool] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if not header:
                raise DataError(f"{path} is empty")
            missing = [c for c in (PROMPT, weak, strong) if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)} (it has: {', '.join(header)})")
            has_subject = SUBJECT in header
            for number, row in enumerate(reader, start=1):
                # prompts span lines: name the data row, and the line where it ends
                where = f"{path} row {number} (line {reader.line_num})"
                if None in row or any(row.get(c) is None for c in (PROMPT, weak, strong)):
                    raise DataError(f"{where}: the row has {len(row)} fields, not the header's {len(header)}")
                prompt = row[PROMPT]
                if not prompt.strip():
                    raise DataError(f"{where}: empty prompt")
                weak_ok.append(_boolean(row[weak], weak, where))
                strong_ok.append(_boolean(row[strong], strong, where))
                texts.append(prompt)
                subjects.append((row.get(SUBJECT) or "").strip() if has_subject else "")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from None
    if not texts:
        raise DataError(f"{path} has a header but no rows")
    sha, _ = sha256_file(path)
    data = TrainingSet(texts, subjects, np.asarray(weak_ok, dtype=bool), np.asarray(strong_ok, dtype=bool))
    return Dataset(data, f"sha256:{sha}", path)


def check_trainable(data: TrainingSet, path: Path | str) -> None:
    """A router learns where the models disagree: it needs more than one gain class to learn anything."""
    classes = sorted(set(data.gain.tolist()))
    if len(classes) < 2:
        names = {-1: "only the weak model right", 0: "both models alike", 1: "only the strong model right"}
        raise DataError(f"{path}: a single class ({names[classes[0]]} on every row): nothing to learn where to route")
