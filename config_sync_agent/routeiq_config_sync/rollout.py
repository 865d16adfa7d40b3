"""Operator commands for a canary rollout of config.

A pod group follows `s3://bucket/canary/` while the rest follow `s3://bucket/prod/`. `promote` validates what
the canary serves and copies it over prod; `rollback` restores the object versions prod had before (the bucket
must be versioned). Either way every pod picks the change up at its next poll.
"""

from __future__ import annotations

import os

from routeiq_shared.config_schema import load_config
from routeiq_shared.objectstore import ObjectMissing, ObjectStore

from .settings import CANDIDATES_NAME, CONFIG_NAME

FILES = (CANDIDATES_NAME, CONFIG_NAME)  # candidates first, as the agent writes them


async def promote(canary: ObjectStore, prod: ObjectStore, max_bytes: int) -> list[str]:
    """Copy the canary's files to prod after validating them together; returns what was copied."""
    bodies: dict[str, bytes] = {}
    for name in FILES:
        try:
            obj = await canary.get(name, max_bytes=max_bytes)
        except ObjectMissing:
            if name == CONFIG_NAME:
                raise
            continue
        assert obj is not None
        bodies[name] = obj.body
    candidates = bodies.get(CANDIDATES_NAME)
    if candidates is None:
        # The canary has none, so prod keeps its own: the pair prod's pods will load is that one.
        try:
            kept = await prod.get(CANDIDATES_NAME, max_bytes=max_bytes)
        except ObjectMissing:
            kept = None
        candidates = kept.body if kept is not None else None
    # Refuse to promote what every pod would then reject (raises ConfigError with the key's path).
    load_config(bodies[CONFIG_NAME], candidates, os.environ)
    for name, body in bodies.items():
        await prod.put(name, body)
    return list(bodies)


async def rollback(prod: ObjectStore, steps: int = 1) -> dict[str, str]:
    """Restore config.yaml `steps` versions back, with llm_candidates.json as it stood when that config version
    was uploaded (its newest version not newer than it): a pair that was live together, not a mix of eras.
    Returns name → restored version id."""
    configs = await prod.versions(CONFIG_NAME)
    if len(configs) <= steps:
        raise ObjectMissing(f"{CONFIG_NAME}: only {len(configs)} version(s) kept; cannot go back {steps}")
    target = configs[steps]
    restored: dict[str, str] = {}
    try:
        candidates = await prod.versions(CANDIDATES_NAME)
    except ObjectMissing:
        candidates = []
    live_then = next((v for v in candidates if v.last_modified <= target.last_modified), None)
    if live_then is not None and not live_then.is_latest:
        await prod.copy(CANDIDATES_NAME, CANDIDATES_NAME, version_id=live_then.version_id)
        restored[CANDIDATES_NAME] = live_then.version_id
    await prod.copy(CONFIG_NAME, CONFIG_NAME, version_id=target.version_id)
    restored[CONFIG_NAME] = target.version_id
    return restored
