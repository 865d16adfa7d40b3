"""POST /v1/feedback's answers, in process: expired and unknown ids, records off, a spool that cannot keep it,
bad bodies. (The accepted path, over HTTP with the openai SDK's ids, is in test_routing_records_flow.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.records.feedback import FeedbackEndpoint
from routeiq_gateway.records.recorder import Recorder
from routeiq_gateway.records.spool import Spool
from routeiq_gateway.state import GatewayState, StateRef, build_state
from routeiq_shared.config_schema import load_config

KEY = b"sk-feedback-master"


def _state(enabled: bool = True, window: int = 3600) -> GatewayState:
    config = {
        "model_list": [{"model_name": "weak", "litellm_params": {"model": "openai/x", "api_key": "k"}}],
        "general_settings": {"master_key": KEY.decode()},
        "routeiq": {"records": {"enabled": enabled, "feedback_window_seconds": window}},
    }
    return build_state(load_config(yaml.safe_dump(config).encode(), None, {}), created=0)


def _call(endpoint: FeedbackEndpoint, body: Any) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"authorization", b"Bearer " + KEY)]}
    try:
        asyncio.run(endpoint(scope, receive, send))
    except GatewayError as exc:  # the app turns these into the error response
        return exc.status, orjson.loads(exc.body())
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def _endpoint(state: GatewayState, tmp_path: Path, max_bytes: int = 10 * 1024 * 1024) -> FeedbackEndpoint:
    spool = Spool(tmp_path / "spool", max_bytes)
    spool.recover()
    metrics = GatewayMetrics()
    return FeedbackEndpoint(StateRef(state), Recorder(spool, metrics), metrics)


def test_feedback_after_the_window_is_refused_as_expired(tmp_path: Path):
    state = _state(window=3600)
    old = state.request_ids.issue(KEY, time.time() - 3601)
    status, body = _call(_endpoint(state, tmp_path), {"request_id": old, "score": 1})
    assert status == 404 and body["error"]["code"] == "request_expired" and body["error"]["param"] == "request_id"
    assert "3600 s" in body["error"]["message"]
    fresh = state.request_ids.issue(KEY, time.time() - 3000)
    assert _call(_endpoint(state, tmp_path), {"request_id": fresh, "score": 1})[0] == 200


def test_an_id_from_another_caller_is_unknown(tmp_path: Path):
    state = _state()
    theirs = state.request_ids.issue(b"sk-another-team", time.time())
    status, body = _call(_endpoint(state, tmp_path), {"request_id": theirs, "score": 0})
    assert status == 404 and body["error"]["code"] == "request_not_found"


def test_feedback_with_records_off_says_so(tmp_path: Path):
    state = _state(enabled=False)
    rid = state.request_ids.issue(KEY, time.time())
    status, body = _call(_endpoint(state, tmp_path), {"request_id": rid, "score": 1})
    assert status == 404 and body["error"]["code"] == "feedback_disabled"
    assert "routeiq.records.enabled" in body["error"]["message"]


def test_a_spool_that_cannot_keep_it_answers_503_to_retry(tmp_path: Path):
    state = _state()  # spool_max_bytes: its default, far above this spool's own bound below
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "seg-1-1-1.ready.jsonl").write_bytes(b"x" * state.records.spool_max_bytes)
    endpoint = _endpoint(state, tmp_path)  # recover() counts the full segment
    rid = state.request_ids.issue(KEY, time.time())
    status, body = _call(endpoint, {"request_id": rid, "score": 1})
    assert status == 503 and body["error"]["code"] == "feedback_not_recorded"


def test_bad_bodies_get_400_with_the_parameter(tmp_path: Path):
    state = _state()
    endpoint = _endpoint(state, tmp_path)
    rid = state.request_ids.issue(KEY, time.time())
    cases = [
        ({"score": 1}, "request_id"),
        ({"request_id": 7, "score": 1}, "request_id"),
        ({"request_id": rid, "score": "good"}, "score"),
        ({"request_id": rid, "score": True}, "score"),
        ({"request_id": rid, "score": -0.1}, "score"),
        ({"request_id": rid, "score": 1, "comment": "x"}, "comment"),
    ]
    for body, param in cases:
        status, answer = _call(endpoint, body)
        assert status == 400 and answer["error"]["param"] == param, (body, answer)
    assert _call(endpoint, b"[1]")[0] == 400
    assert _call(endpoint, b"{not json")[0] == 400
