"""Many model-sync agents in one process: the product's `ModelSyncer`, one per volume, as asyncio tasks.

    python tests/harness/model_sync_fleet.py --root DIR --agents 10 [--first 0]

Agent i (first <= i < first + agents) has its own volume DIR/agent-<i>/{config,models,run}, its own object-store
client and its own Redis client, built by `routeiq_model_sync.cli.make_syncer` from the environment exactly as
`routeiq-model-sync` reads it (MODEL_REGISTRY, MODEL_NAMES, MODEL_SYNC_INTERVAL, MODEL_SYNC_MAX_CONCURRENT,
MODEL_SYNC_LEASE_TTL_MS, MODEL_SYNC_LOCK_WAIT, MODEL_REQUIRE_SIGNATURE, MODEL_SIGNING_PUBLIC_KEY, REDIS_URL,
AWS_ENDPOINT_URL_S3, AWS_*), with only ROUTEIQ_{CONFIG,MODELS,RUN}_DIR set per agent. Each agent runs the
agent's own poll loop: a pass, then a wait of MODEL_SYNC_INTERVAL jittered by MODEL_SYNC_JITTER.

Why not fifty `routeiq-model-sync` processes: on a 2-core machine fifty interpreters importing aioboto3 take
longer to start than the test runs. Tasks in a few processes keep what matters: separate volumes, separate
store and Redis connections, and a process that can be SIGKILLed with a download in flight. What is left out is
the per-agent health server, which the single-agent tests cover.

Log: the agents' JSON lines on stderr, each with an `agent` field; one JSON line on stdout,
{"event": "fleet_ready", ...}, once every agent has finished its first pass. Imports only the product's
packages: it runs as a plain script, not as part of the test harness package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import logging
import os
import random
import sys
from pathlib import Path

import orjson
from routeiq_model_sync.cli import SERVICE, close, make_syncer
from routeiq_model_sync.settings import ModelSyncSettings
from routeiq_shared.jsonlog import setup_logging

_AGENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("agent", default=None)


class _AgentField(logging.Filter):
    """Tags every record with the agent whose task logged it (asyncio tasks copy the context they start in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.agent = _AGENT.get()
        return True


def agent_env(root: Path, index: int) -> dict[str, str]:
    volume = root / f"agent-{index}"
    env = dict(os.environ)
    for kind in ("config", "models", "run"):
        (volume / kind).mkdir(parents=True, exist_ok=True)
        env[f"ROUTEIQ_{kind.upper()}_DIR"] = str(volume / kind)
    return env


async def run_agent(settings: ModelSyncSettings, first_pass: asyncio.Event) -> None:
    """`routeiq-model-sync`'s poll loop (cli.run_forever) without its health server."""
    syncer, redis_client = make_syncer(settings)
    rng = random.Random()
    try:
        while True:
            await syncer.sync_once()
            first_pass.set()
            delay = max(0.05, settings.interval * (1 + rng.uniform(-settings.jitter, settings.jitter)))
            await asyncio.sleep(delay)
    finally:
        await close(syncer, redis_client)


async def main_async(root: Path, first: int, count: int) -> None:
    passes: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    for index in range(first, first + count):
        settings = ModelSyncSettings.from_env(agent_env(root, index))
        if not settings.registry:
            raise SystemExit("MODEL_REGISTRY is required")
        done = asyncio.Event()
        passes.append(done)
        _AGENT.set(f"agent-{index}")
        tasks.append(asyncio.create_task(run_agent(settings, done), name=f"agent-{index}"))
    _AGENT.set(None)
    await asyncio.wait_for(asyncio.gather(*(p.wait() for p in passes)), timeout=120)
    line = {"event": "fleet_ready", "pid": os.getpid(), "agents": [first, first + count]}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()
    # The agents loop until the process is stopped; one that crashes takes the process down, loudly.
    finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in finished:
        task.result()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="agent i's volume is ROOT/agent-<i>/")
    parser.add_argument("--agents", type=int, required=True, help="how many agents this process runs")
    parser.add_argument("--first", type=int, default=0, help="index of the first agent (default 0)")
    args = parser.parse_args(argv)
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "INFO"))
    for handler in logging.getLogger().handlers:
        handler.addFilter(_AgentField())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.root, args.first, args.agents))


if __name__ == "__main__":
    main()
