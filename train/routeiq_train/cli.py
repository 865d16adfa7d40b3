"""`routeiq-train`: train a learned router, judge it on data, publish it to the model registry.

routeiq-train train --router KIND --data FILE --out ARTIFACT [--weak COL] [--strong COL] [--seed N] [--holdout F]
routeiq-train train --router KIND --records SOURCE --out ARTIFACT [--weak MODEL] [--strong MODEL] ...
routeiq-train evaluate --artifact ARTIFACT --data FILE [--weak COL] [--strong COL] [--scores OUT.csv]
routeiq-train convert --data FILE --out RECORDS.jsonl [--weak COL] [--strong COL] --weak-model M --strong-model M
routeiq-train publish --artifact A --name N --version V --registry URI --key KEY [--set-current] [--force]

`train` holds out a seeded split stratified by subject, fits on the rest, evaluates on the held-out rows, sets the
artifact's default threshold where the held-out curve reaches 95% of the strong model's quality, and writes
ARTIFACT plus ARTIFACT.metrics.json. `evaluate` prints its metrics as one JSON object on its last stdout line.
`--records` reads routing records (a spool directory, a .jsonl file, or s3://bucket/prefix/) instead of a CSV:
there --weak/--strong name the two models (default: the records' cheapest and dearest candidates); `convert`
writes a CSV as such records. Bad input is one line on stderr and exit 2; a refused or failed publish exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import numpy as np
import orjson
from routeiq_shared.atomic import atomic_write
from routeiq_shared.jsonlog import setup_logging

from . import tracking
from .data import DEFAULT_STRONG, DEFAULT_WEAK, DataError, Dataset, check_trainable, load_dataset
from .evaluation import ArtifactError, evaluate, load_artifact
from .records import convert, load_records

SERVICE = "routeiq-train"
log = logging.getLogger("routeiq.train")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        sys.stderr.write(f"{SERVICE}: {message} (see --help)\n")
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog=SERVICE, description="train, evaluate and publish RouteIQ's learned routers")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="fit a router; evaluate it on a held-out split; write the artifact")
    train.add_argument("--router", required=True, help="random|logistic|knn|mlp|svm|mf|gain|boost")
    _source_arguments(train)
    train.add_argument("--out", type=Path)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--holdout", type=float, default=0.2, help="held-out fraction, stratified by subject")
    ev = sub.add_parser("evaluate", help="score a dataset with an artifact; metrics as JSON on the last line")
    ev.add_argument("--artifact", type=Path, required=True)
    _source_arguments(ev)
    ev.add_argument("--scores", type=Path, help="write each row's score (in input order) to this CSV")
    pub = sub.add_parser("publish", help="sign and upload an artifact with its metrics to the model registry")
    pub.add_argument("--artifact", type=Path, required=True)
    pub.add_argument("--name", required=True)
    pub.add_argument("--version", required=True)
    pub.add_argument("--registry", required=True, help="s3://bucket/prefix/ or file:///dir/")
    pub.add_argument("--key", type=Path, required=True, help="the private key (signing.key)")
    pub.add_argument("--set-current", action="store_true", help="also make it the version to serve")
    pub.add_argument("--force", action="store_true", help="publish even if worse than the CURRENT version")
    conv = sub.add_parser("convert", help="write a labelled CSV as routing records (JSONL), to train with --records")
    conv.add_argument("--data", type=Path, required=True)
    conv.add_argument("--out", type=Path, required=True)
    conv.add_argument("--weak", default=DEFAULT_WEAK, help="the weak model's correctness column")
    conv.add_argument("--strong", default=DEFAULT_STRONG, help="the strong model's correctness column")
    conv.add_argument("--weak-model", required=True, help="the weak model's group name, as in config.yaml")
    conv.add_argument("--strong-model", required=True, help="the strong model's group name")
    args = parser.parse_args(argv)
    missing = missing_options(args)
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def missing_options(args: argparse.Namespace) -> list[str]:
    """Every missing option at once (argparse names a missing choice of --data/--records only after the rest)."""
    missing = ["--out"] if args.command == "train" and args.out is None else []
    if args.command in ("train", "evaluate") and args.data is None and args.records is None:
        missing.append("--data or --records")
    return missing


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()  # required: checked with the others (missing_options)
    source.add_argument("--data", type=Path, help="a labelled CSV (prompt, weak and strong correctness columns)")
    source.add_argument("--records", help="routing records: a spool directory, a .jsonl file or s3://bucket/prefix/")
    parser.add_argument("--weak", help=f"CSV: the weak model's column ({DEFAULT_WEAK}); records: its model name")
    parser.add_argument("--strong", help=f"CSV: the strong model's column ({DEFAULT_STRONG}); records: its name")


def load_source(args: argparse.Namespace) -> Dataset:
    """The rows of --data (a CSV) or --records (routing records, joined with their feedback)."""
    if args.records is not None:
        dataset, summary = load_records(args.records, args.weak, args.strong)
        sys.stderr.write(summary + "\n")
        return dataset
    return load_dataset(args.data, args.weak or DEFAULT_WEAK, args.strong or DEFAULT_STRONG)


def metrics_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".metrics.json")


def _json_line(obj: Mapping[str, object]) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def run_train(args: argparse.Namespace) -> int:
    from routeiq_shared.routing_models import RouterArtifact

    from .routers import FITTERS
    from .splits import holdout_split

    if args.router not in FITTERS:
        raise UsageError(f"unknown router kind {args.router!r} (known: {', '.join(FITTERS)})")
    if not 0.0 < args.holdout < 1.0:
        raise UsageError(f"--holdout must be between 0 and 1, not {args.holdout}")
    dataset = load_source(args)
    check_trainable(dataset.rows, dataset.path)
    fit_rows, held_rows = holdout_split(dataset.rows, args.holdout, args.seed)
    check_trainable(fit_rows, dataset.path)
    started = time.perf_counter()
    scorer = FITTERS[args.router](fit_rows, args.seed)
    fit_seconds = time.perf_counter() - started
    provisional = RouterArtifact(kind=args.router, scorer=scorer, default_threshold=0.5)
    metrics, _ = evaluate(provisional, held_rows, latency=False)  # only for the threshold
    threshold = metrics["threshold_at_95"]
    # share 0 already reaches 95%: a threshold above every score sends nothing to the strong model
    default_threshold = float(threshold) if threshold is not None else math.nextafter(1.0, 2.0)
    artifact = RouterArtifact(kind=args.router, scorer=scorer, default_threshold=default_threshold)
    metrics, _ = evaluate(artifact, held_rows)
    report = {
        "kind": args.router,
        "metrics": metrics,
        "default_threshold": default_threshold,
        "training_data": {
            "digest": dataset.digest,
            "rows": len(dataset.rows.texts),
            "path": args.records or str(args.data),
            "source": "records" if args.records else "csv",
        },
        "split": {
            "seed": args.seed,
            "holdout": args.holdout,
            "fit_rows": len(fit_rows.texts),
            "held_out_rows": len(held_rows.texts),
        },
        "columns": {"weak": args.weak or DEFAULT_WEAK, "strong": args.strong or DEFAULT_STRONG}
        if args.records is None
        else {"weak_model": args.weak, "strong_model": args.strong},
        "fit_seconds": round(fit_seconds, 3),
    }
    _write_artifact(artifact, args.out)
    report_path = metrics_path(args.out)
    atomic_write(report_path, orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    if tracking.enabled():
        try:
            report["mlflow_run_id"] = tracking.log_training(report, args.out, report_path)
        except tracking.TrackingError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the tracking server says, one line for the user
            raise tracking.TrackingError(f"the model is written, but MLflow refused the run: {exc}") from None
        atomic_write(report_path, orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    sys.stdout.write(
        f"trained {args.router} on {len(fit_rows.texts)} rows in {fit_seconds:.1f}s; held-out "
        f"({len(held_rows.texts)} rows): savings_at_95 {metrics['savings_at_95']:.3f}, apgr {metrics['apgr']}, "
        f"threshold {default_threshold:.4f}\nwrote {args.out} and {metrics_path(args.out)}\n"
    )
    sys.stdout.write(_json_line({"held_out": metrics, "kind": args.router}) + "\n")
    return 0


def _write_artifact(artifact: object, out: Path) -> None:
    import joblib

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        joblib.dump(artifact, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def run_evaluate(args: argparse.Namespace) -> int:
    artifact = load_artifact(args.artifact)
    dataset = load_source(args)
    metrics, scores = evaluate(artifact, dataset.rows)
    if args.scores is not None:
        _write_scores(args.scores, scores)
    sys.stdout.write(_json_line({"kind": artifact.kind, **metrics}) + "\n")
    return 0


def _write_scores(path: Path, scores: np.ndarray) -> None:
    """A one-column CSV, header `score`, one row per input row in input order; written whole, atomically."""
    atomic_write(path, ("\n".join(["score", *(repr(float(s)) for s in scores)]) + "\n").encode())


def run_convert(args: argparse.Namespace) -> int:
    if args.weak_model == args.strong_model:
        raise UsageError(f"--weak-model and --strong-model name the same model {args.weak_model!r}")
    dataset = load_dataset(args.data, args.weak, args.strong)
    written = convert(dataset, args.out, args.weak_model, args.strong_model)
    sys.stdout.write(f"wrote {written} records ({len(dataset.rows.texts)} prompts x 2 models) to {args.out}\n")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "WARNING"))
    try:
        if args.command == "train":
            sys.exit(run_train(args))
        if args.command == "evaluate":
            sys.exit(run_evaluate(args))
        if args.command == "convert":
            sys.exit(run_convert(args))
        if args.command == "publish":
            from .publish import run_publish

            sys.exit(asyncio.run(run_publish(args)))
    except (UsageError, DataError, ArtifactError, tracking.TrackingError) as exc:
        sys.stderr.write(f"{SERVICE} {args.command}: {exc}\n")
        sys.exit(2)
