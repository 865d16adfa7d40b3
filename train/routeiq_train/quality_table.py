"""The README's router-quality table from the ARTIFACT.metrics.json files that `routeiq-train train` wrote.

python -m routeiq_train.quality_table DIR [DIR ...]   (one DIR per seed, each holding KIND.joblib.metrics.json)

Each figure is the mean over the DIRs (held-out splits of different seeds), ± the standard deviation when there
is more than one: one 20% split of 9,700 rows moves savings_at_95 by several points on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson

from .routers import KINDS

COLUMNS = (
    ("savings_at_95", "savings_at_95", 3),
    ("strong_share_at_95", "strong_share_at_95", 3),
    ("apgr", "APGR", 3),
    ("decision_p50_ms", "decision p50 ms", 3),
    ("decision_p99_ms", "decision p99 ms", 3),
)


def table(dirs: list[Path]) -> str:
    lines = [
        "| router | " + " | ".join(title for _, title, _ in COLUMNS) + " | fit s |",
        "|" + " --- |" * (len(COLUMNS) + 2),
    ]
    for kind in KINDS:
        reports = []
        for d in dirs:
            path = d / f"{kind}.joblib.metrics.json"
            if path.exists():
                reports.append(orjson.loads(path.read_bytes()))
        if not reports:
            continue
        cells = []
        for key, _, digits in COLUMNS:
            values = np.array([r["metrics"][key] for r in reports if r["metrics"].get(key) is not None], float)
            cell = f"{values.mean():.{digits}f}"
            if values.size > 1:
                cell += f" ± {values.std(ddof=1):.{digits}f}"
            cells.append(cell)
        fit = np.mean([r["fit_seconds"] for r in reports])
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {fit:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m routeiq_train.quality_table DIR [DIR ...]")
    sys.stdout.write(table([Path(a) for a in args]) + "\n")


if __name__ == "__main__":
    main()
