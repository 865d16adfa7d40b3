"""A minimal RESP client for the limits' pipelined script calls (script_batch.py): a batch of commands written at
once, their replies parsed from one buffer. redis-py's general parser cost more CPU per reply than the rest of a
limit check; the replies here are only what the scripts answer (a string, an integer or an error), and the arrays
of the few setup commands (SENTINEL, ROLE, CLUSTER SLOTS).

Where Redis is comes from routeiq_shared.redis_settings, in its three modes:
- standalone: one connection to REDIS_URL (redis://, rediss://, unix://; ACL user and password, database);
- Sentinel: the master is asked of the sentinels on every (re)connect and checked with ROLE; the limiter asks them
  again every second (follow) and a READONLY reply (a master demoted under an open connection) drops the
  connection: either way the next call finds the new master;
- Cluster (ClusterWire): the slot map from CLUSTER SLOTS; each command goes to the node of its first key's slot,
  a pipelined batch split per node and sent to all of them at once; MOVED updates the map and resends, ASK
  resends once to the importing node behind ASKING."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from routeiq_shared.redis_settings import RedisSettings

_READ = 65536
_SENTINEL_TIMEOUT = 0.5  # per sentinel asked; a dead one is skipped for the next
_REDIRECTS = 5
Address = tuple[str, int]


def pack(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def _error(line: bytes) -> ResponseError:
    text = line.decode(errors="replace")
    return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)


def parse_one(data: bytes | bytearray, pos: int) -> tuple[Any, int] | None:
    """(the reply at `pos`, where the next one starts), or None when it has not all arrived yet."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = data[pos], bytes(data[pos + 1 : end])
    if kind == 0x24:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(data) < stop + 2:
            return None
        return bytes(data[end + 2 : stop]), stop + 2
    if kind == 0x3A:  # : integer
        return int(line), end + 2
    if kind == 0x2B:  # + simple string
        return line, end + 2
    if kind == 0x2D:  # - error
        return _error(line), end + 2
    if kind == 0x2A:  # * array (setup commands only)
        size, at, items = int(line), end + 2, []
        if size < 0:
            return None, at
        for _ in range(size):
            parsed = parse_one(data, at) if at < len(data) else None
            if parsed is None:
                return None
            item, at = parsed
            items.append(item)
        return items, at
    raise RedisConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")


def first_key(command: bytes) -> bytes | None:
    """The first key of an EVALSHA/EVAL in RESP (what a cluster routes it by); None for a command without keys."""
    parts: list[bytes] = []
    pos = command.find(b"\r\n") + 2
    while len(parts) < 4:
        parsed = parse_one(command, pos) if pos < len(command) else None
        if parsed is None:
            break
        item, pos = parsed
        parts.append(item)
    if len(parts) == 4 and parts[0].upper() in (b"EVALSHA", b"EVAL") and int(parts[2]) > 0:
        return parts[3]
    return None


