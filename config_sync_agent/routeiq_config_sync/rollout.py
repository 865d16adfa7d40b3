"""Operator commands for a canary rollout of config.

A pod group follows `s3://bucket/canary/` while the rest follow `s3://bucket/prod/`. `promote` validates what
the canary serves and copies it over prod; `rollback` restores the object versions prod had before (the bucket
must be versioned). Either way every pod picks the change up at its next poll, so both validate the pair prod
would then hold, and refuse with the reason. They check what the agent checks (structure, references' syntax):
the `os.environ/` and `os.file/` values are the pods' secrets, not the operator's, unless `resolve_env` asks for
them.
"""

from __future__ import annotations

import os

from routeiq_shared.config_schema import check_config, load_config
from routeiq_shared.objectstore import ObjectMissing, ObjectStore

from .settings import CANDIDATES_NAME, CONFIG_NAME

FILES = (CANDIDATES_NAME, CONFIG_NAME)  # candidates first, as the agent writes them


def validate_pair(config: bytes, candidates: bytes | None, resolve_env: bool) -> None:
    """Raises ConfigError with the key's path."""
    if resolve_env:
        load_config(config, candidates, os.environ)
    else:
        check_config(config, candidates)


async def promote(canary: ObjectStore, prod: ObjectStore, max_bytes: int, resolve_env: bool = False) -> list[str]:
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
    validate_pair(bodies[CONFIG_NAME], candidates, resolve_env)
    for name, body in bodies.items():
        await prod.put(name, body)
    return list(bodies)


async def rollback(
    prod: ObjectStore, steps: int = 1, max_bytes: int = 1024 * 1024, resolve_env: bool = False
) -> dict[str, str]:
    """Restore config.yaml `steps` versions back, with llm_candidates.json as it stood when that config version
    was uploaded (its newest version not newer than it): a pair that was live together, not a mix of eras.
    The pair is read (checking the uploader's sha256) and validated first: an upload the fleet refused is not
    brought back. Returns name → restored version id."""
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
    config_obj = await prod.get(CONFIG_NAME, max_bytes=max_bytes, version_id=target.version_id)
    if live_then is not None:
        cand_obj = await prod.get(CANDIDATES_NAME, max_bytes=max_bytes, version_id=live_then.version_id)
    else:  # none as old as the config: prod's current candidates (if any) stay, so they are what pods pair it with
        cand_obj = await prod.get(CANDIDATES_NAME, max_bytes=max_bytes) if candidates else None
    assert config_obj is not None  # no If-None-Match was sent
    validate_pair(config_obj.body, cand_obj.body if cand_obj is not None else None, resolve_env)
    if live_then is not None and not live_then.is_latest:
        await prod.copy(CANDIDATES_NAME, CANDIDATES_NAME, version_id=live_then.version_id)
        restored[CANDIDATES_NAME] = live_then.version_id
    await prod.copy(CONFIG_NAME, CONFIG_NAME, version_id=target.version_id)
    restored[CONFIG_NAME] = target.version_id
    return restored
