"""Which models this pod follows, and at which version: the routers of the synced config.yaml (with their
`model_version` pins), plus MODEL_NAMES."""

from __future__ import annotations

from pathlib import Path

from routeiq_shared.config_schema import ConfigError, parse_config


def wanted_models(config_file: Path, extra_names: tuple[str, ...]) -> dict[str, str | None]:
    """name → pinned version (None: follow CURRENT). A missing or invalid config contributes nothing: the
    config-sync agent owns that file and reports its problems."""
    wanted: dict[str, str | None] = dict.fromkeys(extra_names)
    try:
        config = parse_config(config_file.read_bytes())
    except (OSError, ConfigError):
        return wanted
    for router in config.routeiq.routers:
        # The router's artifact, or every arm's (A/B, canary); a strategy without a model contributes none.
        for artifact, pin in router.artifacts:
            if pin is not None or artifact not in wanted:
                wanted[artifact] = pin
    return wanted
