"""Start the fake upstream as a real process and drive its /_control API from tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import openai

from .processes import ManagedProcess, child_env, free_port

FAKE_UPSTREAM_SCRIPT = Path(__file__).with_name("fake_upstream.py")


class FakeUpstreamError(RuntimeError):
    """The control API refused a call (e.g. an unknown rule field)."""


class FakeUpstream:
    """Handle on one running fake upstream process.

    root_url  http://127.0.0.1:PORT      (what litellm's anthropic provider wants as api_base)
    base_url  http://127.0.0.1:PORT/v1   (what the openai SDK / an OpenAI-compatible api_base wants)
    """

    def __init__(self, process: ManagedProcess, host: str, port: int) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.root_url = f"http://{host}:{port}"
        self.base_url = f"{self.root_url}/v1"
        self._http = httpx.Client(base_url=self.root_url, timeout=10.0, trust_env=False)

    @classmethod
    def start(cls, log_dir: Path, latency_ms: int = 0, host: str = "127.0.0.1", timeout: float = 15.0) -> FakeUpstream:
        port = free_port(host)
        argv = [sys.executable, str(FAKE_UPSTREAM_SCRIPT), "--host", host, "--port", str(port)]
        if latency_ms:
            argv += ["--latency-ms", str(latency_ms)]
        process = ManagedProcess(argv, Path(log_dir) / "fake_upstream.log", env=child_env(), name="fake_upstream")
        process.start_http_ok(f"http://{host}:{port}/_control/health", timeout=timeout)
        return cls(process, host, port)

    # -- behaviour control ------------------------------------------------------------------------------

    def add_rule(self, **rule: Any) -> None:
        """Add one rule; fields as in fake_upstream.Rule, e.g. add_rule(model="m", status=429, times=1)."""
        self._call("POST", "/_control/rules", json=rule)

    def add_rules(self, rules: list[dict[str, Any]]) -> None:
        self._call("POST", "/_control/rules", json=rules)

    def rules(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_control/rules")

    def clear_rules(self) -> None:
        self._call("DELETE", "/_control/rules")

    # -- request log ------------------------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Logged /v1 requests, oldest first: {path, method, headers, body, ts}; optionally one path only."""
        entries: list[dict[str, Any]] = self._call("GET", "/_control/requests")
        return entries if path is None else [e for e in entries if e["path"] == path]

    def clear_requests(self) -> None:
        self._call("DELETE", "/_control/requests")

    def reset(self) -> None:
        """Clear rules and the request log (one round trip)."""
        self._call("POST", "/_control/reset")

    # -- clients ----------------------------------------------------------------------------------------

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        """An SDK client pointed straight at the fake (no retries, so injected errors surface as-is)."""
        kwargs.setdefault("api_key", "sk-fake")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 10.0)
        return openai.OpenAI(base_url=self.base_url, **kwargs)

    # -- lifecycle --------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._http.close()
        self.process.stop()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        resp = self._http.request(method, path, json=json)
        if resp.status_code != 200:
            raise FakeUpstreamError(f"{method} {path} -> {resp.status_code}: {resp.text}")
        return resp.json()

    def __repr__(self) -> str:
        return f"<FakeUpstream {self.base_url} {self.process!r}>"
