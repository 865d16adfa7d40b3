"""Routing records: the record shapes, the reader's join with feedback, and what it does with bad lines."""

from __future__ import annotations

import time

import orjson
from routeiq_shared.routing_records import (
    RecordSet,
    encode,
    feedback_record,
    finish,
    prompt_digest,
    record_key,
    route_record,
)


def _route(request_id: str, policy: str = "text", prompt: str = "What is 2+2?") -> dict:
    return route_record(
        request_id=request_id,
        at=1_780_000_000.123456,
        router="auto",
        strategy="learned",
        arm="canary",
        model_version="v3",
        candidates=("weak", "strong"),
        choice="strong",
        score=0.73,
        reason="model",
        fallback_reason=None,
        decision_ms=0.41234567,
        prompt=prompt,
        policy=policy,  # type: ignore[arg-type]
    )


def test_the_prompt_policy_keeps_text_digest_or_nothing():
    text, digest, none = _route("a", "text"), _route("b", "digest"), _route("c", "none")
    assert text["prompt"] == "What is 2+2?" and text["prompt_digest"] == prompt_digest("What is 2+2?")
    assert "prompt" not in digest and digest["prompt_digest"].startswith("sha256:")
    assert "prompt" not in none and "prompt_digest" not in none
    assert text["arm"] == "canary" and text["candidates"] == ["weak", "strong"] and text["score"] == 0.73


def test_finish_adds_status_latency_tokens_and_cost_per_million_tokens():
    rec = finish(
        _route("a"),
        status=200,
        latency_ms=12.3456,
        usage={"prompt_tokens": 1000, "completion_tokens": 500},
        price=(2.5, 10.0),
    )
    assert rec["status"] == 200 and rec["latency_ms"] == 12.346
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (1000, 500)
    assert rec["cost_usd"] == (1000 * 2.5 + 500 * 10.0) / 1e6
    unknown = finish(_route("b"), status=502, latency_ms=1.0, usage=None, price=(1.0, 1.0))
    assert unknown["cost_usd"] is None and unknown["prompt_tokens"] is None


def test_record_key_is_dated_by_the_first_record_in_utc():
    at = time.mktime((2026, 12, 1, 23, 59, 59, 0, 0, 0)) - time.timezone  # 2026-12-01T23:59:59Z
    key = record_key(at, "pod-a-1f2e3d", 7)
    assert key == "records/2026/12/01/pod-a-1f2e3d-20261201T235959Z-000007.jsonl"


def test_the_reader_joins_feedback_from_another_file_and_the_latest_wins():
    records = RecordSet()
    records.add_lines("a.jsonl", encode(_route("rq1")) + encode(_route("rq2")))
    later = feedback_record("rq1", 1.0, 200.0)
    earlier = feedback_record("rq1", 0.0, 100.0)
    records.add_lines("b.jsonl", encode(later) + encode(earlier) + encode(feedback_record("gone", 0.5, 1.0)))
    records.join()
    joined = list(records.with_feedback())
    assert [r["request_id"] for r in joined] == ["rq1"] and joined[0]["feedback"] == 1.0
    assert records.orphans == 1 and records.bad == []


def test_a_truncated_line_is_skipped_and_named_with_its_file_and_line():
    whole = encode(_route("rq1"))
    torn = encode(_route("rq2"))[:40]  # a crash mid-write
    records = RecordSet()
    records.add_lines("s3://b/records/2026/12/01/x.jsonl", whole + torn)
    records.join()
    assert list(records.routes) == ["rq1"]
    assert len(records.bad) == 1
    assert (
        str(records.bad[0])
        == "s3://b/records/2026/12/01/x.jsonl line 2: not a JSON object (a truncated or corrupt line)"
    )


def test_records_of_the_wrong_shape_are_bad_lines_not_crashes():
    lines = [
        b"[1, 2]",
        orjson.dumps({"type": "other", "request_id": "x", "time": 1}),
        orjson.dumps({"type": "feedback", "request_id": "x", "time": 1, "score": 2}),
        orjson.dumps({"type": "feedback", "request_id": "x", "time": 1, "score": True}),
        orjson.dumps({"type": "route", "request_id": "x", "time": 1}),
        orjson.dumps({"type": "route", "time": 1, "choice": "a", "candidates": []}),
    ]
    records = RecordSet()
    records.add_lines("f", b"\n".join(lines) + b"\n")
    records.join()
    assert [b.line for b in records.bad] == [1, 2, 3, 4, 5, 6]
    assert records.routes == {} and records.orphans == 0
