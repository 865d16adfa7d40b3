"""A stored answer: what kind (a JSON body, or the SSE events of a stream as they were sent), its content type,
the model group that answered, when it was stored, and the bytes. One value per entry, so one command reads or
writes it: `RQC1`, the header's length (4 bytes), the header (JSON), the body."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_MAGIC = b"RQC1"
_HEAD = len(_MAGIC) + 4


@dataclass(frozen=True, slots=True)
class Entry:
    stream: bool
    content_type: bytes
    group: str
    stored_at: float
    body: bytes


def encode(entry: Entry) -> bytes:
    head = orjson.dumps(
        {"s": entry.stream, "ct": entry.content_type.decode("latin-1"), "g": entry.group, "at": entry.stored_at}
    )
    return b"".join((_MAGIC, len(head).to_bytes(4, "big"), head, entry.body))


def decode(raw: bytes) -> Entry | None:
    """None for anything that is not an entry this code wrote (an older format, a foreign key): a miss."""
    if len(raw) < _HEAD or not raw.startswith(_MAGIC):
        return None
    size = int.from_bytes(raw[len(_MAGIC) : _HEAD], "big")
    try:
        head = orjson.loads(raw[_HEAD : _HEAD + size])
        return Entry(
            stream=bool(head["s"]),
            content_type=str(head["ct"]).encode("latin-1"),
            group=str(head["g"]),
            stored_at=float(head["at"]),
            body=raw[_HEAD + size :],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeEncodeError):
        return None
