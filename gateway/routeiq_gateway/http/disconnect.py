"""Notice a client that goes away while the gateway waits on upstream, and stop waiting for it.

uvicorn answers `receive()` with `http.disconnect` once the connection is lost; after the whole body has been
read nothing else can arrive. Watching costs one small task per request, and frees the in-flight slot and the
upstream call at once instead of at the upstream timeout.
"""

from __future__ import annotations

import asyncio

from routeiq_gateway.http.asgi import Receive


class DisconnectWatch:
    """Cancels the current task when the client disconnects. Call `stop()` before sending the response: uvicorn
    answers `receive()` with a disconnect once the response is complete too."""

    __slots__ = ("_task", "_watch", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watch = asyncio.ensure_future(self._wait(receive))

    async def _wait(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        self._watch.cancel()

    def acknowledge(self) -> None:
        """The cancellation came from this watch: take it back, so the request ends as a 499 and not cut short."""
        if self._task is not None:
            self._task.uncancel()
