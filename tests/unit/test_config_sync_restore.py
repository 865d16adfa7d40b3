"""The Syncer puts back the files it replaced when the gateway refuses what it wrote (DESIGN.md: a bad file never
replaces a good one), and does not write or signal the refused upload again until the store changes.

The gateway here is a fake that judges the files on the volume as the real one would report it: over the admin
reload endpoint (an aiohttp server on loopback), or a process named `routeiq-gateway` that takes SIGHUP and whose
verdict the test writes to `gateway.status.json` with the gateway's own helper.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from routeiq_config_sync.metrics import AgentMetrics
from routeiq_config_sync.settings import AgentSettings
from routeiq_config_sync.sync import Syncer
from routeiq_shared.config_schema import content_version
from routeiq_shared.gateway_files import GatewayIdentity, boot_id, process_start_time, write_status
from routeiq_shared.objectstore import open_store

CONFIG = """# {name}
model_list:
  - model_name: m
    litellm_params: {{model: openai/x, api_base: "http://127.0.0.1:1/v1", api_key: os.environ/{key}}}
"""
GOOD_KEY = "IN_GATEWAY"
MISSING_KEY = "ONLY_IN_AGENT"  # the fake gateway refuses a file naming it, as the real one does an unset variable
CANDIDATES = b'{"m": {"input_price": 0.1, "output_price": 0.2, "model": "m"}}'
REASON = f"model_list[0].litellm_params.api_key: environment variable {MISSING_KEY} is not set"


def config(name: str, key: str = GOOD_KEY) -> bytes:
    return CONFIG.format(name=name, key=key).encode()


def settings(tmp_path: Path, **env: str) -> AgentSettings:
    return AgentSettings.from_env(
        {
            "CONFIG_SOURCE": (tmp_path / "store").as_uri() + "/",
            "ROUTEIQ_CONFIG_DIR": str(tmp_path / "config"),
            "ROUTEIQ_RUN_DIR": str(tmp_path / "run"),
            "ROUTEIQ_MODELS_DIR": str(tmp_path / "models"),
            "CONFIG_SYNC_GATEWAY_WAIT": "0.5",
            **env,
        }
    )


class FakeGateway:
    """POST /admin/reload: reads the volume, refuses a config naming MISSING_KEY (and keeps what it serves)."""

    def __init__(self, s: AgentSettings) -> None:
        self.paths = s.paths
        self.serving: str | None = None
        self.reloads = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/admin/reload", self.reload)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def reload(self, request: web.Request) -> web.Response:
        self.reloads += 1
        raw = self.paths.config_file.read_bytes()
        cand = self.paths.candidates_file.read_bytes() if self.paths.candidates_file.exists() else b""
        if MISSING_KEY.encode() in raw:
            return web.json_response({"reloaded": False, "version": self.serving, "detail": REASON}, status=422)
        self.serving = content_version(raw, cand)
        return web.json_response({"reloaded": True, "version": self.serving, "detail": ""})


def restored_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "config_sync" and r.__dict__.get("result") == "restored"
    ]


def test_a_refused_write_is_put_back_and_not_written_or_signalled_again_until_a_new_upload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "store").mkdir()
    caplog.set_level(logging.INFO, logger="routeiq.config_sync")

    async def scenario() -> None:
        base = settings(tmp_path)
        gateway = FakeGateway(base)
        await gateway.start()
        s = settings(tmp_path, GATEWAY_ADMIN_URL=gateway.url)  # no pidfile: the admin endpoint is the way
        store = open_store(s.source)
        metrics = AgentMetrics()
        syncer = Syncer(s, store, metrics)
        paths = s.paths
        try:
            await store.put("config.yaml", config("one"))
            assert await syncer.sync_once() == "applied"
            v1 = content_version(config("one"), b"")
            assert gateway.serving == v1
            applied_etag = syncer.status.etag
            before = paths.config_file.read_bytes()
            assert not paths.candidates_file.exists()

            # The refused upload brings a candidates file the volume did not have.
            await store.put("llm_candidates.json", CANDIDATES)
            await store.put("config.yaml", config("two", MISSING_KEY))
            assert await syncer.sync_once() == "rejected_by_gateway"
            assert gateway.reloads == 2
            assert paths.config_file.read_bytes() == before  # byte for byte what was there
            assert not paths.candidates_file.exists()  # it did not exist before: removed
            doc = syncer.status.document(time.time())
            assert doc["status"] == "rejected_by_gateway"
            assert doc["version"] == v1 and doc["etag"] == applied_etag
            assert doc["gateway"] == {"state": "rejected_by_gateway", "loaded_version": v1, "reason": REASON}
            [restored] = restored_records(caplog)
            assert restored.__dict__["version"] == v1
            assert restored.__dict__["refused_version"] == content_version(config("two", MISSING_KEY), CANDIDATES)
            refusals = [r for r in caplog.records if r.__dict__.get("result") == "rejected_by_gateway"]
            assert len(refusals) == 1

            logged = len(caplog.records)
            for _ in range(3):  # the store still holds the refused objects
                assert await syncer.sync_once() == "unchanged"
                assert paths.config_file.read_bytes() == before and not paths.candidates_file.exists()
                doc = syncer.status.document(time.time())
                assert doc["status"] == "rejected_by_gateway" and doc["gateway"]["reason"] == REASON
            assert gateway.reloads == 2  # never asked to reload it again
            assert len(caplog.records) == logged  # one log line per change of state, not per poll
            gauge = metrics.registry.get_sample_value
            assert gauge("routeiq_config_sync_gateway_state", {"state": "rejected_by_gateway"}) == 1
            assert gauge("routeiq_config_sync_info", {"version": v1}) == 1

            await store.put("config.yaml", config("three"))  # a new upload is tried as usual
            assert await syncer.sync_once() == "applied"
            v3 = content_version(config("three"), CANDIDATES)
            assert gateway.serving == v3 and syncer.status.version == v3
            assert syncer.status.gateway.state == "ok"
        finally:
            await store.close()
            await gateway.stop()

    asyncio.run(scenario())


def test_a_refused_first_write_on_a_fresh_volume_is_left_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "store").mkdir()
    caplog.set_level(logging.INFO, logger="routeiq.config_sync")

    async def scenario() -> None:
        gateway = FakeGateway(settings(tmp_path))
        await gateway.start()
        s = settings(tmp_path, GATEWAY_ADMIN_URL=gateway.url)
        store = open_store(s.source)
        syncer = Syncer(s, store, AgentMetrics())
        try:
            await store.put("config.yaml", config("one", MISSING_KEY))
            assert await syncer.sync_once() == "rejected_by_gateway"
            assert s.paths.config_file.read_bytes() == config("one", MISSING_KEY)  # nothing better to serve
            assert syncer.status.version == content_version(config("one", MISSING_KEY), b"")
            assert not restored_records(caplog)
            assert any(r.__dict__.get("result") == "nothing_to_restore" for r in caplog.records)
            assert await syncer.sync_once() == "unchanged"
            assert gateway.reloads == 1
        finally:
            await store.close()
            await gateway.stop()

    asyncio.run(scenario())


FAKE_GATEWAY_PROCESS = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *_: None)  # a gateway that never writes a verdict
open(sys.argv[1], "w").close()
time.sleep(60)
"""


