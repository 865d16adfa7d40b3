"""The local spool: records appended to a segment file on the run volume, sealed in batches for the shipper.

A segment is `seg-<first time ms>-<n>.open.jsonl` while written, renamed `….ready.jsonl` when sealed (by size, by
age, at drain). Appends are plain `write`s to an O_APPEND descriptor from the event loop: a few microseconds, no
thread, and the kernel keeps them if the process dies. A segment left open by a dead process is sealed at the next
start, its torn last line cut off. The spool is bounded: past `max_bytes`, or when the volume refuses a write, a
record is dropped and counted, never allowed to stall or fail the request it describes.

With `fsync=True` (the audit trail: a few records a minute, each of which must survive a power cut) every append
is also flushed to the disk before `append` returns.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("routeiq.gateway")

_OPEN = ".open.jsonl"
_READY = ".ready.jsonl"


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    first_time: float
    size: int


class Spool:
    def __init__(self, directory: Path, max_bytes: int, *, fsync: bool = False, what: str = "routing record") -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.what = what  # named in the error log
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0  # monotonic, for the age of the open segment
        self._count = 0  # records in the open segment
        self._size = 0  # bytes of whole records in the open segment
        self._sealed_bytes = 0
        self._seq = 0
        self._last_error_log = 0.0

    # --- start ---

    def recover(self) -> int:
        """Create the directory; seal segments a previous process left open (cutting a torn last line).
        Returns how many were recovered. Raises OSError when the directory cannot be made."""
        self.dir.mkdir(parents=True, exist_ok=True)
        recovered = 0
        for path in sorted(self.dir.glob("seg-*" + _OPEN)):
            _cut_torn_tail(path)
            if path.stat().st_size == 0:
                path.unlink()
                continue
            path.rename(path.with_name(path.name[: -len(_OPEN)] + _READY))
            recovered += 1
        self._sealed_bytes = sum(s.size for s in self.ready())
        return recovered

    # --- writing (event loop) ---

    @property
    def size(self) -> int:
        return self._sealed_bytes + self._size

    @property
    def pending(self) -> int:
        return self._count

    def append(self, line: bytes) -> str | None:
        """Append one encoded record. None when kept, else why it was dropped ("spool_full", "write_error")."""
        if self.size + len(line) > self.max_bytes:
            return "spool_full"
        try:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            written = os.write(self._fd, line)
            if written != len(line):  # a short write on a full volume: cut it, the line would be torn
                raise OSError(28, "short write")
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._torn(exc)
            return "write_error"
        self._size += written
        self._count += 1
        return None

    def due(self, batch_records: int, max_age: float) -> bool:
        return self._fd is not None and (self._count >= batch_records or time.monotonic() - self._opened_at >= max_age)

    def seal(self) -> None:
        """Close the open segment and make it ready for shipping (a no-op when none is open)."""
        if self._fd is None or self._path is None:
            return
        os.close(self._fd)
        path, size, count = self._path, self._size, self._count
        self._fd, self._path, self._count, self._size = None, None, 0, 0
        if count == 0:
            path.unlink(missing_ok=True)
            return
        try:
            path.rename(path.with_name(path.name[: -len(_OPEN)] + _READY))
        except OSError as exc:  # left open: the next start recovers it
            self._log_error("could not seal a spool segment", exc)
            return
        self._sealed_bytes += size

    # --- shipping ---

    def ready(self) -> list[Segment]:
        """Sealed segments, oldest first."""
        out = []
        for path in self.dir.glob("seg-*" + _READY):
            try:
                first_ms = int(path.name.split("-")[1])
                size = path.stat().st_size
            except (ValueError, IndexError, OSError):
                continue
            out.append(Segment(path, first_ms / 1000, size))
        return sorted(out, key=lambda s: (s.first_time, s.path.name))

    def shipped(self, segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)
        self._sealed_bytes = max(0, self._sealed_bytes - segment.size)

    # --- internals ---

    def _open(self) -> None:
        self._seq += 1
        name = f"seg-{int(time.time() * 1000)}-{os.getpid()}-{self._seq}{_OPEN}"
        path = self.dir / name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._path = path
        self._opened_at = time.monotonic()

    def _torn(self, exc: OSError) -> None:
        """A failed write may have left part of a line: cut the segment back to its last whole record."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self.seal()  # cannot repair it here: sealed as is, the reader skips a torn line and says where
        self._log_error(f"a {self.what} could not be written to the spool", exc)

    def _log_error(self, message: str, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 60:  # a full volume fails every request: once a minute is enough
            self._last_error_log = now
            log.error(message, extra={"event": "records_spool_error", "dir": str(self.dir), "reason": str(exc)})


def _cut_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def open_spool(
    directory: Path, max_bytes: int, *, fsync: bool = False, what: str = "routing record", event: str = "records"
) -> Spool:
    """A spool, with the segments a previous process left sealed for shipping. A volume that refuses the directory
    is logged: the gateway serves, and each record is dropped and counted (write_error)."""
    spool = Spool(directory, max_bytes, fsync=fsync, what=what)
    try:
        recovered = spool.recover()
    except OSError as exc:
        log.error(
            f"The {what} spool is not usable; records are dropped until it is",
            extra={"event": f"{event}_spool_error", "dir": str(directory), "reason": str(exc)},
        )
    else:
        if recovered:
            log.info(f"{what}s recovered from the spool", extra={"event": f"{event}_recovered", "segments": recovered})
    return spool
