"""Routing records: the contract between the gateway that writes them and `routeiq-train` that learns from them.

One JSON object per line (JSONL). Two kinds share a file:
- a route record, one per routed request: which router and arm chose which candidate, with what score, and how the
  request went (status, latency, tokens, cost), with the prompt's text, its digest only, or nothing, by policy;
- a feedback record, one per accepted `POST /v1/feedback`: a request id and a score in [0, 1].
They are joined on `request_id` by the reader (the feedback may land on another pod, in another file, later).

Objects are shipped to `<store prefix>/records/YYYY/MM/DD/<writer>-<first time>-<sequence>.jsonl`, dated by the
segment's first record (UTC), so a prefix per day can be read, replayed or expired by a lifecycle rule.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

RECORD_VERSION = 1
PromptPolicy = Literal["digest", "text", "none"]
RECORDS_PREFIX = "records/"


def prompt_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def record_key(first_time: float, writer: str, sequence: int) -> str:
    """The object name of a shipped segment, under the store location's prefix."""
    day = time.strftime("%Y/%m/%d", time.gmtime(first_time))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(first_time))
    return f"{RECORDS_PREFIX}{day}/{writer}-{stamp}-{sequence:06d}.jsonl"


def route_record(
    *,
    request_id: str,
    at: float,
    router: str,
    strategy: str,
    arm: str,
    model_version: str | None,
    candidates: Iterable[str],
    choice: str,
    score: float | None,
    reason: str,
    fallback_reason: str | None,
    decision_ms: float,
    prompt: str,
    policy: PromptPolicy,
) -> dict[str, Any]:
    """A route record at decision time; `finish` adds how the request went."""
    rec: dict[str, Any] = {
        "v": RECORD_VERSION,
        "type": "route",
        "request_id": request_id,
        "time": round(at, 3),
        "router": router,
        "strategy": strategy,
        "arm": arm,
        "model_version": model_version,
        "candidates": list(candidates),
        "choice": choice,
        "score": score,
        "reason": reason,
        "fallback_reason": fallback_reason,
        "decision_ms": round(decision_ms, 4),
    }
    if policy == "text":
        rec["prompt"] = prompt
        rec["prompt_digest"] = prompt_digest(prompt)
    elif policy == "digest":
        rec["prompt_digest"] = prompt_digest(prompt)
    return rec


def finish(
    rec: dict[str, Any],
    *,
    status: int,
    latency_ms: float,
    usage: dict[str, Any] | None,
    price: tuple[float, float] | None,
) -> dict[str, Any]:
    """Status, latency, tokens and cost (llm_candidates.json prices are per million tokens) of a route record."""
    prompt_tokens = _tokens(usage, "prompt_tokens")
    completion_tokens = _tokens(usage, "completion_tokens")
    cost = None
    if price is not None and prompt_tokens is not None and completion_tokens is not None:
        cost = round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 10)
    rec.update(
        status=status,
        latency_ms=round(latency_ms, 3),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost,
    )
    return rec


def feedback_record(request_id: str, score: float, at: float) -> dict[str, Any]:
    return {"v": RECORD_VERSION, "type": "feedback", "request_id": request_id, "score": score, "time": round(at, 3)}


def _tokens(usage: dict[str, Any] | None, name: str) -> int | None:
    if not usage:
        return None
    value = usage.get(name)
    return value if isinstance(value, int) and value >= 0 else None


def encode(rec: dict[str, Any]) -> bytes:
    return orjson.dumps(rec) + b"\n"


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadLine:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source} line {self.line}: {self.reason}"


@dataclass(slots=True)
class RecordSet:
    """Route records joined with their feedback. `bad` lists lines that could not be read (a truncated last line
    of a segment cut by a crash, say): the reader skips them and says where they were."""

    routes: dict[str, dict[str, Any]] = field(default_factory=dict)  # request_id → route record (+ "feedback")
    orphans: int = 0  # feedback for a request id with no route record in the set
    bad: list[BadLine] = field(default_factory=list)
    lines: int = 0
    _pending: list[dict[str, Any]] = field(default_factory=list)  # feedback read, not joined yet

    def add_lines(self, source: str, data: bytes) -> None:
        feedback: list[dict[str, Any]] = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            self.lines += 1
            rec = _parse_line(line)
            if isinstance(rec, str):
                self.bad.append(BadLine(source, number, rec))
            elif rec["type"] == "route":
                self.routes[rec["request_id"]] = rec
            else:
                feedback.append(rec)
        self._pending.extend(feedback)

    def join(self) -> RecordSet:
        """Attach each feedback to its route record (the latest feedback for a request wins)."""
        for fb in sorted(self._pending, key=lambda r: r["time"]):
            route = self.routes.get(fb["request_id"])
            if route is None:
                self.orphans += 1
            else:
                route["feedback"] = fb["score"]
        self._pending.clear()
        return self

    def with_feedback(self) -> Iterator[dict[str, Any]]:
        return (r for r in self.routes.values() if "feedback" in r)


def _parse_line(line: bytes) -> dict[str, Any] | str:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "not a JSON object (a truncated or corrupt line)"
    if not isinstance(rec, dict):
        return "not a JSON object"
    kind = rec.get("type")
    if kind not in ("route", "feedback"):
        return f"unknown record type {kind!r}"
    if not isinstance(rec.get("request_id"), str) or not isinstance(rec.get("time"), (int, float)):
        return "a record without request_id or time"
    if kind == "feedback":
        score = rec.get("score")
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0.0 <= score <= 1.0:
            return "a feedback record whose score is not a number in [0, 1]"
    elif not isinstance(rec.get("choice"), str) or not isinstance(rec.get("candidates"), list):
        return "a route record without choice or candidates"
    return rec