async def _ask_sentinel(settings: RedisSettings, address: Address, tls: ssl.SSLContext | None) -> Address | None:
    host, port = address
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        commands = []
        if settings.sentinel_password:
            user = [settings.sentinel_username.encode()] if settings.sentinel_username else []
            commands.append(pack(b"AUTH", *user, settings.sentinel_password.encode()))
        commands.append(pack(b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", str(settings.master_name).encode()))
        writer.write(b"".join(commands))
        replies = await _read_from(reader, bytearray(), len(commands))
    finally:
        writer.close()
    if isinstance(replies[0], ResponseError):
        raise RedisConnectionError(f"sentinel {host}:{port} refused: {replies[0]}")
    found = replies[-1]
    if not isinstance(found, list) or len(found) != 2:
        return None
    return found[0].decode(), int(found[1])


async def _read_from(reader: asyncio.StreamReader, buf: bytearray, count: int) -> list[Any]:
    replies: list[Any] = []
    pos = 0
    while len(replies) < count:
        parsed = parse_one(buf, pos) if pos < len(buf) else None
        if parsed is None:
            chunk = await reader.read(_READ)
            if not chunk:
                raise RedisConnectionError("Redis closed the connection")
            buf += chunk
            continue
        reply, pos = parsed
        replies.append(reply)
    del buf[:pos]
    return replies


class RespConnection:
    """One connection: to `address` when given (a cluster node), else to where `settings` say (the URL's host, or
    Sentinel's master at connect time). Not for concurrent use: script_batch's one flusher is its only caller."""

    def __init__(self, settings: RedisSettings, address: Address | None = None) -> None:
        self.settings = settings
        self.address = address
        self._tls = settings.tls.context() if settings.tls else None
        self._sentinel_tls = settings.sentinel_tls.context() if settings.sentinel_tls else None
        self._sentinels = list(settings.sentinels)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self._connected_to: Address | None = None
        self._stale = False  # the sentinels name another master: the next call reconnects

    async def roundtrip(self, commands: list[bytes]) -> list[Any]:
        """The commands' replies, in order; an error reply is returned, not raised. Any failure on the way closes
        the connection (the next call opens a new one)."""
        replies = await self.exchange(b"".join(commands), len(commands))
        if any(isinstance(r, ResponseError) and str(r).startswith("READONLY") for r in replies):
            self.close()  # a demoted master: the next connection asks the sentinels again
        return replies

    async def broadcast(self, commands: list[bytes]) -> list[Any]:
        return await self.roundtrip(commands)

    async def probe(self) -> None:
        """Raises unless a new connection, made as the next one will be, answers PING."""
        fresh = RespConnection(self.settings, self.address)
        try:
            (reply,) = await fresh.roundtrip([pack(b"PING")])
            if isinstance(reply, Exception):
                raise reply
        finally:
            fresh.close()

    async def follow(self) -> None:
        """Sentinel: when the sentinels name another master than the one this connection is on, the next call
        reconnects. Without it writes would go on reaching a master until it is demoted (READONLY), and what
        they wrote there in the meantime is lost when it turns replica of the new one."""
        if self.settings.mode != "sentinel" or self._connected_to is None:
            return
        if await self._where() != self._connected_to:
            self._stale = True

    async def exchange(self, data: bytes, count: int) -> list[Any]:
        if self._stale:
            self.close()
        try:
            if self._writer is None:
                await self._open()
            assert self._writer is not None
            self._writer.write(data)
            return await self._read(count)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._buffer.clear()
        self._connected_to, self._stale = None, False

    async def _where(self) -> Address | None:
        """(host, port) to connect to; None for the unix socket."""
        s = self.settings
        if self.address is not None:
            return self.address
        if s.mode != "sentinel":
            return None if s.path else (str(s.host), s.port)
        failures = []
        for i, sentinel in enumerate(self._sentinels):
            try:
                async with asyncio.timeout(_SENTINEL_TIMEOUT):
                    found = await _ask_sentinel(s, sentinel, self._sentinel_tls)
            except (OSError, TimeoutError, RedisConnectionError) as exc:
                failures.append(f"{sentinel[0]}:{sentinel[1]}: {type(exc).__name__}")
                continue
            if found is not None:
                if i:  # the sentinel that answered is asked first next time
                    self._sentinels.insert(0, self._sentinels.pop(i))
                return found
            failures.append(f"{sentinel[0]}:{sentinel[1]}: does not know master {s.master_name!r}")
        raise RedisConnectionError("no sentinel gave the master's address (" + "; ".join(failures) + ")")

    async def _open(self) -> None:
        s = self.settings
        where = await self._where()
        if where is None:
            self._reader, self._writer = await asyncio.open_unix_connection(s.path)
        else:
            self._reader, self._writer = await asyncio.open_connection(where[0], where[1], ssl=self._tls)
        setup = []
        if s.password:
            auth = [s.username.encode()] if s.username else []
            setup.append(pack(b"AUTH", *auth, s.password.encode()))
        if s.db:
            setup.append(pack(b"SELECT", str(s.db).encode()))
        if s.mode == "sentinel":
            setup.append(pack(b"ROLE"))
            self._connected_to = where
        if setup:
            self._writer.write(b"".join(setup))
            replies = await self._read(len(setup))
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise RedisConnectionError(f"Redis refused the connection setup: {reply}")
            if s.mode == "sentinel" and not (isinstance(replies[-1], list) and replies[-1][:1] == [b"master"]):
                # Sentinel's answer is older than a failover still under way: ask again at the next call.
                raise RedisConnectionError(f"{where[0]}:{where[1]} is not the master (yet)" if where else "not master")

    async def _read(self, count: int) -> list[Any]:
        assert self._reader is not None
        return await _read_from(self._reader, self._buffer, count)


class ClusterWire:
    """The same calls as RespConnection, on a Redis Cluster: one connection per master node."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.seed: Address = (str(settings.host), settings.port)
        self._slots: list[Address] | None = None
        self._nodes: dict[Address, RespConnection] = {}

    async def roundtrip(self, commands: list[bytes]) -> list[Any]:
        slots = self._slots or await self._refresh()
        target: list[Address] = []
        for command in commands:
            key = first_key(command)
            target.append(slots[key_slot(key)] if key is not None else self.seed)
        return await self._route(commands, target)

    async def broadcast(self, commands: list[bytes]) -> list[Any]:
        """The commands on every master (SCRIPT LOAD); the replies of the first, an error of any."""
        slots = self._slots or await self._refresh()
        masters = sorted(set(slots))
        answers = _all_or_raise(
            await asyncio.gather(*(self._node(a).roundtrip(commands) for a in masters), return_exceptions=True)
        )
        for replies in answers:
            for reply in replies:
                if isinstance(reply, Exception):
                    return replies
        return answers[0]

    async def follow(self) -> None:
        """Nothing to do: a moved slot answers MOVED, and the map is read again."""

    async def probe(self) -> None:
        """Raises unless every master answers and says the cluster is whole (else its scripts get CLUSTERDOWN)."""
        fresh = ClusterWire(self.settings)
        try:
            slots = await fresh._refresh(list(self._nodes))
            for address in sorted(set(slots)):
                (info,) = await fresh._node(address).roundtrip([pack(b"CLUSTER", b"INFO")])
                if isinstance(info, Exception) or b"cluster_state:ok" not in info:
                    raise RedisConnectionError(f"cluster node {address[0]}:{address[1]} says the cluster is not ok")
        finally:
            fresh.close()
        self._slots = None  # the live wire reads the map again at its next call

    def close(self) -> None:
        for conn in self._nodes.values():
            conn.close()
        self._nodes.clear()

    def _node(self, address: Address) -> RespConnection:
        conn = self._nodes.get(address)
        if conn is None:
            conn = self._nodes[address] = RespConnection(self.settings, address)
        return conn

    async def _refresh(self, known: list[Address] | None = None) -> list[Address]:
        """The slot map from the first node that answers CLUSTER SLOTS (known nodes first, then the seed)."""
        candidates = [*(known if known is not None else list(self._nodes)), self.seed]
        failures = []
        for address in dict.fromkeys(candidates):
            try:
                (reply,) = await self._node(address).roundtrip([pack(b"CLUSTER", b"SLOTS")])
            except (OSError, TimeoutError, RedisConnectionError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {type(exc).__name__}")
                continue
            if isinstance(reply, Exception):
                failures.append(f"{address[0]}:{address[1]}: {reply}")
                continue
            slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
            for start, stop, master, *_replicas in reply:
                host = master[0].decode() or address[0]  # an empty host: the node we asked
                for slot in range(start, stop + 1):
                    slots[slot] = (host, int(master[1]))
            if any(a is None for a in slots):
                failures.append(f"{address[0]}:{address[1]}: not every slot is served")
                continue
            full: list[Address] = slots  # type: ignore[assignment]
            for stale in set(self._nodes) - set(full):
                self._nodes.pop(stale).close()
            self._slots = full
            return full
        raise RedisConnectionError("no cluster node gave the slot map (" + "; ".join(failures) + ")")

    async def _route(self, commands: list[bytes], target: list[Address]) -> list[Any]:
        replies: list[Any] = [None] * len(commands)
        pending, asking = list(range(len(commands))), set[int]()
        for _ in range(_REDIRECTS + 1):
            groups: dict[Address, list[int]] = {}
            for i in pending:
                groups.setdefault(target[i], []).append(i)
            # Every node's exchange is over before this returns or raises: a connection is never used by two calls.
            outcomes = await asyncio.gather(
                *(
                    self._send_group(a, [commands[i] for i in ids], [i in asking for i in ids])
                    for a, ids in groups.items()
                ),
                return_exceptions=True,
            )
            try:
                answers = _all_or_raise(outcomes)
            except BaseException:
                self._slots = None  # a node went away: the map is read again at the next call
                raise
            again = []
            for ids, group_replies in zip(groups.values(), answers, strict=True):
                for i, reply in zip(ids, group_replies, strict=True):
                    moved = _redirect(reply)
                    if moved is None:
                        replies[i] = reply
                        continue
                    kind, _slot, address = moved
                    target[i] = address
                    if kind == "MOVED":
                        asking.discard(i)
                        self._slots = None  # other slots may have moved too: the whole map at the next call
                    else:
                        asking.add(i)
                    replies[i] = reply
                    again.append(i)
            if not again:
                break
            pending = again
        return replies

    async def _send_group(self, address: Address, commands: list[bytes], asking: list[bool]) -> list[Any]:
        if not any(asking):
            return await self._node(address).roundtrip(commands)
        sent = []
        for command, ask in zip(commands, asking, strict=True):
            if ask:
                sent.append(pack(b"ASKING"))
            sent.append(command)
        replies = await self._node(address).roundtrip(sent)
        out, at = [], 0
        for ask in asking:
            at += 1 if ask else 0  # ASKING's +OK
            out.append(replies[at])
            at += 1
        return out


def _all_or_raise(outcomes: list[list[Any] | BaseException]) -> list[list[Any]]:
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]


def _redirect(reply: Any) -> tuple[str, int, Address] | None:
    if not isinstance(reply, ResponseError):
        return None
    text = str(reply)
    if not text.startswith(("MOVED ", "ASK ")):
        return None
    kind, slot, where = text.split(" ", 2)
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host, int(port))


def open_wire(settings: RedisSettings) -> RespConnection | ClusterWire:
    """The limits' connection for these settings. Opens nothing until its first call."""
    return ClusterWire(settings) if settings.mode == "cluster" else RespConnection(settings)
