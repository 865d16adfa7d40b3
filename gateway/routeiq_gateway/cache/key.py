"""The cache key. Two requests share an entry only when all of these are equal:

- the tenant: the virtual key's team, else the key itself; the master key is a scope of its own, and a gateway
  without any key another (two teams sending the same prompt never share an entry);
- the model group: the name the client asked for, an alias resolved to its group (a virtual model such as
  `auto` is its own group: the cache answers before the router);
- the endpoint, and stream or not (a stream is replayed as the events it sent, a JSON body as its bytes); for a
  stream also `stream_options.include_usage` (it adds the usage event);
- the request, as canonical JSON: every field with its keys sorted at every level, integral numbers at the top
  level written as integers (`temperature: 1.0` == `1`), less what does not change the answer: `user`,
  `metadata`, `stream_options` (but include_usage, above), `cache` (the controls), `model` and `stream` (above).
  A file upload counts by its name, type and sha256.

The digest is in a Redis hash tag (`{…}`), so each command touches one cluster slot."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from routeiq_gateway.http.multipart import Upload
from routeiq_gateway.tenancy.records import VirtualKey

_NOISE = frozenset({"user", "metadata", "stream_options", "cache", "model", "stream"})
_PREFIX = "routeiq:cache:"


def tenant_of(vkey: VirtualKey | None, presented: bytes | None) -> str:
    """Whose entries these are: a team, a key without a team, the master key, or nobody (auth off)."""
    if vkey is not None:
        return f"team:{vkey.team_id}" if vkey.team_id else f"key:{vkey.id}"
    return "master" if presented is not None else "open"


def normalised(body: dict[str, Any]) -> bytes:
    """The request's canonical JSON, less the fields that do not change the answer. ValueError when it cannot be
    encoded (such a request is not cached)."""
    kept = {}
    for name, value in body.items():
        if name in _NOISE:
            continue
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        kept[name] = value
    try:
        return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS, default=_upload)
    except orjson.JSONEncodeError as exc:
        raise ValueError(str(exc)) from None


def cache_key(namespace: str, tenant: str, group: str, endpoint: str, stream: bool, body: dict[str, Any]) -> str:
    options = body.get("stream_options")
    usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    digest = hashlib.blake2b(digest_size=20)
    # NUL-separated: no field can run into the next
    digest.update(f"{tenant}\0{group}\0{endpoint}\0{int(stream)}{int(usage)}\0".encode())
    digest.update(normalised(body))
    return f"{namespace}:{_PREFIX}{{{digest.hexdigest()}}}" if namespace else f"{_PREFIX}{{{digest.hexdigest()}}}"


def _upload(value: Any) -> Any:
    if isinstance(value, Upload):
        return {"filename": value.filename, "content_type": value.content_type,
                "sha256": hashlib.sha256(value.data).hexdigest()}  # fmt: skip
    raise TypeError(f"{type(value).__name__} is not JSON")
