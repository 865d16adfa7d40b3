"""`routeiq-config-sync`: keep the shared volume's config in step with the object store.

routeiq-config-sync                  poll every CONFIG_SYNC_INTERVAL seconds (health on HEALTH_PORT)
routeiq-config-sync --once           sync once and exit: 0 when the volume holds a valid config, else 1
routeiq-config-sync rollout promote --from s3://b/canary/ --to s3://b/prod/
routeiq-config-sync rollout rollback --source s3://b/prod/ [--steps 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import sys
import time

from routeiq_shared.config_schema import ConfigError
from routeiq_shared.health_server import HealthServer
from routeiq_shared.jsonlog import setup_logging, startup_errors_logged
from routeiq_shared.objectstore import StoreError, open_store
from routeiq_shared.sidecar import jittered, run_agent, run_until_stopped
from routeiq_shared.store_health import write_agent_status

from . import rollout
from .metrics import AgentMetrics
from .settings import AgentSettings
from .sync import Syncer, SyncFailed

SERVICE = "routeiq-config-sync"
log = logging.getLogger("routeiq.config_sync")
RESOLVE_ENV_HELP = (
    "also resolve os.environ/ and os.file/ references in this shell and check their values (default: check their "
    "syntax only; the pods resolve them)"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--source", help="s3://bucket/prefix/ or file:///dir/ (env CONFIG_SOURCE)")
    parser.add_argument("--interval", type=float, help="seconds between polls (env CONFIG_SYNC_INTERVAL, 60)")
    parser.add_argument("--once", action="store_true", help="sync once and exit (for an init container)")
    parser.add_argument("--health-port", type=int, help="env HEALTH_PORT (8081)")
    sub = parser.add_subparsers(dest="command")
    ro = sub.add_parser("rollout", help="promote canary config to prod, or roll prod back")
    ro_sub = ro.add_subparsers(dest="action", required=True)
    promote = ro_sub.add_parser("promote", help="validate the canary's files and copy them over prod")
    promote.add_argument("--from", dest="src", required=True, help="e.g. s3://bucket/canary/")
    promote.add_argument("--to", dest="dest", required=True, help="e.g. s3://bucket/prod/")
    promote.add_argument("--resolve-env", action="store_true", help=RESOLVE_ENV_HELP)
    back = ro_sub.add_parser("rollback", help="restore prod's previous object versions (versioned bucket)")
    back.add_argument("--source", dest="rollback_source", required=True, help="e.g. s3://bucket/prod/")
    back.add_argument("--steps", type=int, default=1, help="how many versions back (default 1)")
    back.add_argument("--resolve-env", action="store_true", help=RESOLVE_ENV_HELP)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> AgentSettings:
    settings = AgentSettings.from_env()
    overrides = {
        "source": args.source,
        "interval": args.interval,
        "health_port": args.health_port,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if args.interval is not None and "CONFIG_SYNC_BREAKER_COOLDOWN" not in os.environ:
        # The breaker's cool-down defaults to the poll interval: the one given here.
        breaker = dataclasses.replace(settings.store_breaker, cooldown_seconds=args.interval)
        settings = dataclasses.replace(settings, store_breaker=breaker)
    if not settings.source:
        raise SystemExit("CONFIG_SOURCE (or --source) is required: s3://bucket/prefix/ or file:///dir/")
    return settings


async def run_once(settings: AgentSettings) -> int:
    store = open_store(settings.source, settings.endpoint_url)
    syncer = Syncer(settings, store, AgentMetrics())
    try:
        result = await syncer.sync_once()
    except SyncFailed as exc:
        sys.stderr.write(f"{SERVICE}: sync failed ({exc.reason}): {exc}\n")
        return 1
    finally:
        await store.close()
    sys.stderr.write(f"{SERVICE}: {result}, version {syncer.status.version}\n")
    return 0


async def run_forever(settings: AgentSettings) -> None:
    store = open_store(settings.source, settings.endpoint_url)
    metrics = AgentMetrics()
    syncer = Syncer(settings, store, metrics)
    health = HealthServer(
        "/health/config-sync",
        lambda: syncer.document(time.time()),
        lambda: syncer.status.synced,
        metrics.registry,
    )
    rng = random.Random()

    async def loop(stop: asyncio.Event) -> None:
        log.info("Config sync starting", extra={"source": settings.source, "interval": settings.interval})
        while not stop.is_set():
            with contextlib.suppress(SyncFailed):  # recorded in status, metrics and the log by the syncer
                await syncer.sync_once()
            # For the gateway's /health/dependencies: how old the config it serves may be.
            write_agent_status(settings.paths.run_dir, "config-sync", syncer.document(time.time()))
            try:
                await asyncio.wait_for(stop.wait(), jittered(settings.interval, settings.jitter, rng))
            except TimeoutError:
                continue

    try:
        await run_until_stopped(health, settings.health_port, loop)
    finally:
        await store.close()


async def run_rollout(args: argparse.Namespace) -> int:
    max_bytes = AgentSettings.from_env().max_object_bytes
    try:
        if args.action == "promote":
            src, dest = open_store(args.src), open_store(args.dest)
            try:
                copied = await rollout.promote(src, dest, max_bytes, args.resolve_env)
            finally:
                await src.close()
                await dest.close()
            sys.stdout.write(f"promoted {', '.join(copied)} from {args.src} to {args.dest}\n")
        else:
            store = open_store(args.rollback_source)
            try:
                restored = await rollout.rollback(store, args.steps, max_bytes, args.resolve_env)
            finally:
                await store.close()
            for name, version in restored.items():
                sys.stdout.write(f"restored {name} to version {version}\n")
    except (ConfigError, StoreError, ValueError) as exc:
        sys.stderr.write(f"{SERVICE} rollout {args.action}: {exc}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "INFO"))
    if args.command == "rollout":
        sys.exit(asyncio.run(run_rollout(args)))
    with startup_errors_logged(SERVICE):
        settings = settings_from(args)
    run_agent(SERVICE, args.once, lambda: run_once(settings), lambda: run_forever(settings))
