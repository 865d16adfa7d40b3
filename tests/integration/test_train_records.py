"""routeiq-train on routing records: a labelled CSV converted to records trains the same router as the CSV; live
records shipped by a real gateway to moto's S3, with feedback, train a router; and what a records source can hold
that is wrong (renamed candidates, a torn line, digests only, one model only, garbage) is said, not hidden."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway
from harness.moto_s3 import MotoS3
from harness.processes import wait_until
from harness.train_data import FIELDS, make_rows, run_train, write_csv
from routeiq_shared.routing_records import encode, feedback_record, route_record

pytestmark = pytest.mark.integration


def _last_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_converted_dataset_trains_and_evaluates_as_the_csv_does(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "sample.csv", make_rows(300, seed=11))
    records = tmp_path / "records" / "sample.jsonl"
    done = run_train("convert", "--data", data, "--out", records, "--weak-model", "weak", "--strong-model", "strong")
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in records.read_bytes().splitlines()]
    assert len(lines) == 300 * 4  # a route and a feedback per model per row
    assert {r["type"] for r in lines} == {"route", "feedback"}

    from_records = tmp_path / "from-records.joblib"
    from_csv = tmp_path / "from-csv.joblib"
    trained = _last_json(run_train("train", "--router", "gain", "--records", records.parent, "--out", from_records))
    assert trained["held_out"]["rows"] == 60
    _last_json(run_train("train", "--router", "gain", "--data", data, "--out", from_csv))
    report = json.loads((tmp_path / "from-records.joblib.metrics.json").read_text())
    assert report["training_data"]["source"] == "records" and report["training_data"]["rows"] == 300
    assert report["columns"] == {"weak_model": None, "strong_model": None}  # taken from the records' candidates
    # the same rows and the same seeded split: the same held-out metrics as training on the CSV
    csv_report = json.loads((tmp_path / "from-csv.joblib.metrics.json").read_text())
    assert report["metrics"]["savings_at_95"] == pytest.approx(csv_report["metrics"]["savings_at_95"])
    assert report["metrics"]["apgr"] == pytest.approx(csv_report["metrics"]["apgr"])

    on_records = _last_json(run_train("evaluate", "--artifact", from_records, "--records", records))
    on_csv = _last_json(run_train("evaluate", "--artifact", from_records, "--data", data))
    assert on_records["rows"] == on_csv["rows"] == 300
    assert on_records["apgr"] == pytest.approx(on_csv["apgr"])


def _route(rid: str, prompt: str | None, choice: str, candidates: tuple[str, ...] = ("weak", "strong")) -> bytes:
    rec = route_record(
        request_id=rid,
        at=1_780_000_000.0,
        router="auto",
        strategy="random",
        arm="",
        model_version=None,
        candidates=candidates,
        choice=choice,
        score=None,
        reason="strategy",
        fallback_reason=None,
        decision_ms=0.01,
        prompt=prompt or "",
        policy="text" if prompt else "digest",
    )
    return encode(rec)


def test_records_that_cannot_be_used_are_counted_and_named(tmp_path: Path) -> None:
    rows = make_rows(200, seed=4)
    source = tmp_path / "spool"
    source.mkdir()
    good = b""
    for i, row in enumerate(rows):
        for model, column in (("weak", FIELDS[2]), ("strong", FIELDS[3])):
            rid = f"r{i}-{model}"
            good += _route(rid, row["prompt"], model) + encode(feedback_record(rid, float(row[column] == "True"), 1.0))
    odd = (
        _route("renamed", "a prompt", "gpt-3-retired")  # a candidate since removed from config
        + encode(feedback_record("renamed", 1.0, 1.0))
        + _route("digest", None, "weak")  # routeiq.records.prompt: digest
        + encode(feedback_record("digest", 1.0, 1.0))
        + _route("lonely", "asked once", "strong")  # only one model's outcome
        + encode(feedback_record("lonely", 1.0, 1.0))
    )
    (source / "seg-1-1-1.ready.jsonl").write_bytes(good + odd + _route("torn", "x", "weak")[:30])
    done = run_train("train", "--router", "logistic", "--records", source, "--out", tmp_path / "r.joblib")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "200 prompts with both models' outcome used" in err
    assert "1 records of model 'gpt-3-retired', neither --weak nor --strong (skipped)" in err
    assert "1 records without prompt text (routeiq.records.prompt: text)" in err
    assert "1 prompts answered by one model only (skipped)" in err
    assert f"1 unreadable lines skipped ({source / 'seg-1-1-1.ready.jsonl'} line " in err

    # names that are not in the records: nothing to train on, said with the counts
    done = run_train(
        "train", "--router", "logistic", "--records", source, "--out", tmp_path / "x.joblib", "--weak", "nano"
    )
    assert done.returncode == 2 and "nothing to train on" in done.stderr and "'weak', neither" in done.stderr

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("hello\nworld\n" + good.decode().split("\n")[0] + "\n")
    done = run_train("train", "--router", "logistic", "--records", garbage, "--out", tmp_path / "g.joblib")
    assert done.returncode == 2 and "2 of 3 lines are not routing records" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_train("train", "--router", "logistic", "--records", empty, "--out", tmp_path / "e.joblib")
    assert done.returncode == 2 and "no routing records" in done.stderr


def test_live_records_in_s3_with_feedback_train_a_router(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, moto_s3: MotoS3, s3_bucket: str, tmp_path: Path
) -> None:
    key = "sk-live-records"

    def group(name: str) -> dict[str, Any]:
        params = {"model": f"openai/fake-{name}", "api_base": fresh_upstream.base_url, "api_key": "sk-up"}
        return {"model_name": name, "litellm_params": params}

    store = f"s3://{s3_bucket}/fleet/"
    config = {
        "model_list": [group("weak"), group("strong")],
        "general_settings": {"master_key": key},
        "routeiq": {
            "routers": [{"name": "auto", "strategy": "random", "candidates": ["weak", "strong"]}],
            "records": {"enabled": True, "store": store, "prompt": "text", "flush_seconds": 0.5},
        },
    }
    gw = start_gateway(config, env=moto_s3.env())
    client = gw.openai_client(key)
    rows = make_rows(120, seed=9)
    label = {"weak": FIELDS[2], "strong": FIELDS[3]}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        for row in rows:  # the random router: ask until both models have answered this prompt
            seen: set[str] = set()
            while seen != {"weak", "strong"}:
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": row["prompt"]}]
                )
                model = raw.headers["x-routeiq-model"]
                seen.add(model)
                # the user's verdict: the labelled correctness of the model that answered
                verdict = {"request_id": raw.headers["x-routeiq-request-id"], "score": int(row[label[model]] == "True")}
                assert http.post(gw.url("/v1/feedback"), json=verdict).status_code == 200
    spool = tmp_path / "run" / "records"
    gw.stop()  # the drain ships what is left
    wait_until(lambda: not list(spool.glob("*.jsonl")), timeout=10)

    out = tmp_path / "live.joblib"
    done = run_train("train", "--router", "logistic", "--records", store, "--out", out, env=moto_s3.env())
    metrics = _last_json(done)
    assert "120 prompts with both models' outcome used" in done.stderr
    assert metrics["held_out"]["rows"] == 24
    report = json.loads(out.with_name(out.name + ".metrics.json").read_text())
    assert report["training_data"]["path"] == store and report["training_data"]["rows"] == 120
    assert report["training_data"]["digest"].startswith("sha256:")
    with (tmp_path / "check.csv").open("w", newline="") as fh:  # the CSV of the same rows judges it the same
        writer = csv.DictWriter(fh, fieldnames=list(FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    on_csv = _last_json(run_train("evaluate", "--artifact", out, "--data", tmp_path / "check.csv"))
    on_s3 = _last_json(run_train("evaluate", "--artifact", out, "--records", store, env=moto_s3.env()))
    assert on_csv["rows"] == on_s3["rows"] == 120 and on_csv["apgr"] == pytest.approx(on_s3["apgr"])
