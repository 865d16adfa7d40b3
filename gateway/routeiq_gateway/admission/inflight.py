"""Counts of requests and streams in progress: read by shedding, drain and the metrics gauges."""

from __future__ import annotations

import asyncio


class InFlight:
    __slots__ = ("_idle", "requests", "streams")

    def __init__(self) -> None:
        self.requests = 0
        self.streams = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.requests += 1
        self._idle.clear()

    def leave(self) -> None:
        self.requests -= 1
        if self.requests == 0:
            self._idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        """True when every request finished within `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
