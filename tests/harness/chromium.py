"""Debian's headless Chromium (/usr/bin/chromium), driven over its DevTools protocol with aiohttp's websocket client:
no browser download, no driver. `Chromium(tmp).start()`, then `async with chromium.page() as page:` —
`goto(url)`, `act(js)` (run script that navigates, e.g. a form submit, and wait for the new page to load),
`text(selector)`, `evaluate(js)`, `cookies()`, `screenshot(path)`. `stop()` ends the process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from harness.processes import ManagedProcess, wait_until

SETUP_HINT = "Chromium is missing: `make system-deps` installs Debian's chromium package."


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = orjson.loads(msg.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            elif data.get("method") == "Page.loadEventFired":
                self._loaded.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = fut
        await self.ws.send_str(orjson.dumps({"id": ident, "method": method, "params": params}).decode())  # text frames
        reply = await asyncio.wait_for(fut, 15)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def _until_loaded(self, method: str, **params: Any) -> None:
        self._loaded.clear()
        await self.send(method, **params)
        await asyncio.wait_for(self._loaded.wait(), 15)

    async def goto(self, url: str) -> None:
        await self._until_loaded("Page.navigate", url=url)

    async def act(self, script: str) -> None:
        """Run `script` (which makes the page navigate: a click on a submit button) and wait for the next page."""
        await self._until_loaded("Runtime.evaluate", expression=script)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def text(self, selector: str = "body") -> str:
        value = await self.evaluate(f"(document.querySelector({orjson.dumps(selector).decode()}) || {{}}).innerText")
        return str(value or "")

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def cookies(self) -> list[dict[str, Any]]:
        return list((await self.send("Network.getCookies"))["cookies"])

    async def screenshot(self, path: Path) -> None:
        data = (await self.send("Page.captureScreenshot", format="png"))["data"]
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data))


class Chromium:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.profile = root / "profile"
        self.process: ManagedProcess | None = None

    def start(self) -> Chromium:
        binary = find_chromium()
        if binary is None:
            raise RuntimeError(SETUP_HINT)
        self.profile.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--headless=new",
            "--no-sandbox",  # tests run as root in a container: Chromium's sandbox refuses root
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self.process = ManagedProcess(argv, self.root / "chromium.log", name="chromium").start()
        port_file = self.profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, timeout=30)
        self.port = int(port_file.read_text().splitlines()[0])
        return self

    @contextlib.asynccontextmanager
    async def page(self) -> AsyncIterator[Page]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
                targets = await resp.json()
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Network.enable")
                try:
                    yield page
                finally:
                    page._reader.cancel()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
