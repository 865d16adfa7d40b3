"""Training rows from routing records (routeiq_shared/routing_records.py): the fleet's own traffic, read from a
spool directory, a JSONL file or an S3 prefix; and `convert`, which writes a labelled CSV in that same shape.

A row needs both models' outcome on one prompt: the routes with feedback are grouped by prompt text, each model's
scores averaged, and an average of 0.5 or more counts as right. Prompts only one model answered cannot say which
model was better and are counted, not used; so are records that kept only the prompt's digest, records of models
that are neither --weak nor --strong (a candidate since renamed or removed), and unreadable lines (a truncated
last line, say), each reported with where it was.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from routeiq_shared.routing_records import RecordSet, encode, feedback_record, route_record

from .data import DataError, Dataset
from .routers import TrainingSet

MAX_BAD_SHARE = 0.1  # more unreadable lines than this is not a torn tail: refuse the source
RIGHT = 0.5


@dataclass(slots=True)
class RecordStats:
    routes: int = 0
    with_feedback: int = 0
    digest_only: int = 0
    unknown_model: dict[str, int] = field(default_factory=dict)
    one_model_only: int = 0
    used: int = 0

    def summary(self, records: RecordSet) -> str:
        parts = [
            f"{records.lines} lines, {self.routes} routed requests, {self.with_feedback} with feedback, "
            f"{self.used} prompts with both models' outcome used"
        ]
        if self.one_model_only:
            parts.append(f"{self.one_model_only} prompts answered by one model only (skipped)")
        if self.digest_only:
            parts.append(f"{self.digest_only} records without prompt text (routeiq.records.prompt: text)")
        for name, n in sorted(self.unknown_model.items()):
            parts.append(f"{n} records of model {name!r}, neither --weak nor --strong (skipped)")
        if records.orphans:
            parts.append(f"{records.orphans} feedbacks for requests not in the source")
        if records.bad:
            shown = "; ".join(str(b) for b in records.bad[:3])
            parts.append(f"{len(records.bad)} unreadable lines skipped ({shown})")
        return "records: " + "; ".join(parts)


def _local_blobs(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_file():
        yield str(path), path.read_bytes()
        return
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    for file in sorted(path.rglob("*.jsonl")):
        yield str(file), file.read_bytes()


def _s3_blobs(uri: str) -> Iterator[tuple[str, bytes]]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    from routeiq_shared.egress import check_setting_url
    from routeiq_shared.objectstore import parse_store_uri

    location = parse_store_uri(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or None
    if endpoint:
        check_setting_url("S3 endpoint", endpoint)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.prefix)
        keys = sorted(o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".jsonl"))
        for key in keys:
            yield f"s3://{location.bucket}/{key}", s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"{uri}: {type(exc).__name__}: {exc}") from None


def read_records(source: str) -> tuple[RecordSet, str]:
    """Every record under `source`, joined with its feedback, and the sha256 of what was read."""
    records = RecordSet()
    digest = hashlib.sha256()
    try:
        blobs = _s3_blobs(source) if source.startswith("s3://") else _local_blobs(Path(source))
        for name, data in blobs:
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            records.add_lines(name, data)
    except ValueError as exc:  # a malformed s3 URI
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{source}: {exc.strerror or exc}") from None
    if records.lines == 0:
        raise DataError(f"{source}: no routing records (*.jsonl) there")
    if len(records.bad) > MAX_BAD_SHARE * records.lines:
        raise DataError(
            f"{source}: {len(records.bad)} of {records.lines} lines are not routing records "
            f"(first: {records.bad[0]}): not a records source"
        )
    return records.join(), f"sha256:{digest.hexdigest()}"


def load_records(source: str, weak: str | None, strong: str | None) -> tuple[Dataset, str]:
    """(a Dataset of the prompts both models answered, a one-line summary of what was used and skipped)."""
    records, digest = read_records(source)
    routes = list(records.routes.values())
    if weak is None or strong is None:
        first = next((r["candidates"] for r in routes if len(r["candidates"]) >= 2), None)
        if first is None:
            raise DataError(f"{source}: no route record lists two candidates; name them with --weak and --strong")
        weak, strong = weak or first[0], strong or first[-1]  # candidates are listed cheapest first
    if weak == strong:
        raise DataError(f"--weak and --strong name the same model {weak!r}")
    stats = RecordStats(routes=len(routes))
    outcomes: dict[str, dict[str, list[float]]] = defaultdict(lambda: {weak: [], strong: []})
    subjects: dict[str, str] = {}  # converted datasets carry one; live traffic does not
    for rec in records.with_feedback():
        stats.with_feedback += 1
        prompt = rec.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            stats.digest_only += 1
            continue
        model = rec["choice"]
        if model not in (weak, strong):
            stats.unknown_model[model] = stats.unknown_model.get(model, 0) + 1
            continue
        outcomes[prompt][model].append(float(rec["feedback"]))
        subject = rec.get("subject")
        if isinstance(subject, str):
            subjects.setdefault(prompt, subject)
    texts, weak_ok, strong_ok = [], [], []
    for prompt, by_model in outcomes.items():
        if not by_model[weak] or not by_model[strong]:
            stats.one_model_only += 1
            continue
        texts.append(prompt)
        weak_ok.append(float(np.mean(by_model[weak])) >= RIGHT)
        strong_ok.append(float(np.mean(by_model[strong])) >= RIGHT)
    stats.used = len(texts)
    summary = stats.summary(records)
    if not texts:
        raise DataError(f"{source}: nothing to train on: {summary}")
    rows = TrainingSet(
        texts, [subjects.get(t, "") for t in texts], np.asarray(weak_ok, dtype=bool), np.asarray(strong_ok, dtype=bool)
    )
    return Dataset(rows, digest, source), summary


def convert(dataset: Dataset, out: Path, weak_model: str, strong_model: str) -> int:
    """A labelled dataset as routing records: per row, one route record per model with its correctness as
    feedback (1 right, 0 wrong) and the prompt's text. Returns the number of records written."""
    now = time.time()
    candidates = (weak_model, strong_model)
    rows = dataset.rows
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            for i, prompt in enumerate(rows.texts):
                for model, right in ((weak_model, rows.weak[i]), (strong_model, rows.strong[i])):
                    rid = f"dataset-{i}-{model}"
                    rec = route_record(
                        request_id=rid,
                        at=now,
                        router="dataset",
                        strategy="dataset",
                        arm="",
                        model_version=None,
                        candidates=candidates,
                        choice=model,
                        score=None,
                        reason="dataset",
                        fallback_reason=None,
                        decision_ms=0.0,
                        prompt=prompt,
                        policy="text",
                    )
                    if rows.subjects[i]:
                        rec["subject"] = rows.subjects[i]
                    fh.write(encode(rec) + encode(feedback_record(rid, 1.0 if right else 0.0, now)))
                    written += 2
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return written
