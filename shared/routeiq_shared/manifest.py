"""The artifact manifest: what a published model is, how to check its bytes, and the exact bytes that are signed.

A manifest travels as `manifest.json` next to `model.pkl` (`<prefix>/<name>/<version>/` in the registry,
`<models_dir>/<name>.manifest.json` on the volume). Parsing is strict: unknown keys, missing keys and wrong
types are errors naming the key's path, because a manifest decides whether a pickle gets loaded at all.

    {
      "name": "auto-router", "version": "2024-06-01.1", "created_at": "2024-06-01T12:00:00Z",
      "artifact": {"sha256": "<64 hex>", "size": 123456, "format": "joblib"},
      "library_versions": {"python": "3.11.9", "scikit-learn": "1.5.0", "joblib": "1.4.2", "numpy": "1.26.4"},
      "training_data": {"digest": "sha256:<hex>", "rows": 50000},
      "metrics": {"accuracy": 0.91},
      "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}
    }

`signature` may be absent (an unsigned manifest); signing and verifying live in `signing.py`.

`CurrentPointer` is the registry's `<name>/CURRENT`: which version to serve, as a signed decision with a sequence
that only grows, so a pointer put back from the past (a rollback nobody signed) is told from a new one:

    {"kind": "routeiq.current/v1", "name": "auto-router", "version": "2024-06-01.1", "sequence": 1717243200000,
     "created_at": "2024-06-01T12:00:00Z", "signature": {...}}
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, BinaryIO, ClassVar, Final, Literal, Self

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError

from .config_schema import ARTIFACT_NAME_PATTERN, ARTIFACT_VERSION_PATTERN, format_loc

# Names and versions become S3 keys and file names: no slashes, no "..", no leading dot or dash.
NAME_PATTERN = ARTIFACT_NAME_PATTERN  # names and versions become S3 keys and file names: no "/", no ".."
VERSION_PATTERN = ARTIFACT_VERSION_PATTERN
SHA256_PATTERN = r"^[0-9a-f]{64}$"
FORMAT_PATTERN = r"^[a-z0-9][a-z0-9._+-]{0,31}$"
# RFC 3339 restricted to UTC with a literal "Z", so every writer spells the same instant the same way.
_CREATED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")

HASH_CHUNK_BYTES = 1024 * 1024
MANIFEST_SOURCE = "manifest.json"
CURRENT_SOURCE = "CURRENT"
POINTER_KIND: Final = "routeiq.current/v1"


class ManifestError(ValueError):
    """A manifest that must not be trusted. `path` names the offending key (`artifact.sha256`), "" for the file."""

    def __init__(self, path: str, message: str, source: str = MANIFEST_SOURCE) -> None:
        self.path = path
        self.message = message
        self.source = source
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")


def _check_created_at(value: str) -> str:
    if not _CREATED_AT_RE.match(value):
        raise ValueError("must be an RFC 3339 UTC timestamp like 2024-06-01T12:00:00Z")
    try:
        datetime.fromisoformat(value[:19])  # the regex checked the shape; this checks the calendar
    except ValueError:
        raise ValueError("not a real date and time") from None
    return value


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


# Read-only mappings: a frozen model must not hand out a dict that can be changed after signing.
LibraryVersions = Annotated[
    Mapping[Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(min_length=1, max_length=128)]],
    AfterValidator(_freeze),
    PlainSerializer(dict),
]
Metrics = Annotated[
    Mapping[Annotated[str, Field(min_length=1, max_length=128)], float],
    AfterValidator(_freeze),
    PlainSerializer(dict),
]


class _Strict(BaseModel):
    # strict: "123" is not a size and true is not a row count; NaN/Infinity are not JSON and would not round-trip.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Artifact(_Strict):
    sha256: str = Field(pattern=SHA256_PATTERN, description="lowercase hex sha256 of the artifact file")
    size: int = Field(ge=0, description="artifact size in bytes")
    format: str = Field(pattern=FORMAT_PATTERN, description='serialisation format, e.g. "joblib"')


class TrainingData(_Strict):
    digest: str = Field(min_length=1, max_length=256, description='digest of the training set, e.g. "sha256:<hex>"')
    rows: int = Field(ge=0)


class Signature(_Strict):
    # algorithm and key_id are checked by the verifier, not here, so a foreign algorithm or key gets its own
    # reason code ("unsupported_algorithm", "unknown_key") instead of a generic parse error.
    algorithm: str = Field(min_length=1, max_length=32)
    key_id: str = Field(min_length=1, max_length=128)
    value: str = Field(min_length=1, max_length=1024, description="base64 of the raw signature bytes")


class _SignedDocument(_Strict):
    """A JSON document signed with Ed25519 (see `canonical_bytes`): a manifest, or a CURRENT pointer."""

    _source: ClassVar[str] = MANIFEST_SOURCE
    signature: Signature | None = None

    @classmethod
    def from_json(cls, raw: bytes | str, source: str | None = None) -> Self:
        """Parse and validate; any problem is a `ManifestError` naming the key's path."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise _first_error(exc, source or cls._source) from None

    def to_json(self) -> bytes:
        """Readable JSON for writing to the store or the volume (sorted keys, 2-space indent, final newline).
        An absent signature stays absent. Not the signed form: see `canonical_bytes`."""
        data = self.model_dump(mode="json", exclude_none=True)
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    def with_signature(self, signature: Signature | None) -> Self:
        return self.model_copy(update={"signature": signature})


