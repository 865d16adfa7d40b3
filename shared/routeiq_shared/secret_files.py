"""File-mounted secrets (`os.file/PATH` in config.yaml): where a config may read them from, and reading one value.

A Kubernetes Secret volume is `KEY -> ..data/KEY`, `..data -> ..2026_12_08_…/`, and the kubelet swaps `..data`
atomically on update: a read through the configured path sees the old value or the new one, never a mix, so the
path is opened as configured at every load (never a target resolved earlier). The config may come from a bucket
that more people can write than the pod's secrets, so it may only read under the allowed directories
(`ROUTEIQ_SECRET_DIRS`), checked on the resolved target: a symlink out of a secret volume, `/etc/shadow` or
`/proc/self/environ` is refused. Values go into outbound headers: control characters are refused, never echoed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

SECRET_DIRS_ENV = "ROUTEIQ_SECRET_DIRS"
# Not all of /var/run/secrets: it holds the pod's service-account token (kubernetes.io/…) and cloud workload
# identity tokens (eks.amazonaws.com/…), which a config must not be able to send to an api_base of its choosing.
DEFAULT_SECRET_DIRS = ("/var/run/secrets/routeiq", "/etc/routeiq/secrets")
MAX_SECRET_FILE_BYTES = 16 * 1024  # a provider key or token is far smaller; an HTTP header rarely takes more
# Pseudo-filesystems: /proc/self/environ holds every secret of the process, /dev has files that never end.
_NEVER_ROOTS = ("/proc", "/sys", "/dev")


class SecretFileError(ValueError):
    """Why a secret file cannot be used. The message names the file (or the setting), never its content."""


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F  # C0, DEL and C1


def strip_one_newline(value: str) -> str:
    """A secret written with `echo` (or `kubectl create secret --from-file` of such a file) ends in one newline:
    drop that one (LF or CRLF), nothing more."""
    if value.endswith("\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith("\n") else value


def secret_dirs(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The allowed directories, resolved: `ROUTEIQ_SECRET_DIRS` (colon-separated absolute paths, like PATH), else
    DEFAULT_SECRET_DIRS. Raises SecretFileError for a relative path, `/`, or a pseudo-filesystem."""
    raw = environ.get(SECRET_DIRS_ENV, "")
    given = [d.strip() for d in raw.split(":") if d.strip()] or list(DEFAULT_SECRET_DIRS)
    out: list[str] = []
    for directory in given:
        if not os.path.isabs(directory):
            raise SecretFileError(f"{SECRET_DIRS_ENV}: {directory!r} is not an absolute path")
        real = os.path.realpath(directory)
        if real == "/" or any(_is_within(real, never) for never in _NEVER_ROOTS):
            raise SecretFileError(
                f"{SECRET_DIRS_ENV}: {directory!r} would allow reading system files; name the "
                "directory where the secrets are mounted"
            )
        out.append(real)
    return tuple(out)


def _allowed(real: str, roots: tuple[str, ...]) -> bool:
    return any(_is_within(real, root) for root in roots)


def _opened_path(fd: int) -> str | None:
    """Where the open file really is (Linux): guards a symlink changed between the check and the open."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
    except OSError:
        return None


def read_secret_file(path: str, roots: tuple[str, ...]) -> str:
    """The file's text less one trailing newline. Raises SecretFileError when it is outside `roots` (after
    symlinks), missing, unreadable, not a regular file, empty, over MAX_SECRET_FILE_BYTES, not UTF-8, or holds a
    control character."""
    where = ", ".join(roots)
    outside = f"{path} is outside the secret directories ({where}; set {SECRET_DIRS_ENV} to change them)"
    if not _allowed(os.path.realpath(path), roots):
        raise SecretFileError(outside)  # refused before it is opened: no FIFO, device or /proc file is touched
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretFileError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    try:
        opened = _opened_path(fd)
        if opened is not None and not _allowed(opened, roots):
            raise SecretFileError(outside)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SecretFileError(f"{path} is not a regular file")
        data = _read_bounded(fd, path)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretFileError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    value = strip_one_newline(text)
    if not value:
        raise SecretFileError(f"{path} is empty")
    bad = next((i for i, c in enumerate(value) if _is_control(c)), None)
    if bad is not None:
        raise SecretFileError(
            f"{path} contains a control character (CR, LF, TAB, NUL, …) at character {bad}; only one trailing "
            "newline is dropped, and the value is sent in HTTP headers"
        )
    return value


def _read_bounded(fd: int, path: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_SECRET_FILE_BYTES:
        try:
            chunk = os.read(fd, MAX_SECRET_FILE_BYTES + 1 - size)
        except OSError as exc:
            raise SecretFileError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise SecretFileError(f"{path} is larger than {MAX_SECRET_FILE_BYTES} bytes")


class SecretFiles:
    """Reads `os.file/` secrets for one config load; the allowed directories come from the process environment
    given (not the config's environment_variables: a config must not widen where it may read)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._roots: tuple[str, ...] | None = None
        self.read_paths: list[str] = []  # what this load read, for its log line (paths only)

    def read(self, path: str) -> str:
        if self._roots is None:  # parsed on first use: a config without os.file/ is not failed by a bad setting
            self._roots = secret_dirs(self._environ)
        value = read_secret_file(path, self._roots)
        if path not in self.read_paths:
            self.read_paths.append(path)
        return value
