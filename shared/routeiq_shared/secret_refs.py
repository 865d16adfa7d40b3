"""Secret references in config values: `os.environ/NAME` (LiteLLM's) and `os.file/PATH` (a mounted secret file).

Both may stand for any string value of config.yaml. Their syntax is what config-sync can check (the secrets may be
mounted only in the gateway's container); the gateway resolves them at every load and reload, so rotating a
secret is an update of the variable or file plus a reload. Errors name the key's path and the variable or file,
never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .secret_files import SecretFileError, SecretFiles, strip_one_newline

ENV_PREFIX = "os.environ/"
FILE_PREFIX = "os.file/"
_ENV_REF = re.compile(r"os\.environ/[A-Za-z_][A-Za-z0-9_]*")
_MAX_PATH = 4096
FILE_REF_SYNTAX = (
    "an os.file/ reference must be os.file/ABSOLUTE/PATH, without . or .. or empty parts "
    "(e.g. os.file/var/run/secrets/routeiq/OPENAI_API_KEY)"
)


class SecretRefError(ValueError):
    """A malformed reference, or one that cannot be resolved; `path` is the key's. `str()` never holds a secret."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def is_env_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def is_file_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(FILE_PREFIX)


def is_secret_ref(value: object) -> bool:
    """A value that stands for a secret resolved at load: its own checks wait for the resolved value."""
    return is_env_ref(value) or is_file_ref(value)


def file_ref_path(value: str) -> str:
    """The absolute path an `os.file/` reference names: `os.file/var/x` and `os.file//var/x` both read /var/x."""
    rest = value[len(FILE_PREFIX) :].lstrip("/")
    parts = rest.split("/")
    malformed = (
        not rest
        or len(rest) >= _MAX_PATH
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in rest)
        or any(part in ("", ".", "..") for part in parts)
    )
    if malformed:
        raise SecretRefError(FILE_REF_SYNTAX)
    return "/" + rest


def _check_one(value: str) -> None:
    if is_env_ref(value):
        if not _ENV_REF.fullmatch(value):
            raise SecretRefError("an os.environ/ reference must be os.environ/NAME (letters, digits, _)")
    else:
        file_ref_path(value)


def _resolve_one(value: str, env: Mapping[str, str], files: SecretFiles) -> str:
    if is_file_ref(value):
        path = file_ref_path(value)
        try:
            return files.read(path)
        except SecretFileError as exc:
            raise SecretRefError(f"os.file/ secret {exc}") from None
    name = value[len(ENV_PREFIX) :]
    if name not in env:
        raise SecretRefError(f"environment variable {name} is not set")
    return strip_one_newline(env[name])


def check_ref_syntax(value: Any, path: str = "") -> None:
    """Every reference in a parsed config tree is well formed: what config-sync can know without the pod's
    secrets. Raises SecretRefError with the key's path."""
    if is_secret_ref(value):
        try:
            _check_one(value)
        except SecretRefError as exc:
            raise SecretRefError(exc.message, path) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_ref_syntax(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_ref_syntax(v, f"{path}[{i}]")


def resolve_refs(value: Any, env: Mapping[str, str], files: SecretFiles, path: str = "") -> Any:
    """A copy of the tree with every reference replaced by its value (less one trailing newline). Raises
    SecretRefError with the key's path: an unset variable; a file missing, unreadable, empty, too large, with a
    control character or outside the allowed directories."""
    if is_secret_ref(value):
        try:
            _check_one(value)
            return _resolve_one(value, env, files)
        except SecretRefError as exc:
            raise SecretRefError(exc.message, path) from None
    if isinstance(value, dict):
        return {k: resolve_refs(v, env, files, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, env, files, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
