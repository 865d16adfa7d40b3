"""The files a write replaced, byte for byte, so they can be put back when the gateway refuses what replaced them.

The gateway keeps serving its previous state after a refused reload, but a restart of its container reads the
volume: leaving the refused files there turns one bad upload into a crash loop. What was on the volume is read
just before the write and, on a refusal, written back the way `Syncer._write` writes (candidates, then config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from routeiq_shared.atomic import atomic_write
from routeiq_shared.config_schema import content_version
from routeiq_shared.volume import VolumePaths


def read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    """Unlink and fsync the directory, so the removal is as durable as an atomic_write's rename."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class ReplacedFiles:
    written_version: str  # what replaced them
    config: bytes | None  # None: there was no config.yaml (a fresh volume)
    candidates: bytes | None  # None: there was no llm_candidates.json
    etag: str | None  # the store ETag of the config.yaml these bytes came from, as the agent last knew it

    @classmethod
    def read(cls, paths: VolumePaths, written_version: str, etag: str | None) -> ReplacedFiles:
        return cls(written_version, read_if_present(paths.config_file), read_if_present(paths.candidates_file), etag)

    @property
    def version(self) -> str | None:
        if self.config is None:
            return None
        return content_version(self.config, self.candidates or b"")

    def put_back(self, paths: VolumePaths) -> None:
        """Raises OSError when the volume refuses; the caller may try again."""
        if self.config is None:
            raise ValueError("nothing to put back: there was no config.yaml before")
        if self.candidates is not None:
            atomic_write(paths.candidates_file, self.candidates)
        else:
            _remove(paths.candidates_file)
        atomic_write(paths.config_file, self.config)
