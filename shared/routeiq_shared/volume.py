"""Where the shared volume's files live: the DESIGN.md defaults, overridable by environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class VolumePaths:
    config_dir: Path
    models_dir: Path
    run_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VolumePaths:
        env = os.environ if env is None else env
        return cls(
            config_dir=Path(env.get("ROUTEIQ_CONFIG_DIR", "/app/config")),
            models_dir=Path(env.get("ROUTEIQ_MODELS_DIR", "/app/models")),
            run_dir=Path(env.get("ROUTEIQ_RUN_DIR", "/app/run")),
        )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def candidates_file(self) -> Path:
        return self.config_dir / "llm_candidates.json"

    @property
    def gateway_pidfile(self) -> Path:
        return self.run_dir / "gateway.pid"
