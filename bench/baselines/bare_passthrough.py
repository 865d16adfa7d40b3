"""The floor for a Python gateway: uvicorn + aiohttp forwarding a chat completion, with no features at all.

No auth check, no config, no routing, no metrics, no body parsing: request bytes in, upstream bytes out.
It is a reference figure in the same run as RouteIQ (the most a one-process Python proxy does on this
core), not a product. Run by bench/proxy_throughput.py as the `bare-python` target:

    python bench/baselines/bare_passthrough.py --port 4100 --upstream http://127.0.0.1:8080/v1/chat/completions
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAM_API_KEY = "sk-bench-upstream"


class PassThrough:
    """ASGI app: POST /v1/chat/completions goes upstream as-is; GET /health/readiness answers 200."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["path"] == "/v1/chat/completions":
            await self.forward(receive, send)
        else:
            await respond(send, 200, b'{"status":"ok"}')

    async def lifespan(self, receive: Receive, send: Send) -> None:
        # The session (and its keep-alive pool to the upstream) is made inside the server's event loop.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def forward(self, receive: Receive, send: Send) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        assert self.session is not None
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_API_KEY}"}
        async with self.session.post(self.upstream_url, data=body, headers=headers) as upstream:
            await respond(send, upstream.status, await upstream.read())


async def respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="full URL of the upstream's /v1/chat/completions")
    args = parser.parse_args()
    # uvloop and httptools when installed (they are, with uvicorn[standard]); no access log, as a tuned proxy.
    uvicorn.run(PassThrough(args.upstream), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
