"""Where RouteIQ's processes may send requests: never to link-local or cloud metadata addresses, and to private
ranges only where allow-listed.

A URL is checked twice. At config load its host is checked as written (`check_url_literal`), so a config that names
a metadata address in any spelling (decimal `2852039166`, octal `0251.0376.0251.0376`, hex `0xa9fea9fe`, short
`169.254.43518`, IPv4-mapped IPv6 `::ffff:169.254.169.254`) is refused with its key's path. At connect time the
host is resolved and every address it resolves to is checked (`EgressPolicy.resolve`), and the caller connects to
a checked address: a DNS name that points at 169.254.169.254 (or is rebound to it later) is refused too.

Loopback and the private ranges (RFC 1918, unique-local IPv6, CGNAT, …) are refused unless allow-listed, because a
gateway that proxies to them on a config's say-so is a way into the cluster; in-cluster model servers are
allow-listed by CIDR (`ROUTEIQ_EGRESS_ALLOWED_NETWORKS` or `routeiq.egress.allowed_networks`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ENV_ALLOWED_NETWORKS = "ROUTEIQ_EGRESS_ALLOWED_NETWORKS"

# Never reachable, whatever is allow-listed: link-local (where every cloud's metadata service lives) and AWS's
# IPv6 metadata address.
FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
FORBIDDEN_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"})


class EgressError(ValueError):
    """An outbound destination RouteIQ refuses. The message names the host, never credentials."""


def parse_ip(host: str) -> IPAddress | None:
    """The address a host string denotes if it is an IP literal, in any spelling a resolver would accept."""
    text = host.strip().strip("[]")
    text = text.split("%", 1)[0]  # an IPv6 zone id does not change the address
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is None:
        # inet_aton takes the legacy spellings getaddrinfo also takes: 2852039166, 0xa9fea9fe, 0251.0376.0251.0376,
        # 169.254.43518. A hostname made of letters is not one of them (digits, dots and 0x only).
        if not text or any(c not in "0123456789abcdefxABCDEFX." for c in text):
            return None
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return _unmapped(addr)


def _unmapped(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        # IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks)
        if int(addr) >> 32 == 0 and int(addr) > 0xFFFF:
            return ipaddress.IPv4Address(int(addr))
    return addr


def is_forbidden_address(addr: IPAddress) -> bool:
    addr = _unmapped(addr)
    return any(addr in net for net in FORBIDDEN_NETWORKS if net.version == addr.version)


def is_forbidden_hostname(host: str) -> bool:
    return host.strip().strip("[]").rstrip(".").lower() in FORBIDDEN_HOSTNAMES


def _is_private(addr: IPAddress) -> bool:
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_reserved
        or addr.is_unspecified
        or addr.is_multicast
        or (isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT)
    )


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def check_host_literal(host: str) -> None:
    """Refuse a host that is, as written, a metadata name or a link-local/metadata address. No DNS."""
    if is_forbidden_hostname(host):
        raise EgressError(f"{host!r} is a cloud metadata host; RouteIQ never sends requests there")
    addr = parse_ip(host)
    if addr is not None and is_forbidden_address(addr):
        raise EgressError(f"{host!r} is a link-local or metadata address ({addr}); RouteIQ never sends requests there")


def check_url_literal(url: str, schemes: Iterable[str] = ("http", "https")) -> None:
    """A URL that can work at all (scheme, host) and whose host is not forbidden as written."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressError(f"not a valid URL: {exc}") from None
    allowed = tuple(schemes)
    if not parts.scheme or not parts.netloc:
        raise EgressError(f"not a URL: it needs a scheme and a host ({' or '.join(s + '://' for s in allowed)}…)")
    if parts.scheme.lower() not in allowed:
        raise EgressError(f"URL scheme must be one of {', '.join(allowed)} (got {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise EgressError("URL has no host")
    if port == 0:
        raise EgressError("URL port 0 is not a port")
    check_host_literal(parts.hostname)


def check_setting_url(name: str, url: str, schemes: Iterable[str] = ("http", "https")) -> str:
    """A URL from a setting (`name`, e.g. an environment variable): checked as `check_url_literal` does, the error
    naming the setting. `unix://` sockets, where a scheme allows them, have no host to check."""
    allowed = tuple(schemes)
    if "unix" in allowed and url.lower().startswith("unix:"):
        return url
    try:
        check_url_literal(url, allowed)
    except EgressError as exc:
        raise EgressError(f"{name}: {exc}") from None
    return url


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses); raises ValueError naming the bad entry."""
    out: list[IPNetwork] = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not a network (CIDR) or address") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which resolved addresses a process may connect to."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def internal(cls) -> EgressPolicy:
        """For calls that stay inside the cluster by design (the sidecars to the gateway's admin endpoint, to S3 or
        Redis endpoints the operator named): any address but link-local and metadata ones."""
        return cls(parse_networks(["0.0.0.0/0", "::/0"]))

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra: Iterable[str] = ()) -> EgressPolicy:
        return cls(parse_networks([*env.get(ENV_ALLOWED_NETWORKS, "").split(","), *extra]))

    def check_address(self, addr: IPAddress, host: str = "") -> None:
        addr = _unmapped(addr)
        shown = f"{host!r} ({addr})" if host and host != str(addr) else str(addr)
        if is_forbidden_address(addr):
            raise EgressError(f"{shown} is a link-local or metadata address; RouteIQ never sends requests there")
        if _is_private(addr) and not any(addr in n for n in self.allowed_networks if n.version == addr.version):
            raise EgressError(
                f"{shown} is a private or loopback address and not allow-listed "
                f"({ENV_ALLOWED_NETWORKS} or routeiq.egress.allowed_networks)"
            )

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """Resolve `host` and check every address; returns (family, address) pairs to connect to, in order."""
        if is_forbidden_hostname(host):
            raise EgressError(f"{host!r} is a cloud metadata host; RouteIQ never sends requests there")
        literal = parse_ip(host)
        if literal is not None:
            self.check_address(literal, host)
            try:  # connect to the address as written when it is a standard literal (an IPv6 one stays IPv6)
                written: IPAddress = ipaddress.ip_address(host.strip().strip("[]").split("%", 1)[0])
            except ValueError:
                written = literal  # a legacy IPv4 spelling, read as the resolver would read it
            return [(socket.AF_INET6 if written.version == 6 else socket.AF_INET, str(written))]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"cannot resolve {host}: {exc.strerror}") from None
        out: list[tuple[int, str]] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            address = str(sockaddr[0])
            self.check_address(ipaddress.ip_address(address.split("%", 1)[0]), host)
            if (family, address) not in out:
                out.append((family, address))
        if not out:
            raise OSError(f"cannot resolve {host}: no addresses")
        return out
