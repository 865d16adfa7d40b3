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
    # Refuse to promote what every pod would then reject (raises ConfigError with the key's path).
    load_config(bodies[CONFIG_NAME], bodies.get(CANDIDATES_NAME), os.environ)
    for name, body in bodies.items():
        await prod.put(name, body)
    return list(bodies)


async def rollback(prod: ObjectStore, steps: int = 1) -> dict[str, str]:
    """Make the version `steps` back the latest again, for each file that has one; returns name → version id."""
    restored: dict[str, str] = {}
    for name in FILES:
        try:
            versions = await prod.versions(name)
        except ObjectMissing:
            continue
        if len(versions) <= steps:
            if name == CONFIG_NAME:
                raise ObjectMissing(f"{name}: only {len(versions)} version(s) kept; cannot go back {steps}")
            continue
        target = versions[steps]
        await prod.copy(name, name, version_id=target.version_id)
        restored[name] = target.version_id
    return restored
