"""Virtual keys end to end: a real PostgreSQL, a real redis-server, real gateway processes.

Teams and keys made on the admin port (:4001 role-checked), used on the API, revoked/deleted, refused — across
two replicas too; spend written in batches and at drain; PostgreSQL stopped and started under known keys."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.postgres_server import PostgresServer, upgraded
from harness.processes import wait_until
from harness.redis_server import RedisServer

MASTER = "sk-master"
ADMIN = "sk-admin-break-glass"
MESSAGES = [{"role": "user", "content": "hi"}]


def config(upstream: FakeUpstream, **keys: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": "openai/fake", "api_base": upstream.base_url, "api_key": "sk-up"},
            }
            for name in ("fast", "smart")
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {"keys": {"refresh_seconds": 30, **keys}},
    }


def start(
    start_gateway: StartGateway,
    upstream: FakeUpstream,
    db_url: str,
    root: Path,
    keys: dict[str, Any] | None = None,
    **env: str,
) -> GatewayHandle:
    return start_gateway(
        config(upstream, **(keys or {})), env={"DATABASE_URL": db_url, "ADMIN_API_KEYS": ADMIN, **env}, root=root
    )


def admin(gw: GatewayHandle, method: str, path: str, body: Any = None, key: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    return httpx.request(method, gw.admin(path), headers=headers, content=content, timeout=10, trust_env=False)


def chat(gw: GatewayHandle, key: str, model: str = "fast") -> httpx.Response:
    return httpx.post(
        gw.url("/v1/chat/completions"),
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES},
        timeout=10,
        trust_env=False,
    )


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


def metric(gw: GatewayHandle, sample: str) -> float | None:
    text = httpx.get(gw.url("/metrics"), timeout=5, trust_env=False).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_team_and_key_lifecycle(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path)
    team = admin(gw, "POST", "/team/new", {"team_id": "search", "models": ["fast"], "rpm_limit": 100})
    assert team.status_code == 200, team.text
    assert team.json()["team_id"] == "search" and team.json()["rpm_limit"] == 100
    made = admin(gw, "POST", "/key/generate", {"team_id": "search", "key_alias": "ci", "tpm_limit": 5000})
    assert made.status_code == 200, made.text
    secret = made.json()["key"]
    assert secret.startswith("sk-riq-")
    with psycopg.connect(fresh_database) as conn:  # the secret is never stored, only its hash
        stored = conn.execute("SELECT key_hash, key_prefix FROM keys").fetchall()
    assert len(stored) == 1 and secret.encode() not in bytes(stored[0][0]) and stored[0][1] == secret[:10]
    info = admin(gw, "GET", f"/key/info?key={secret}").json()
    assert info["info"]["team_id"] == "search" and info["info"]["tpm_limit"] == 5000 and "key" not in info["info"]

    assert chat(gw, secret).status_code == 200  # a brand-new key: looked up once, then cached
    denied = chat(gw, secret, "smart")  # the team's models do not include it
    assert denied.status_code == 403 and error_code(denied) == "team_model_access_denied"
    assert chat(gw, MASTER, "smart").status_code == 200  # the master key still works
    assert chat(gw, "sk-riq-made-up").status_code == 401

    restricted = admin(gw, "POST", "/v1/admin/keys", {"models": ["smart"]}).json()["key"]
    assert error_code(chat(gw, restricted, "fast")) == "key_model_access_denied"

    def listed(key: str) -> list[str]:
        resp = httpx.get(gw.url("/v1/models"), headers={"Authorization": f"Bearer {key}"}, timeout=5, trust_env=False)
        return sorted(m["id"] for m in resp.json()["data"])

    assert listed(MASTER) == ["fast", "smart"]
    assert listed(secret) == ["fast"] and listed(restricted) == ["smart"]  # what each may use, as LiteLLM lists
    one = httpx.get(gw.url("/v1/models/smart"), headers={"Authorization": f"Bearer {secret}"}, trust_env=False)
    assert one.status_code == 404

    revoked = admin(gw, "POST", "/key/update", {"key": secret, "blocked": True})
    assert revoked.status_code == 200 and revoked.json()["blocked"] is True
    refused = chat(gw, secret)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]

    deleted = admin(gw, "POST", "/key/delete", {"keys": [secret]})
    assert deleted.json() == {"deleted_keys": [secret]}
    assert chat(gw, secret).status_code == 401
    team_info = admin(gw, "GET", "/team/info?team_id=search").json()
    assert team_info["team_info"]["team_id"] == "search" and team_info["keys"] == []


def test_admin_roles_and_bad_input(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path)
    assert admin(gw, "GET", "/v1/admin/keys", key=None).status_code == 401
    assert admin(gw, "GET", "/v1/admin/keys", key="sk-wrong").status_code == 401
    assert admin(gw, "GET", "/v1/admin/keys", key=MASTER).status_code == 401  # the API's master key is no admin
    assert httpx.get(gw.url("/v1/admin/keys"), timeout=5, trust_env=False).status_code == 404  # not on :4000

    def refused(path: str, body: Any, param: str, method: str = "POST") -> None:
        resp = admin(gw, method, path, body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["param"] == param, resp.text

    refused("/key/generate", {"team_id": "no-such-team"}, "team_id")
    refused("/v1/admin/keys", {"rpm_limit": -1}, "rpm_limit")
    refused("/v1/admin/keys", {"tpm": "lots"}, "tpm")
    refused("/v1/admin/keys", {"max_parallel_requests": 1.5}, "max_parallel_requests")
    refused("/v1/admin/teams", {"max_budget": -5}, "max_budget")
    refused("/v1/admin/teams", {"budget_reset_at": "2001-01-01T00:00:00Z"}, "budget_reset_at")
    refused("/v1/admin/keys", {"expires_at": "2001-01-01T00:00:00Z"}, "expires_at")
    refused("/v1/admin/keys", {"budget_duration": "forever"}, "budget_duration")
    not_json = admin(gw, "POST", "/v1/admin/keys", b"{not json")
    assert not_json.status_code == 400 and error_code(not_json) == "invalid_json"
    with psycopg.connect(fresh_database) as conn:  # nothing was written by any of them
        assert conn.execute("SELECT count(*) FROM keys").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM teams").fetchone() == (0,)

    team = admin(gw, "POST", "/v1/admin/teams", {"id": "t1"})
    assert team.status_code == 201
    assert admin(gw, "POST", "/v1/admin/teams", {"id": "t1"}).status_code == 409
    key = admin(gw, "POST", "/v1/admin/keys", {"team_id": "t1"}).json()
    assert admin(gw, "DELETE", "/v1/admin/teams/t1").status_code == 409  # it still has keys
    assert admin(gw, "DELETE", f"/v1/admin/keys/{key['key_id']}").status_code == 200
    assert admin(gw, "DELETE", "/v1/admin/teams/t1").status_code == 200
    assert admin(gw, "GET", "/v1/admin/teams/t1").status_code == 404


def test_key_deleted_while_its_request_is_in_flight(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path)
    made = admin(gw, "POST", "/v1/admin/keys", {}).json()
    assert chat(gw, made["key"]).status_code == 200
    fresh_upstream.add_rule(model="fake", delay_ms=1500, times=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(chat, gw, made["key"])
        wait_until(lambda: len(fresh_upstream.requests("/v1/chat/completions")) >= 2, timeout=10)
        assert admin(gw, "DELETE", f"/v1/admin/keys/{made['key_id']}").status_code == 200
        assert chat(gw, made["key"]).status_code == 401  # the next request is refused
        assert slow.result(timeout=15).status_code == 200  # the one in flight finished


def test_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    fresh_redis: RedisServer,
    tmp_path: Path,
) -> None:
    url = upgraded(fresh_database)
    a = start(start_gateway, fresh_upstream, url, tmp_path / "a", REDIS_URL=fresh_redis.url)
    b = start(start_gateway, fresh_upstream, url, tmp_path / "b", REDIS_URL=fresh_redis.url)
    made = admin(a, "POST", "/v1/admin/keys", {}).json()
    assert chat(b, made["key"]).status_code == 200  # created on a, found by b
    t0 = time.monotonic()
    assert admin(a, "PATCH", f"/v1/admin/keys/{made['key_id']}", {"revoked": True}).status_code == 200
    wait_until(lambda: chat(b, made["key"]).status_code == 401, timeout=1.0)
    assert time.monotonic() - t0 < 1.0


def test_spend_is_batched_and_flushed_at_drain(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path)
    admin(gw, "POST", "/v1/admin/teams", {"id": "t"})
    key = admin(gw, "POST", "/v1/admin/keys", {"team_id": "t"}).json()["key"]
    for _ in range(3):
        assert chat(gw, key).status_code == 200
    gw.send_signal(signal.SIGTERM)  # the flush interval (10 s) has not passed: only the drain writes it
    assert gw.wait_exit(timeout=20) == 0
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT team_id, model, requests, prompt_tokens FROM spend").fetchall()
    assert len(rows) == 1 and rows[0][:3] == ("t", "fast", 3) and rows[0][3] > 0


class Load:
    """`rate` requests a second with `key`, each its own task, on a loop in a thread, until stopped: every answer's
    status kept."""

    def __init__(self, gw: GatewayHandle, key: str, rate: float = 200.0) -> None:
        self.gw, self.key, self.rate = gw, key, rate
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            tasks: set[asyncio.Task[None]] = set()
            loop = asyncio.get_running_loop()
            start, sent = loop.time(), 0
            while not self._stop.is_set():
                while sent < (loop.time() - start) * self.rate:
                    task = asyncio.create_task(self._one(client))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += 1
                await asyncio.sleep(0.002)
            if tasks:
                await asyncio.wait(tasks)

    async def _one(self, client: httpx.AsyncClient) -> None:
        try:
            resp = await client.post(
                self.gw.url("/v1/chat/completions"),
                headers={"Authorization": f"Bearer {self.key}"},
                json={"model": "fast", "messages": MESSAGES},
            )
            self.statuses.append(resp.status_code)
        except httpx.HTTPError:
            self.statuses.append(0)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_postgres_down_known_keys_keep_working(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    postgres_server: PostgresServer,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    # refreshed every second: the test sees the outage at the next refresh, not 30 s later
    gw = start(start_gateway, fresh_upstream, upgraded(fresh_database), tmp_path, {"refresh_seconds": 1})
    known = admin(gw, "POST", "/v1/admin/keys", {}).json()["key"]
    assert chat(gw, known).status_code == 200
    degraded = 'gateway_degraded_mode{service="postgres"}'
    assert metric(gw, degraded) in (None, 0.0)
    logs_before = len(gw.json_logs())
    with Load(gw, known, rate=200) as load:
        wait_until(lambda: len(load.statuses) >= 100, timeout=10)  # load is flowing
        postgres_server.pause()
        try:
            wait_until(lambda: metric(gw, degraded) == 1.0, timeout=15)
            served_while_down = len(load.statuses)
            assert chat(gw, "sk-riq-never-seen").status_code == 401  # never seen: refused
            wait_until(lambda: len(load.statuses) >= served_while_down + 200, timeout=15)  # a second or more down
        finally:
            postgres_server.resume()
        wait_until(lambda: metric(gw, degraded) == 0.0, timeout=30)
        after = len(load.statuses)
        wait_until(lambda: len(load.statuses) >= after + 100, timeout=10)
    assert len(load.statuses) >= 400
    assert set(load.statuses) == {200}, {s: load.statuses.count(s) for s in set(load.statuses)}
    flips = [r["degraded"] for r in gw.json_logs()[logs_before:] if r.get("event") == "degraded_mode"]
    assert flips == [True, False]  # one line each way
    fresh = admin(gw, "POST", "/v1/admin/keys", {}).json()["key"]
    assert chat(gw, fresh).status_code == 200  # recovered without a restart


def test_without_database_url_master_key_only(start_gateway: StartGateway, fresh_upstream: FakeUpstream) -> None:
    gw = start_gateway(config(fresh_upstream), env={"ADMIN_API_KEYS": ADMIN})
    assert gw.wait_for_log(lambda r: r.get("event") == "virtual_keys")["enabled"] is False
    assert chat(gw, MASTER).status_code == 200
    off = admin(gw, "GET", "/v1/admin/keys")
    assert off.status_code == 503 and error_code(off) == "virtual_keys_off"


def test_refuses_to_start_on_an_old_schema(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str
) -> None:
    gw = start_gateway(config(fresh_upstream), env={"DATABASE_URL": fresh_database}, wait_ready=False)
    assert gw.wait_exit(timeout=30) == 2
    failure = gw.wait_for_log(lambda r: r.get("event") == "startup_failed")
    assert "routeiq-gateway db upgrade" in failure["reason"]


def test_reads_go_to_the_replica_and_new_keys_to_the_primary(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # Two databases stand for a primary and a replica that has not caught up: the admin's listings read the
    # replica; a key made a moment ago is still found, because its lookup goes to the primary.
    primary = upgraded(postgres_server.create_database())
    replica = upgraded(postgres_server.create_database())
    gw = start(start_gateway, fresh_upstream, primary, tmp_path, DATABASE_READ_URL=replica)
    made = admin(gw, "POST", "/v1/admin/keys", {"key_alias": "fresh"}).json()
    assert admin(gw, "GET", "/v1/admin/keys").json()["data"] == []  # the replica's view
    assert chat(gw, made["key"]).status_code == 200  # the primary's


def test_spend_report_per_team_and_model(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    url = upgraded(fresh_database)
    candidates = {
        "fast": {"input_price": 1.0, "output_price": 2.0, "model": "fast"},  # per million tokens
        "smart": {"input_price": 10.0, "output_price": 30.0, "model": "smart"},
    }
    gw = start_gateway(
        config(fresh_upstream, spend_flush_seconds=0.2),
        env={"DATABASE_URL": url, "ADMIN_API_KEYS": ADMIN},
        candidates=candidates,
        root=tmp_path,
    )
    admin(gw, "POST", "/v1/admin/teams", {"id": "search"})
    key = admin(gw, "POST", "/v1/admin/keys", {"team_id": "search"}).json()["key"]
    expected = {"fast": [0, 0, 0, 0.0], "smart": [0, 0, 0, 0.0]}
    for model in ("fast", "fast", "smart"):
        reply = chat(gw, key, model)
        assert reply.status_code == 200
        usage = reply.json()["usage"]
        price = candidates[model]
        row = expected[model]
        row[0] += 1
        row[1] += usage["prompt_tokens"]
        row[2] += usage["completion_tokens"]
        row[3] += (
            usage["prompt_tokens"] * price["input_price"] + usage["completion_tokens"] * price["output_price"]
        ) / 1e6
    assert all(row[3] > 0 for row in expected.values())  # the upstream reports usage: a real cost to add up
    assert chat(gw, MASTER).status_code == 200  # the master key has no spend row

    def report() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = admin(gw, "GET", "/v1/admin/spend?team_id=search").json()["data"]
        return rows

    wait_until(lambda: sum(r["requests"] for r in report()) == 3, timeout=10)
    got = {r["model"]: [r["requests"], r["prompt_tokens"], r["completion_tokens"], r["cost"]] for r in report()}
    assert got.keys() == expected.keys()
    for model, row in expected.items():
        assert got[model][:3] == row[:3]
        assert got[model][3] == pytest.approx(row[3])
    team = admin(gw, "GET", "/v1/admin/teams/search").json()
    assert team["spend"] == pytest.approx(sum(r[3] for r in expected.values()))
    assert admin(gw, "GET", "/v1/admin/spend?start=yesterday").status_code == 400