@pytest.fixture
def signalled_gateway(tmp_path: Path) -> Iterator[Path]:
    """A live process named routeiq-gateway with its pidfile and identity in tmp_path/run: the agent signals it."""
    script = tmp_path / "bin" / "routeiq-gateway"
    script.parent.mkdir()
    script.write_text(FAKE_GATEWAY_PROCESS)
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, str(script), str(ready)])
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the fake gateway did not start"
            time.sleep(0.01)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        GatewayIdentity(process.pid, process_start_time(process.pid) or 0, boot_id()).write(run_dir)
        (run_dir / "gateway.pid").write_text(f"{process.pid}\n")
        yield run_dir
    finally:
        process.kill()
        process.wait()


def test_a_verdict_still_pending_at_the_timeout_restores_nothing_until_the_refusal_is_read(
    tmp_path: Path, signalled_gateway: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "store").mkdir()
    caplog.set_level(logging.INFO, logger="routeiq.config_sync")
    s = settings(tmp_path)
    paths = s.paths
    paths.config_dir.mkdir()
    paths.config_file.write_bytes(config("one"))  # what the gateway started with
    v1 = content_version(config("one"), b"")
    write_status(signalled_gateway, loaded_version=v1, trigger="start", result="success", attempted_version=v1)

    async def scenario() -> None:
        store = open_store(s.source)
        metrics = AgentMetrics()
        syncer = Syncer(s, store, metrics)
        try:
            await store.put("config.yaml", config("two", MISSING_KEY))
            v2 = content_version(config("two", MISSING_KEY), b"")
            assert await syncer.sync_once() == "applied"
            assert syncer.status.gateway.state == "pending"
            assert paths.config_file.read_bytes() == config("two", MISSING_KEY)  # no verdict: nothing undone
            assert not restored_records(caplog)

            # The gateway's refusal arrives after the wait; the next poll reads it and puts v1 back.
            write_status(
                signalled_gateway,
                loaded_version=v1,
                trigger="SIGHUP",
                result="failure",
                attempted_version=v2,
                error=REASON,
            )
            assert await syncer.sync_once() == "rejected_by_gateway"
            assert paths.config_file.read_bytes() == config("one")
            assert syncer.status.version == v1
            assert syncer.status.gateway.state == "rejected_by_gateway" and syncer.status.gateway.reason == REASON
            assert len(restored_records(caplog)) == 1
            signals = metrics.registry.get_sample_value(
                "routeiq_config_sync_reload_signals_total", {"method": "signal", "result": "ok"}
            )
            assert await syncer.sync_once() == "unchanged"
            assert paths.config_file.read_bytes() == config("one")
            assert (
                metrics.registry.get_sample_value(
                    "routeiq_config_sync_reload_signals_total", {"method": "signal", "result": "ok"}
                )
                == signals
                == 1
            )
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_restarted_agent_does_not_write_again_what_the_gateway_refused_and_it_put_back(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    s = settings(tmp_path)
    paths = s.paths
    paths.config_dir.mkdir()
    paths.run_dir.mkdir()
    paths.config_file.write_bytes(config("one"))  # put back by the agent before it restarted
    v1 = content_version(config("one"), b"")
    v2 = content_version(config("two", MISSING_KEY), b"")
    write_status(
        paths.run_dir, loaded_version=v1, trigger="SIGHUP", result="failure", attempted_version=v2, error=REASON
    )

    async def scenario() -> None:
        store = open_store(s.source)
        metrics = AgentMetrics()
        syncer = Syncer(s, store, metrics)
        try:
            await store.put("config.yaml", config("two", MISSING_KEY))
            for _ in range(2):
                assert await syncer.sync_once() == "unchanged"
                assert paths.config_file.read_bytes() == config("one")
                doc = syncer.status.document(time.time())
                assert doc["status"] == "rejected_by_gateway" and doc["version"] == v1
                assert doc["gateway"] == {"state": "rejected_by_gateway", "loaded_version": v1, "reason": REASON}
            signals = metrics.registry.get_sample_value(
                "routeiq_config_sync_reload_signals_total", {"method": "signal", "result": "failed"}
            )
            assert signals is None  # nobody was asked to reload it
            await store.put("config.yaml", config("three"))
            assert await syncer.sync_once() == "applied"
            assert paths.config_file.read_bytes() == config("three")
        finally:
            await store.close()

    asyncio.run(scenario())
