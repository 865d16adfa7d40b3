"""The Syncer on a file:// store and a real directory (issue 7 items 2, 3, 5): a failed write is retried until it
lands, validation runs off the event loop, and the gateway's own status is what the agent reports."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from routeiq_config_sync.metrics import AgentMetrics
from routeiq_config_sync.settings import AgentSettings
from routeiq_config_sync.sync import Syncer, SyncFailed
from routeiq_shared.config_schema import content_version
from routeiq_shared.objectstore import open_store
from routeiq_shared.volume import VolumePaths

CONFIG = """
model_list:
  - model_name: {name}
    litellm_params: {{model: openai/x, api_base: "http://127.0.0.1:1/v1", api_key: os.environ/ONLY_IN_GATEWAY}}
"""


def config(name: str) -> bytes:
    return CONFIG.format(name=name).encode()


def settings(tmp_path: Path, **overrides: object) -> AgentSettings:
    env = {
        "CONFIG_SOURCE": (tmp_path / "store").as_uri() + "/",
        "ROUTEIQ_CONFIG_DIR": str(tmp_path / "config"),
        "ROUTEIQ_RUN_DIR": str(tmp_path / "run"),
        "ROUTEIQ_MODELS_DIR": str(tmp_path / "models"),
        "CONFIG_SYNC_GATEWAY_WAIT": "0.5",
    }
    base = AgentSettings.from_env(env)
    return AgentSettings(**{**{f: getattr(base, f) for f in base.__slots__}, **overrides})  # type: ignore[arg-type]


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """The directory refuses new files even to root (chattr +i), like a read-only or full volume."""
    if not _chattr("+i", path):
        pytest.skip("chattr +i is not supported here")
    try:
        yield
    finally:
        _chattr("-i", path)


def test_a_failed_write_is_applied_once_the_volume_is_writable_again(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    s = settings(tmp_path)
    paths: VolumePaths = s.paths

    async def scenario() -> None:
        store = open_store(s.source)
        syncer = Syncer(s, store, AgentMetrics())
        await store.put("config.yaml", config("one"))
        assert await syncer.sync_once() == "applied"
        etag_one = syncer.status.etag
        await store.put("config.yaml", config("two"))
        with immutable(paths.config_dir):
            with pytest.raises(SyncFailed) as failed:
                await syncer.sync_once()
            assert failed.value.reason == "write_error"
            assert syncer.status.etag == etag_one  # applied is what was written, not what was fetched
            with pytest.raises(SyncFailed):
                await syncer.sync_once()  # still failing, still saying so
        assert await syncer.sync_once() == "applied"
        assert paths.config_file.read_bytes() == config("two")
        assert syncer.status.version == content_version(config("two"), b"")
        assert syncer.status.etag != etag_one
        assert await syncer.sync_once() == "unchanged"
        await store.close()

    asyncio.run(scenario())


def _sync_a_large_config(tmp: str) -> tuple[float, float]:
    """One sync of a 6,000-deployment config with a 10 ms ticker on the loop: (worst gap, sync time)."""
    tmp_path = Path(tmp)
    (tmp_path / "store").mkdir()
    s = settings(tmp_path, max_object_bytes=8 * 1024 * 1024)
    big = "model_list:\n" + "".join(
        f"  - {{model_name: m{i}, litellm_params: {{model: openai/x, api_key: os.environ/K, rpm: {i}}}}}\n"
        for i in range(6000)
    )

    async def scenario() -> tuple[float, float]:
        store = open_store(s.source)
        await store.put("config.yaml", big.encode())
        syncer = Syncer(s, store, AgentMetrics())
        worst = 0.0
        done = False

        async def ticker() -> None:
            nonlocal worst
            last = time.monotonic()
            while not done:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                worst = max(worst, now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        assert await syncer.sync_once() == "applied"
        took = time.monotonic() - started
        done = True
        await tick
        await store.close()
        return worst, took

    return asyncio.run(scenario())


def test_validation_runs_off_the_event_loop(tmp_path: Path) -> None:
    # In a process of its own, as the agent runs: in pytest's process the heap holds whatever earlier tests left
    # (LiteLLM, thousands of fixtures), and a full garbage collection of it, triggered by the YAML's allocations,
    # holds the GIL for half a second whichever thread allocates. That measures the test run, not the agent.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        worst, took = pool.submit(_sync_a_large_config, str(tmp_path)).result(timeout=120)
    assert took > 0.3, f"the config validated in {took:.2f} s: too small to show anything"
    # On the loop, the worst gap would be the whole validation; off it, the loop turns between the GIL's hand-offs
    # (one pydantic call keeps the GIL for a while, so not every 10 ms).
    assert worst < took / 3, f"the event loop stalled {worst:.2f} s of a {took:.2f} s sync"


def test_a_gateway_that_could_not_be_told_is_reported_and_asked_again(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    s = settings(tmp_path)
    s.paths.run_dir.mkdir(parents=True)
    (s.paths.run_dir / "gateway.pid").write_text("-1\n")  # never signalled

    async def scenario() -> None:
        store = open_store(s.source)
        metrics = AgentMetrics()
        syncer = Syncer(s, store, metrics)
        await store.put("config.yaml", config("one"))
        assert await syncer.sync_once() == "applied"
        doc = syncer.status.document(time.time())
        assert doc["gateway"]["state"] == "not_signalled"
        assert "not a process id" in doc["gateway"]["reason"]
        assert metrics.registry.get_sample_value("routeiq_config_sync_gateway_state", {"state": "not_signalled"}) == 1
        assert await syncer.sync_once() == "unchanged"
        failed = metrics.registry.get_sample_value(
            "routeiq_config_sync_reload_signals_total", {"method": "signal", "result": "failed"}
        )
        assert failed == 2  # asked again at the next poll
        await store.close()

    asyncio.run(scenario())


class _BrokenStore:
    """A store whose client fails in a way no branch foresaw (a bug, a library surprise)."""

    async def get(self, name: str, **kwargs: object) -> None:
        raise RuntimeError("surprise")

    async def close(self) -> None:
        return None


def test_an_unexpected_error_is_reported_and_the_agent_keeps_polling(tmp_path: Path) -> None:
    s = settings(tmp_path)
    syncer = Syncer(s, _BrokenStore(), AgentMetrics())  # type: ignore[arg-type]

    async def scenario() -> None:
        for attempt in (1, 2):
            with pytest.raises(SyncFailed) as failed:
                await syncer.sync_once()
            assert failed.value.reason == "internal_error" and "RuntimeError: surprise" in str(failed.value)
            assert syncer.status.consecutive_failures == attempt

    asyncio.run(scenario())
