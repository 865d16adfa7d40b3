"""Where Redis is and how to reach it, read once from the environment and shared by every part that talks to it
(the gateway's limits and key invalidation, its response cache, model-sync's download permits).

Three modes, one set of variables (docs/redis.md has the table):

- **standalone** — `REDIS_URL`: `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS), or
  `unix:///path/to.sock[?db=N]`.
- **Sentinel** — `REDIS_SENTINELS=host:port,host:port,…` and `REDIS_SENTINEL_MASTER=<name>`; the master is asked of
  the sentinels on every (re)connect, so a failover is followed without a restart. `REDIS_URL` is then not set (the
  sentinels say where the master is); the master's database is `REDIS_DB`.
- **Cluster** — `REDIS_CLUSTER=1` with `REDIS_URL` naming any one node (`redis://` or `rediss://`, database 0):
  the rest are discovered from it.

In every mode: `REDIS_USERNAME` / `REDIS_PASSWORD` (an ACL user; they take the place of the URL's, so a password
can come from a Secret without URL-escaping); TLS (`rediss://`, or `REDIS_TLS=1` in Sentinel mode) verified against
`REDIS_TLS_CA_FILE` (else the system's CAs) with an optional client certificate `REDIS_TLS_CERT_FILE` +
`REDIS_TLS_KEY_FILE`. TLS options are variables rather than URL query options: one spelling for all three modes,
and a chart mounts them from a Secret. Sentinels: `REDIS_SENTINEL_USERNAME` / `REDIS_SENTINEL_PASSWORD`,
`REDIS_SENTINEL_TLS=1` (same CA and client certificate).

A bad value raises `RedisSettingsError` naming the variable; a password is never part of a message or `repr`."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from redis.exceptions import RedisClusterException, RedisError

from routeiq_shared.egress import EgressError, check_host_literal

Mode = Literal["standalone", "sentinel", "cluster"]

# What a call to Redis can raise when Redis is away, in any mode: redis-py's cluster client raises
# RedisClusterException (not a RedisError) when no node can be reached.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class RedisSettingsError(ValueError):
    """A Redis setting that cannot work; the message names the variable and never holds a password."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None

    def context(self) -> ssl.SSLContext:
        """Verifies the server's certificate and name; presents the client certificate when one is set."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def redis_py(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
            "ssl_check_hostname": True,
        }


@dataclass(frozen=True, slots=True)
class RedisSettings:
    mode: Mode
    host: str | None = None  # standalone and cluster (a seed node); None with a unix socket
    port: int = 6379
    path: str | None = None  # unix socket
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsFiles | None = None  # to the data nodes (the master, every cluster node)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_tls: TlsFiles | None = None  # to the sentinels

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RedisSettings | None:
        """None when Redis is not configured at all (every part then runs on its local fallback)."""
        env = os.environ if env is None else env
        url = env.get("REDIS_URL", "").strip()
        sentinels = env.get("REDIS_SENTINELS", "").strip()
        cluster = _flag(env, "REDIS_CLUSTER")
        if sentinels and url:
            raise RedisSettingsError(
                "REDIS_URL and REDIS_SENTINELS are both set: with Sentinel the sentinels say where the master is "
                "(set REDIS_SENTINELS and REDIS_SENTINEL_MASTER, and leave REDIS_URL unset)"
            )
        if sentinels and cluster:
            raise RedisSettingsError("REDIS_CLUSTER and REDIS_SENTINELS are both set: choose one mode")
        sentinel_only = (
            "REDIS_SENTINEL_MASTER",
            "REDIS_SENTINEL_USERNAME",
            "REDIS_SENTINEL_PASSWORD",
            "REDIS_SENTINEL_TLS",
        )
        for name in (*sentinel_only, "REDIS_TLS"):
            if env.get(name, "").strip() and not sentinels:
                why = " (with REDIS_URL, TLS is its rediss:// scheme)" if name == "REDIS_TLS" else ""
                raise RedisSettingsError(f"{name} is set but REDIS_SENTINELS is not{why}")
        if not url and not sentinels:
            if cluster:
                raise RedisSettingsError("REDIS_CLUSTER is set but REDIS_URL (any one node of the cluster) is not")
            for name in ("REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_TLS_CA_FILE", "REDIS_DB"):
                if env.get(name, "").strip():
                    raise RedisSettingsError(f"{name} is set but neither REDIS_URL nor REDIS_SENTINELS is")
            return None
        if sentinels:
            return _sentinel(env, sentinels)
        return _from_url(env, url, cluster)

    @property
    def target(self) -> str:
        """Where Redis is, for logs and health: never a credential."""
        if self.mode == "sentinel":
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {self.master_name} via {hosts}"
        where = f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"
        scheme = "rediss" if self.tls else "redis"
        return f"{'cluster ' if self.mode == 'cluster' else ''}{scheme}://{where}/{self.db}"

    def client(self, **options: Any) -> Any:
        """A redis-py asyncio client in this mode (`Redis`, Sentinel's `master_for`, or `RedisCluster`), with
        `options` (timeouts, retry, decode_responses, …) passed to its connections. Opens nothing until used."""
        import redis.asyncio as aioredis

        auth: dict[str, Any] = {"username": self.username, "password": self.password}
        tls = self.tls.redis_py() if self.tls else {}
        if self.mode == "cluster":
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster(host=self.host, port=self.port, **auth, **tls, **options)
        if self.mode == "sentinel":
            from redis.asyncio.sentinel import Sentinel

            sentinel_options = {
                "username": self.sentinel_username,
                "password": self.sentinel_password,
                **{k: v for k, v in options.items() if k.startswith("socket_")},
            }
            if self.sentinel_tls:
                sentinel_options.update(self.sentinel_tls.redis_py())
            manager = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_options)
            return manager.master_for(str(self.master_name), db=self.db, **auth, **tls, **options)
        # As from_url and Sentinel's pool do: a failed call fails at once (no retries with backoff), since every
        # caller has its own fallback and must not be held seconds by a Redis that is down.
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options.setdefault("retry", Retry(NoBackoff(), 0))
        if self.path:
            return aioredis.Redis(unix_socket_path=self.path, db=self.db, **auth, **options)
        return aioredis.Redis(host=str(self.host), port=self.port, db=self.db, **auth, **tls, **options)

    def connection_kwargs(self) -> dict[str, Any]:
        """Standalone only: the arguments of a redis-py asyncio connection pool (for a pool class of the caller's
        choosing, such as BlockingConnectionPool): where, who, and TLS."""
        from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

        if self.mode != "standalone":
            raise ValueError(f"connection_kwargs() is for a standalone Redis, not {self.mode}: use client()")
        out: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        if self.path:
            return {**out, "connection_class": UnixDomainSocketConnection, "path": self.path}
        out.update(host=str(self.host), port=self.port, connection_class=Connection)
        if self.tls:
            tls = self.tls.redis_py()
            del tls["ssl"]
            out.update(connection_class=SSLConnection, **tls)
        return out

    def node_client(self, host: str, port: int, **options: Any) -> Any:
        """A plain client to one node (a cluster's, for pub/sub), with this mode's credentials and TLS."""
        import redis.asyncio as aioredis

        tls = self.tls.redis_py() if self.tls else {}
        return aioredis.Redis(host=host, port=port, username=self.username, password=self.password, **tls, **options)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise RedisSettingsError(f"{name}: expected 1/0, true/false, yes/no or on/off, got {raw[:40]!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RedisSettingsError(f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise RedisSettingsError(f"{name}: {value} is outside {low}..{high}")
    return value


def _host(name: str, host: str) -> str:
    if not host:
        raise RedisSettingsError(f"{name}: no host")
    try:  # never a link-local or metadata address
        check_host_literal(host)
    except EgressError as exc:
        raise RedisSettingsError(f"{name}: {exc}") from None
    return host


def _port(name: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise RedisSettingsError(f"{name}: port {raw[:20]!r} is not a number") from None
    if not 0 < port < 65536:
        raise RedisSettingsError(f"{name}: port {port} is outside 1..65535")
    return port


def _readable(name: str, path: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise RedisSettingsError(f"{name}: {path!r} is not a readable file")
    return path


def _tls(env: Mapping[str, str], wanted: bool) -> TlsFiles | None:
    ca = env.get("REDIS_TLS_CA_FILE", "").strip() or None
    cert = env.get("REDIS_TLS_CERT_FILE", "").strip() or None
    key = env.get("REDIS_TLS_KEY_FILE", "").strip() or None
    if not wanted:
        for name, value in (("REDIS_TLS_CA_FILE", ca), ("REDIS_TLS_CERT_FILE", cert), ("REDIS_TLS_KEY_FILE", key)):
            if value:
                raise RedisSettingsError(
                    f"{name} is set but the connection is not TLS (use rediss://, or REDIS_TLS=1 with Sentinel)"
                )
        return None
    if bool(cert) != bool(key):
        raise RedisSettingsError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither")
    files = TlsFiles(
        _readable("REDIS_TLS_CA_FILE", ca) if ca else None,
        _readable("REDIS_TLS_CERT_FILE", cert) if cert else None,
        _readable("REDIS_TLS_KEY_FILE", key) if key else None,
    )
    try:  # a CA or key pair that does not load fails here, at start, not at the first request
        files.context()
    except (ssl.SSLError, OSError) as exc:
        raise RedisSettingsError(f"REDIS_TLS_*: the CA file or client certificate does not load: {exc}") from None
    return files


def _credentials(env: Mapping[str, str], username: str | None, password: str | None) -> tuple[str | None, ...]:
    username = env.get("REDIS_USERNAME", "").strip() or username
    password = env.get("REDIS_PASSWORD", "") or password
    if username and not password:
        raise RedisSettingsError("REDIS_USERNAME (or the URL's user) is set without a password")
    return username, password


def _from_url(env: Mapping[str, str], url: str, cluster: bool) -> RedisSettings:
    try:
        parts = urlsplit(url)
        port_raw = parts.port if parts.scheme != "unix" else None
    except ValueError:
        raise RedisSettingsError("REDIS_URL: not a valid URL (its port is not a number in 1..65535)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise RedisSettingsError(
            f"REDIS_URL: scheme {scheme + '://' if scheme else '(none)'} is not one of redis://, rediss://, unix://"
        )
    if parts.fragment:
        raise RedisSettingsError("REDIS_URL: a #fragment has no meaning here")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - ({"db"} if scheme == "unix" else set()))
    if unknown:
        raise RedisSettingsError(
            f"REDIS_URL: query option(s) {', '.join(unknown)} not supported (TLS files come from REDIS_TLS_*; the "
            "database is the path, or ?db= for unix://)"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password == "":
        password = None
    username, password = _credentials(env, username, password)
    if env.get("REDIS_DB", "").strip():
        raise RedisSettingsError("REDIS_DB is for Sentinel mode; with REDIS_URL the database is the URL's path")
    if scheme == "unix":
        if cluster:
            raise RedisSettingsError("REDIS_URL: a cluster is reached over TCP (redis:// or rediss://), not unix://")
        if not parts.path:
            raise RedisSettingsError("REDIS_URL: unix:// needs a socket path (unix:///run/redis/redis.sock)")
        db = _db("REDIS_URL", (query.get("db") or ["0"])[-1])
        _tls(env, False)
        return RedisSettings("standalone", path=parts.path, db=db, username=username, password=password)
    host = _host("REDIS_URL", parts.hostname or "")
    path = parts.path.strip("/")
    db = _db("REDIS_URL", path or "0")
    if cluster and db != 0:
        raise RedisSettingsError("REDIS_URL: a Redis Cluster has only database 0")
    return RedisSettings(
        "cluster" if cluster else "standalone",
        host=host,
        port=port_raw or 6379,
        db=db,
        username=username,
        password=password,
        tls=_tls(env, scheme == "rediss"),
    )


def _db(name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) > 1_000_000:
        raise RedisSettingsError(f"{name}: database {raw[:20]!r} is not a number")
    return int(raw)


def _sentinel(env: Mapping[str, str], raw: str) -> RedisSettings:
    hosts: list[tuple[str, int]] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep:
            host, port = entry, "26379"
        host = host.strip("[]")
        hosts.append((_host("REDIS_SENTINELS", host), _port("REDIS_SENTINELS", port)))
    if not hosts:
        raise RedisSettingsError("REDIS_SENTINELS: no sentinel given (host:port,host:port,…)")
    master = env.get("REDIS_SENTINEL_MASTER", "").strip()
    if not master:
        raise RedisSettingsError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER (the master's name) is not")
    if any(ch.isspace() for ch in master):
        raise RedisSettingsError("REDIS_SENTINEL_MASTER: a master name has no whitespace")
    username, password = _credentials(env, None, None)
    s_user = env.get("REDIS_SENTINEL_USERNAME", "").strip() or None
    s_password = env.get("REDIS_SENTINEL_PASSWORD", "") or None
    if s_user and not s_password:
        raise RedisSettingsError("REDIS_SENTINEL_USERNAME is set without REDIS_SENTINEL_PASSWORD")
    tls_wanted = _flag(env, "REDIS_TLS")
    sentinel_tls = _flag(env, "REDIS_SENTINEL_TLS")
    files = _tls(env, tls_wanted or sentinel_tls)
    return RedisSettings(
        "sentinel",
        db=_int(env, "REDIS_DB", 0, 0, 1_000_000),
        username=username,
        password=password,
        tls=files if tls_wanted else None,
        sentinels=tuple(hosts),
        master_name=master,
        sentinel_username=s_user,
        sentinel_password=s_password,
        sentinel_tls=files if sentinel_tls else None,
    )
