"""How the native client (http1.py) treats upstreams: connection cap, pool wait, keep-alive, DNS TTL, proxies.

Process settings from the environment, read once at start-up like the edge limits (http/limits.py): the pool is
built once, so config keys a reload could not apply would mislead. A bad value stops the start with the variable
named (exit 2).

Proxies follow the usual convention: `https_proxy`/`HTTPS_PROXY` for https upstreams, `http_proxy`/`HTTP_PROXY`
for plain http ones, `all_proxy`/`ALL_PROXY` for both when those are unset (lower case wins), and
`no_proxy`/`NO_PROXY` (comma-separated host names, `.domain` suffixes, `host:port`, or `*`) goes direct. Every
upstream is reached through a CONNECT tunnel, so TLS stays end to end (certificates checked as without a proxy).
Only http:// proxy URLs: a proxy spoken to over TLS, or SOCKS, is refused at start rather than ignored.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from routeiq_shared.egress import EgressError, check_host_literal, parse_ip

from routeiq_gateway.env_numbers import positive_numbers_from_env


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: bytes | None = None  # the Proxy-Authorization header's value, from the URL's user:password

    def __repr__(self) -> str:  # never the credentials
        return f"Proxy({self.host}:{self.port})"


@dataclass(frozen=True, slots=True)
class Proxies:
    https: Proxy | None = None
    http: Proxy | None = None
    no_proxy: str = ""

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self.https if scheme == "https" else self.http
        if proxy is None:
            return None
        if self.no_proxy and bypasses(self.no_proxy, host, port):
            return None
        return proxy

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Proxies:
        def first(*names: str) -> tuple[str, str] | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return name, value
            return None

        fallback = first("all_proxy", "ALL_PROXY")
        https = first("https_proxy", "HTTPS_PROXY") or fallback
        http = first("http_proxy", "HTTP_PROXY") or fallback
        no = first("no_proxy", "NO_PROXY")
        return cls(
            https=_parse_proxy(*https) if https else None,
            http=_parse_proxy(*http) if http else None,
            no_proxy=no[1] if no else "",
        )


def bypasses(no_proxy: str, host: str, port: int) -> bool:
    """Whether NO_PROXY sends host:port direct: `*`, a host name or IP (optionally `:port`), a domain (`example.com`
    or `.example.com`: it and its subdomains), or an IP network in CIDR (`10.0.0.0/8`), as curl reads it."""
    host = host.lower().rstrip(".")
    addr = parse_ip(host)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if addr is not None and "/" in entry:
            try:
                if addr in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if entry.startswith("["):  # [v6]:port
            name, _, rest = entry[1:].partition("]")
            entry_port = rest.removeprefix(":")
        elif entry.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
            name, _, entry_port = entry.partition(":")
        else:
            name, entry_port = entry, ""
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".").rstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def _parse_proxy(name: str, url: str) -> Proxy:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{name}: not a valid proxy URL") from None
    shown = f"{parts.scheme}://{parts.hostname}" if parts.hostname else "it"  # never the user:password part
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"{name}: {shown} is not supported; give an http:// proxy URL (http://host:port): upstreams are reached "
            "through a CONNECT tunnel, so TLS to the upstream stays end to end"
        )
    try:
        check_host_literal(parts.hostname)
    except EgressError as exc:
        raise ValueError(f"{name}: {exc}") from None
    auth = None
    if parts.username is not None:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Basic " + base64.b64encode(user_pass.encode())
    return Proxy(parts.hostname, port or 80, auth)


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    # ROUTEIQ_UPSTREAM_MAX_CONNECTIONS: open connections to one origin (scheme, host, port, TLS settings).
    max_connections: int = 512
    # ROUTEIQ_UPSTREAM_POOL_WAIT_SECONDS: longest wait for a free connection at the cap; then a retryable 503.
    pool_wait: float = 5.0
    # ROUTEIQ_UPSTREAM_KEEP_ALIVE_SECONDS: how long an idle connection is reused when the upstream does not say
    # (`Keep-Alive: timeout=N`, else this); below the 5 s of uvicorn, Node and most servers.
    keep_alive: float = 4.0
    # ROUTEIQ_UPSTREAM_DNS_TTL_SECONDS: how long a host's addresses are reused for new connections.
    dns_ttl: float = 10.0
    proxies: Proxies = Proxies()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> UpstreamSettings:
        """The defaults, overridden by the environment. Raises ValueError naming the variable on a bad value."""
        return cls(**positive_numbers_from_env(cls, _ENV, env), proxies=Proxies.from_env(env))


_ENV = {
    "max_connections": "ROUTEIQ_UPSTREAM_MAX_CONNECTIONS",
    "pool_wait": "ROUTEIQ_UPSTREAM_POOL_WAIT_SECONDS",
    "keep_alive": "ROUTEIQ_UPSTREAM_KEEP_ALIVE_SECONDS",
    "dns_ttl": "ROUTEIQ_UPSTREAM_DNS_TTL_SECONDS",
}
