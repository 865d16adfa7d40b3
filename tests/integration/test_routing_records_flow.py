"""Routing records end to end: a real gateway writes one record per routed request, ships them to moto's S3 under
records/YYYY/MM/DD/, joins `POST /v1/feedback` to them, keeps everything while S3 is down and ships it when S3 is
back, and loses nothing across a drain or a crash."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.config_sync_process import start_moto_at
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.moto_s3 import MotoS3
from harness.processes import free_port, wait_until
from harness.sidecar_process import parse_metrics
from routeiq_shared.routing_records import RecordSet, prompt_digest

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-records-master"
BUCKET = "routeiq-records"
PREFIX = "fleet/"


def _config(upstream: FakeUpstream, **records: Any) -> dict[str, Any]:
    def group(name: str) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {"model": f"openai/fake-{name}", "api_base": upstream.base_url, "api_key": "sk-up"},
        }

    return {
        "model_list": [group("weak"), group("strong")],
        "general_settings": {"master_key": MASTER_KEY},
        "routeiq": {
            "routers": [{"name": "auto", "strategy": "random", "candidates": ["weak", "strong"]}],
            "records": {"enabled": True, "store": f"s3://{BUCKET}/{PREFIX}", "prompt": "text", **records},
        },
    }


CANDIDATES = {
    "weak": {"input_price": 0.5, "output_price": 1.5, "model": "weak"},
    "strong": {"input_price": 10.0, "output_price": 30.0, "model": "strong"},
}


def _ask(gw: GatewayHandle, text: str) -> str:
    raw = gw.openai_client(MASTER_KEY).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}]
    )
    raw.parse()
    request_id = raw.headers["x-routeiq-request-id"]
    assert request_id.startswith("rq_")
    return request_id


def _feedback(gw: GatewayHandle, body: Any, key: str = MASTER_KEY) -> httpx.Response:
    return httpx.post(gw.url("/v1/feedback"), json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _shipped(moto: MotoS3) -> tuple[list[str], RecordSet]:
    s3 = moto.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])]
    records = RecordSet()
    for key in keys:
        records.add_lines(key, s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return keys, records.join()


def _metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    text = httpx.get(gw.url("/metrics"), timeout=10).text
    return sum(v for n, lab, v in parse_metrics(text) if n == name and all(lab.get(k) == x for k, x in labels.items()))


def test_records_and_feedback_reach_s3_and_survive_an_outage(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, tmp_path: Path
):
    port = free_port()
    moto = start_moto_at(tmp_path / "moto", port)
    try:
        moto.client().create_bucket(Bucket=BUCKET)
        gw = start_gateway(_config(fresh_upstream, flush_seconds=0.3), env=moto.env(), candidates=CANDIDATES)
        ids = [_ask(gw, f"question {i}: what is {i} + {i}?") for i in range(5)]
        assert len(set(ids)) == 5

        # feedback: accepted for our ids, refused clearly otherwise
        ok = _feedback(gw, {"request_id": ids[0], "score": 1})
        assert ok.status_code == 200 and ok.json() == {
            "object": "feedback",
            "request_id": ids[0],
            "score": 1.0,
            "recorded": True,
        }
        assert _feedback(gw, {"request_id": ids[1], "score": 0.0}).status_code == 200
        out_of_range = _feedback(gw, {"request_id": ids[2], "score": 1.5})
        assert out_of_range.status_code == 400 and out_of_range.json()["error"]["param"] == "score"
        unknown = _feedback(gw, {"request_id": "rq_" + "0" * 41, "score": 0.5})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "request_not_found"
        assert _feedback(gw, {"request_id": ids[2], "score": 0.5}, key="sk-someone-else").status_code == 401
        assert _feedback(gw, {"request_id": ids[2]}).json()["error"]["param"] == "score"

        def all_five_with_two_feedbacks() -> bool:
            records = _shipped(moto)[1]
            return len(records.routes) == 5 and len(list(records.with_feedback())) == 2

        wait_until(all_five_with_two_feedbacks, timeout=15, detail=lambda: str(_shipped(moto)[0]))
        keys, records = _shipped(moto)
        today = time.strftime("%Y/%m/%d", time.gmtime())
        assert all(k.startswith(f"{PREFIX}records/{today}/") and k.endswith(".jsonl") for k in keys), keys
        assert records.bad == [] and records.orphans == 0
        first = records.routes[ids[0]]
        assert first["feedback"] == 1.0 and records.routes[ids[1]]["feedback"] == 0.0
        assert first["router"] == "auto" and first["strategy"] == "random" and first["candidates"] == ["weak", "strong"]
        assert first["choice"] in ("weak", "strong") and first["status"] == 200 and first["arm"] == ""
        assert first["prompt"] == "question 0: what is 0 + 0?"
        assert first["prompt_digest"] == prompt_digest("question 0: what is 0 + 0?")
        assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["latency_ms"] > 0
        price = CANDIDATES[first["choice"]]
        expected = (
            first["prompt_tokens"] * price["input_price"] + first["completion_tokens"] * price["output_price"]
        ) / 1e6
        assert first["cost_usd"] == pytest.approx(expected)

        # S3 goes down: records keep being written, stay in the spool, and the failures are counted
        moto.stop()
        during = [_ask(gw, f"during the outage {i}") for i in range(3)]
        assert _feedback(gw, {"request_id": during[0], "score": 0.25}).status_code == 200
        wait_until(lambda: _metric(gw, "routeiq_records_ship_failures_total") >= 1, timeout=15)
        spool = tmp_path / "run" / "records"
        wait_until(lambda: list(spool.glob("*.ready.jsonl")), timeout=10)
        assert _metric(gw, "routeiq_records_spool_bytes") > 0

        # S3 is back (moto restarts empty): what the spool kept is shipped, nothing lost
        moto = start_moto_at(tmp_path / "moto", port)
        moto.client().create_bucket(Bucket=BUCKET)
        wait_until(
            lambda: set(during) <= set(_shipped(moto)[1].routes),
            timeout=90,  # the shipper's backoff is capped at 60 s
            detail=lambda: str(_shipped(moto)[0]),
        )
        after = _shipped(moto)[1]
        assert after.routes[during[0]]["feedback"] == 0.25
        wait_until(lambda: not list(spool.glob("*.jsonl")), timeout=10)
    finally:
        moto.stop()


def test_records_survive_a_crash_and_are_shipped_at_drain(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, moto_s3: MotoS3, tmp_path: Path
):
    s3 = moto_s3.client()
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    # no shipping by age or count during the test: only a restart or the drain ships
    config = _config(fresh_upstream, flush_seconds=3600, batch_records=1000)
    config["routeiq"]["records"]["store"] = f"s3://{BUCKET}/{PREFIX}crash-{tmp_path.name}/"
    config["routeiq"]["records"]["prompt"] = "digest"
    prefix = f"{PREFIX}crash-{tmp_path.name}/"

    def shipped_ids() -> set[str]:
        records = RecordSet()
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
            records.add_lines(o["Key"], s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
        records.join()
        assert records.bad == []
        return set(records.routes)

    gw = start_gateway(config, env=moto_s3.env())
    before_crash = {_ask(gw, f"before the crash {i}") for i in range(3)}
    gw.send_signal(signal.SIGKILL)
    gw.wait_exit()
    assert shipped_ids() == set()

    port = free_port()
    gw = start_gateway(config, env=moto_s3.env(), port=port)  # same volume: the open segment is recovered
    wait_until(lambda: shipped_ids() == before_crash, timeout=15, detail=lambda: str(shipped_ids()))
    at_drain = {_ask(gw, f"before the drain {i}") for i in range(2)}
    gw.send_signal(signal.SIGTERM)
    assert gw.wait_exit() == 0
    assert shipped_ids() == before_crash | at_drain
    recovered = [r for r in gw.json_logs() if r.get("event") == "records_shipped"]
    assert recovered, "the drain logs what it shipped"
