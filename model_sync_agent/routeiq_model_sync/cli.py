"""`routeiq-model-sync`: keep the shared volume's router models in step with the registry.

routeiq-model-sync                    poll every MODEL_SYNC_INTERVAL seconds (health on HEALTH_PORT, 8082)
routeiq-model-sync --once             one pass; exit 0 when every followed model is in sync
routeiq-model-sync keygen --out DIR   an Ed25519 key pair: DIR/signing.key (0600), DIR/signing.pub
routeiq-model-sync publish --registry URI --name NAME --version V --artifact FILE --key DIR/signing.key
                           [--set-current] [--metrics '{"accuracy": 0.8}'] [--data-digest D --data-rows N]
routeiq-model-sync rollback --registry URI --name NAME --to V --key DIR/signing.key

`publish --set-current` and `rollback` write CURRENT as a signed pointer with a higher sequence than the last:
agents refuse an older one, so only the key's holder decides what the fleet serves.
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
from pathlib import Path
from typing import Any

import orjson
from routeiq_shared.health_server import HealthServer
from routeiq_shared.jsonlog import setup_logging, startup_errors_logged
from routeiq_shared.manifest import ManifestError
from routeiq_shared.objectstore import StoreError, open_store
from routeiq_shared.sidecar import jittered, run_agent, run_until_stopped
from routeiq_shared.signing import KeyFileError, load_private_key, load_public_key, write_keypair
from routeiq_shared.store_health import write_agent_status

from . import registry
from .metrics import ModelSyncMetrics
from .settings import ModelSyncSettings
from .sync import ModelSyncer

SERVICE = "routeiq-model-sync"
log = logging.getLogger("routeiq.model_sync")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SERVICE, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--once", action="store_true", help="one pass and exit")
    parser.add_argument("--health-port", type=int, help="env HEALTH_PORT (8082)")
    sub = parser.add_subparsers(dest="command")
    keygen = sub.add_parser("keygen", help="write an Ed25519 signing key pair")
    keygen.add_argument("--out", type=Path, required=True)
    pub = sub.add_parser("publish", help="upload a signed model version to the registry")
    pub.add_argument("--registry", required=True)
    pub.add_argument("--name", required=True)
    pub.add_argument("--version", required=True)
    pub.add_argument("--artifact", type=Path, required=True)
    pub.add_argument("--key", type=Path, required=True, help="the private key (signing.key)")
    pub.add_argument("--set-current", action="store_true", help="also make it the version to serve")
    pub.add_argument("--metrics", default="{}", help="evaluation metrics as a JSON object of numbers")
    pub.add_argument("--data-digest", default="unknown", help="digest of the training data")
    pub.add_argument("--data-rows", type=int, default=0)
    back = sub.add_parser("rollback", help="point CURRENT at an already published version")
    back.add_argument("--registry", required=True)
    back.add_argument("--name", required=True)
    back.add_argument("--to", dest="version", required=True)
    back.add_argument("--key", type=Path, required=True, help="the private key (signing.key): CURRENT is signed")
    return parser.parse_args(argv)


def make_syncer(settings: ModelSyncSettings) -> tuple[ModelSyncer, Any]:
    store = open_store(settings.registry)
    redis_client = None
    if settings.redis is not None:  # Sentinel: the master is found again after a failover; Cluster: by slot
        redis_client = settings.redis.client(socket_connect_timeout=2, socket_timeout=5)
    try:
        key = load_public_key(settings.public_key) if settings.public_key else None
    except (KeyFileError, OSError) as exc:
        raise SystemExit(f"MODEL_SIGNING_PUBLIC_KEY: {exc}") from None
    return ModelSyncer(settings, store, redis_client, ModelSyncMetrics(), key), redis_client


async def close(syncer: ModelSyncer, redis_client: Any) -> None:
    await syncer.store.close()
    if redis_client is not None:
        await redis_client.aclose()


async def run_once(settings: ModelSyncSettings) -> int:
    syncer, redis_client = make_syncer(settings)
    try:
        results = await syncer.sync_once()
    finally:
        await close(syncer, redis_client)
    sys.stderr.write(f"{SERVICE}: {orjson.dumps(results).decode()}\n")
    ok = {"unchanged", "installed", "restored_previous"}
    return 0 if all(r in ok for r in results.values()) else 1


async def run_forever(settings: ModelSyncSettings) -> None:
    syncer, redis_client = make_syncer(settings)
    health = HealthServer("/health/model-sync", syncer.document, lambda: syncer.passes > 0, syncer.metrics.registry)
    rng = random.Random()

    async def loop(stop: asyncio.Event) -> None:
        log.info("Model sync starting", extra={"registry": settings.registry, "interval": settings.interval})
        while not stop.is_set():
            try:
                await syncer.sync_once()
            except Exception as exc:  # the last guard: a pass that fails must not end the agent
                log.exception("Sync pass failed", extra={"event": "model_sync", "error": type(exc).__name__})
            # For the gateway's /health/dependencies: how old the models it serves may be.
            write_agent_status(settings.paths.run_dir, "model-sync", syncer.document())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), jittered(settings.interval, settings.jitter, rng))

    try:
        await run_until_stopped(health, settings.health_port, loop)
    finally:
        await close(syncer, redis_client)


async def run_publish(args: argparse.Namespace) -> int:
    try:
        metrics = {k: float(v) for k, v in orjson.loads(args.metrics).items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        sys.stderr.write("--metrics must be a JSON object of numbers\n")
        return 2
    store = open_store(args.registry)
    try:
        key = load_private_key(args.key)
        manifest = registry.build_manifest(
            args.name, args.version, args.artifact, metrics, args.data_digest, args.data_rows
        )
        signed = await registry.publish(store, manifest, args.artifact, key, set_current=args.set_current)
    except (registry.RegistryError, ManifestError, StoreError, KeyFileError, OSError, ValueError) as exc:
        sys.stderr.write(f"{SERVICE} publish: {exc}\n")
        return 1
    finally:
        await store.close()
    current = " (now CURRENT)" if args.set_current else ""
    sys.stdout.write(f"published {signed.name} {signed.version}, sha256 {signed.artifact.sha256}{current}\n")
    return 0


async def run_rollback(args: argparse.Namespace) -> int:
    store = open_store(args.registry)
    try:
        key = load_private_key(args.key)
        pointer = await registry.rollback(store, args.name, args.version, key)
    except (registry.RegistryError, ManifestError, StoreError, KeyFileError, OSError, ValueError) as exc:
        sys.stderr.write(f"{SERVICE} rollback: {exc}\n")
        return 1
    finally:
        await store.close()
    sys.stdout.write(f"{args.name}: CURRENT is now {args.version}\n")
    log.info(
        "CURRENT signed",
        extra={"event": "model_rollback", "model": args.name, "version": args.version, "sequence": pointer.sequence},
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(SERVICE, os.environ.get("LOG_LEVEL", "INFO"))
    if args.command == "keygen":
        try:
            private, public = write_keypair(args.out)
        except (FileExistsError, OSError) as exc:
            raise SystemExit(f"{SERVICE} keygen: {exc}") from None
        sys.stdout.write(f"wrote {private} (keep it secret) and {public}\n")
        return
    if args.command == "publish":
        sys.exit(asyncio.run(run_publish(args)))
    if args.command == "rollback":
        sys.exit(asyncio.run(run_rollback(args)))
    with startup_errors_logged(SERVICE):
        settings = ModelSyncSettings.from_env()
        if args.health_port is not None:
            settings = dataclasses.replace(settings, health_port=args.health_port)
        if not settings.registry:
            raise SystemExit("MODEL_REGISTRY is required: s3://bucket/prefix/ or file:///dir/")
    run_agent(SERVICE, args.once, lambda: run_once(settings), lambda: run_forever(settings))
