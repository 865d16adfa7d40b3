"""A streamed answer's events kept as they are sent, to store once the stream has ended well; past the entry
bound it stops keeping them (such a stream is not cached)."""

from __future__ import annotations


class Capture:
    __slots__ = ("limit", "over", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.over = False

    def add(self, chunk: bytes) -> None:
        if self.over:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.over = True
            self.parts.clear()
        else:
            self.parts.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.parts)
