"""The bounded in-memory LRU: the whole store with `type: local`, Redis's stand-in while Redis is unset or down.

Bounded by entries and by bytes (routeiq.cache.local_max_entries / local_max_bytes); the least recently used
go first. Entries expire at their ttl (checked when read, and evicted as the bounds need)."""

from __future__ import annotations

from collections import OrderedDict


class LocalLRU:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key → (expires at, value)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, now: float) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= now:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, value: bytes, ttl: float, now: float) -> bool:
        """False when the value alone is over the byte bound (not kept)."""
        if len(value) > self.max_bytes:
            return False
        if key in self._items:
            self._drop(key)
        self._items[key] = (now + ttl, value)
        self.bytes += len(value)
        self._evict()
        return True

    def resize(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._evict()

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def _evict(self) -> None:
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            _, (_, value) = self._items.popitem(last=False)
            self.bytes -= len(value)

    def _drop(self, key: str) -> None:
        _, value = self._items.pop(key)
        self.bytes -= len(value)