class Manifest(_SignedDocument):
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    created_at: Annotated[str, AfterValidator(_check_created_at)]
    artifact: Artifact
    library_versions: LibraryVersions
    training_data: TrainingData
    metrics: Metrics


class CurrentPointer(_SignedDocument):
    """The signed `CURRENT` of one model. `kind` keeps its signed bytes apart from a manifest's."""

    _source: ClassVar[str] = CURRENT_SOURCE
    kind: Literal["routeiq.current/v1"]
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    sequence: int = Field(ge=1, lt=2**63, description="grows with every pointer written; never reused")
    created_at: Annotated[str, AfterValidator(_check_created_at)]


def _first_error(exc: ValidationError, source: str) -> ManifestError:
    err = exc.errors(include_url=False)[0]
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "json_invalid":
        msg = f"not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
    elif kind == "model_type" and not err["loc"]:
        msg = "top level must be a JSON object"
    elif kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))  # our own validators' words, without a prefix
    else:
        msg = err["msg"]
    return ManifestError(format_loc(tuple(err["loc"])), msg, source)


def canonical_bytes(manifest: Manifest | CurrentPointer) -> bytes:
    """The bytes an Ed25519 signature covers (a manifest's or a CURRENT pointer's). To reproduce them elsewhere:

    1. Take the manifest as a JSON object and drop the top-level "signature" key (present or not).
    2. Serialise as UTF-8 JSON with the keys of every object sorted by Unicode code point (= UTF-8 byte
       order), no whitespace between tokens, non-ASCII characters written as themselves (not \\u escapes),
       "/" not escaped.
    3. Integers (size, rows) as plain integers; metric values always as JSON floats in the shortest form that
       reads back to the same IEEE-754 double, with ".0" on integral values (1.0, 0.1, 1e-7, 1e+20) — what
       orjson writes. Strings are the exact values parsed (no normalisation).

    The input JSON's key order and whitespace therefore never matter; its values do.
    """
    data = manifest.model_dump(mode="json", exclude={"signature"})
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def sha256_file(path: Path | str, chunk: int = HASH_CHUNK_BYTES) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file, memory-mapped (or read in `chunk`-sized pieces), so a 500 MB
    artifact is never copied into the process's memory."""
    with open(path, "rb", buffering=0) as fh:
        return sha256_fileobj(fh, chunk)


def sha256_fileobj(fh: BinaryIO, chunk: int = HASH_CHUNK_BYTES) -> tuple[str, int]:
    """(hex sha256, size) of the whole file behind an open binary file object: lets a reader hash and then load
    the very bytes it opened, whatever is renamed over the path meanwhile.

    A memory map hashed in one call releases the GIL for the whole digest; a read loop takes the GIL back for
    every chunk, which on a gateway whose event loop keeps the core busy made hashing a 500 MB model 3x slower.
    """
    try:
        fileno = fh.fileno()
        size = os.fstat(fileno).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        fileno, size = -1, 0
    if size > 0:
        with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest(), len(mapped)
    fh.seek(0)
    digest = hashlib.sha256()
    total = 0
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    while n := fh.readinto(buffer):  # type: ignore[attr-defined]
        digest.update(view[:n])
        total += n
    return digest.hexdigest(), total


def utc_now_rfc3339() -> str:
    """`created_at` for a manifest written now: second precision, UTC, "Z"."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
