"""Per key and per team limits for virtual keys: rpm, tpm, max parallel requests and budgets, shared by every
replica through Redis (REDIS_URL), with local limits while Redis is away.

One request: budget (budget.py, from the key cache) → one atomic Lua script for the key and its team together
(limit_scripts.py; a key of a team shares its team's hash tag): rpm and tpm checked, the tpm reserved from an
estimate (token_estimate.py), a parallel slot taken, in both or in neither → the answer → `finish()` corrects
the tpm by the real usage and frees the slot (also after an error, a client that went away, or a stream's end).
The calls of concurrent requests share one pipelined round trip (script_batch.py, redis_wire.py); the requests
of a scope that end in the same loop turn are settled in one call. A busy scope far from its limits leases
allowance in chunks (leases.py) and its requests are admitted from the chunk, in memory, with no round trip.

Over a limit: 429, OpenAI's error JSON (code `rate_limit_exceeded`, or `budget_exceeded`), `Retry-After` and the
x-ratelimit-* headers. A virtual key with limits gets its own x-ratelimit-* on every answer, in place of the
upstream's (those describe the provider account the gateway shares, not the caller's allowance); a key without
limits, and the master key, get the upstream's as they came.

Redis is reached as routeiq_shared.redis_settings says (REDIS_URL, Sentinel or Cluster; redis_wire.py). Redis
slower than `routeiq.limits.redis_timeout_seconds` or unreachable: this request uses local limits (local_limits.py:
the limit divided by `routeiq.limits.replicas`); after `routeiq.breakers.redis.failures` such calls in a row
(default 1) the Redis breaker opens and the following requests go local without trying Redis,
`gateway_degraded_mode{service="redis"}` is 1, one log line says so; once the breaker's cool-down is over (default
1 s) a probe (a new connection, made as the next one will be: through the sentinels, or the cluster's slot map)
closes the breaker when it answers and brings the shared limits back, one more line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from routeiq_shared.breaker import BreakerPolicy
from routeiq_shared.config_schema import BreakersSettings, LimitsSettings
from routeiq_shared.redis_settings import RedisSettings

from routeiq_gateway.admission import budget
from routeiq_gateway.admission.leases import Lease, LeaseBook, wants
from routeiq_gateway.admission.limit_scripts import ADMIT, GIVE_BACK, SETTLE, redis_keys
from routeiq_gateway.admission.local_limits import LocalLimits, Verdict, share
from routeiq_gateway.admission.script_batch import ScriptBatch
from routeiq_gateway.admission.token_estimate import estimate_tokens
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.tenancy.records import Limits, VirtualKey
from routeiq_gateway.tenancy.spend import tokens_of

log = logging.getLogger("routeiq.gateway")

PERIOD_MS = 60_000  # rpm and tpm are per minute
_PERIOD = str(PERIOD_MS)
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_PROBE_SECONDS = 1.0  # how often the background task looks whether a probe is due
_DEFAULT_POLICY = BreakersSettings().redis.policy()
_RATELIMIT = b"x-ratelimit-"
_keys_of = functools.lru_cache(maxsize=65_536)(redis_keys)  # a scope's Redis keys, built once


@dataclass(slots=True)
class _Held:
    """What one scope of one request holds, to give back or correct at its end."""

    scope: str  # "k" | "t"
    ident: str
    shared: bool  # Redis (True) or this process (False)
    tpm: int
    tokens: int
    slot: str
    team: str | None  # a key's team: its Redis keys share the team's hash tag (limit_scripts.redis_keys)
    lease: Lease | None = None  # admitted from this replica's lease (leases.py), not by a round trip

    @property
    def keys(self) -> tuple[str, str, str]:
        return _keys_of(self.scope, self.ident, self.team if self.scope == "k" else None)


@dataclass(slots=True)
class Ticket:
    """A request's hold on its limits, and the x-ratelimit-* headers its answer carries."""

    held: list[_Held] = field(default_factory=list)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def upstream_headers(self, upstream: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
        """The upstream's headers less its x-ratelimit-* (ours describe the caller's allowance)."""
        if not self.headers:
            return upstream
        return tuple((k, v) for k, v in upstream if not k.startswith(_RATELIMIT))


def _checked(reply: Any) -> bytes:
    if isinstance(reply, Exception):
        raise reply  # a script's error: Redis is not doing its part
    return reply  # type: ignore[no-any-return]


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _scopes(vkey: VirtualKey) -> list[tuple[str, str, Limits]]:
    out = []
    for scope, ident, limits in (
        ("k", vkey.id, vkey.limits),
        ("t", vkey.team_id, vkey.team.limits if vkey.team is not None else None),
    ):
        if ident is None or limits is None:
            continue
        if limits.rpm is not None or limits.tpm is not None or limits.max_parallel is not None:
            out.append((scope, ident, limits))
    return out


class Limiter:
    def __init__(
        self,
        redis: RedisSettings | None,
        settings: Callable[[], LimitsSettings],
        metrics: GatewayMetrics,
        breaker_policy: Callable[[], BreakerPolicy] = lambda: _DEFAULT_POLICY,
    ) -> None:
        self.settings = settings  # read at each use: a config reload applies at once
        self.metrics = metrics
        self.local = LocalLimits()
        self._batch: ScriptBatch | None = None
        if redis is not None:
            timeout = settings().redis_timeout_seconds
            # A pipeline may take longer than one request waits (that request then goes local): not less than this.
            self._batch = ScriptBatch(
                redis, {"admit": ADMIT, "settle": SETTLE, "give_back": GIVE_BACK}, max(0.5, 4 * timeout)
            )
        self.leases = LeaseBook()
        self.breaker = metrics.breaker("redis", breaker_policy, log, self._degraded)
        self._owed: dict[tuple[tuple[str, str, str], int], list[Any]] = {}  # scope → [tokens to correct, slots to free]
        self._owed_soon = False
        self._slot_prefix = secrets.token_hex(8) + ":"
        self._slot_seq = itertools.count()

    @property
    def shared(self) -> bool:
        """Whether limits are enforced across replicas now (Redis configured and reachable)."""
        return self._batch is not None and self.breaker.closed

    # --- the hot path --------------------------------------------------------------------------------------

    async def admit(self, vkey: VirtualKey, endpoint: str, body: dict[str, Any]) -> Ticket | None:
        """Raises 429 over a budget or limit; else the request's hold (None: the key has no limits at all)."""
        refused = budget.check(vkey)
        if refused is not None:
            scope, exc = refused
            self.metrics.rate_limited.labels(scope, "budget").inc()
            raise exc
        scopes = _scopes(vkey)
        if not scopes:
            return None
        settings = self.settings()
        tokens = 0
        if any(limits.tpm is not None for _, _, limits in scopes):
            tokens = estimate_tokens(endpoint, body, settings.default_completion_tokens)
        slot = f"{self._slot_prefix}{next(self._slot_seq)}"  # unique across replicas, cheaper than a uuid4
        shared = self.shared
        held = [
            _Held(
                scope,
                ident,
                shared,
                _limit(limits.tpm),
                tokens if limits.tpm is not None else 0,
                slot if limits.max_parallel is not None else "",
                vkey.team_id,
            )
            for scope, ident, limits in scopes
        ]
        if shared and settings.lease_seconds > 0:
            leases = self.leases.covering([h.keys for h in held], [h.tokens for h in held])
            if leases is not None:  # no round trip: every scope's chunk covers it
                for h, lease in zip(held, leases, strict=True):
                    h.slot, h.lease = lease.take(h.tokens), lease
                views = [(limits, lease.verdict()) for (_, _, limits), lease in zip(scopes, leases, strict=True)]
                return Ticket(held, _headers(views))
        verdicts = await self._admit_all(held, [limits for _, _, limits in scopes], settings)
        views = [(limits, verdict) for (_, _, limits), verdict in zip(scopes, verdicts, strict=True)]
        for h, (limits, verdict) in zip(held, views, strict=True):
            if not verdict.allowed:
                if not h.shared:  # in memory each scope took its part: the others' given back (Redis took none)
                    granted = [g for g, (_, v) in zip(held, views, strict=True) if v.allowed]
                    self._settle(Ticket(granted), None, failed=True)
                self.metrics.rate_limited.labels("key" if h.scope == "k" else "team", verdict.denied_by).inc()
                raise _refusal(h.scope, h.ident, limits, verdict, views)
        return Ticket(held, _headers(views))

    def finish(self, ticket: Ticket, usage: dict[str, Any] | None, answered: bool) -> None:
        """The request is over: tpm corrected by its usage (the estimate kept when an answer came without usage,
        all given back when none came), slots freed. Nothing here waits: the shared part goes out with the next
        pipeline (script_batch.py)."""
        self._settle(ticket, usage, failed=not answered)

    # --- background ----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """While the breaker is open, probe Redis when its cool-down is over; shared limits again once it answers.
        While shared, with Sentinel, ask the sentinels every second whether the master has moved."""
        if self._batch is not None:
            await self._batch.warm()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _PROBE_SECONDS)
            for lease in self.leases.expired():
                self._give_back(lease)
            if self._batch is None:
                continue
            if self.breaker.closed:
                with contextlib.suppress(*_REDIS_ERRORS):  # a failure here is the next call's to report
                    async with asyncio.timeout(max(self.settings().redis_timeout_seconds, 0.5)):
                        await self._batch.wire.follow()  # Sentinel: has the master moved?
                continue
            if self.breaker.probe_due() and self.breaker.allow():
                try:
                    async with asyncio.timeout(max(self.settings().redis_timeout_seconds, 0.5)):
                        await self._batch.wire.probe()
                except _REDIS_ERRORS as exc:
                    self.breaker.failure(_reason(exc))
                    continue
                self.breaker.success()

    async def close(self) -> None:
        for lease in self.leases.drain():
            self._give_back(lease)
        if self._batch is not None:
            await self._batch.close()

    # --- internals -----------------------------------------------------------------------------------------

    async def _admit_all(self, held: list[_Held], limits: list[Limits], settings: LimitsSettings) -> list[Verdict]:
        ttl_ms = int(settings.slot_ttl_seconds * 1000)
        batch = self._batch
        if batch is not None and held[0].shared:
            asks = self._asks(held, limits, settings)
            # One script for the key and its team together (one hash tag): both taken, or neither.
            command = batch.encode(
                "admit",
                tuple(k for h in held for k in h.keys),
                tuple(
                    f"{_limit(lim.rpm)} {_limit(lim.tpm)} {_limit(lim.max_parallel)} {ttl_ms} {PERIOD_MS}"
                    + ("" if asks is None else f" {ask[0]} {ask[1]} {ask[2]}")
                    for lim, ask in zip(limits, asks or [(0, 0, 0)] * len(limits), strict=True)
                ),
                (
                    str(held[0].tokens or held[-1].tokens),
                    held[0].slot or held[-1].slot,
                    "",
                    str(4 * settings.replicas if asks is not None else 0),
                ),
            )
            late = functools.partial(self._give_back_late, held, limits)
            timed = self.breaker.policy().latency_budget_seconds is not None  # slow answers count as failures
            started = time.perf_counter() if timed else 0.0
            try:
                # Past the timeout (or cancelled with its request) the reply goes to `late`.
                (reply,) = await batch.send([command], late, settings.redis_timeout_seconds)
                verdicts = [Verdict.of_script(part) for part in _checked(reply).split(b";")]
            except _REDIS_ERRORS as exc:
                self.breaker.failure(_reason(exc))
                for h in held:
                    h.shared = False
            else:
                self.breaker.success(time.perf_counter() - started if timed else None)
                if asks is not None:
                    for h, lim, verdict in zip(held, limits, verdicts, strict=True):
                        self._lease(h, lim, verdict, settings.lease_seconds)
                return verdicts
            finally:
                if asks is not None:
                    self.leases.renewing.difference_update(h.keys for h in held)
        n = settings.replicas
        return [
            self.local.admit(
                h.scope,
                h.ident,
                share(_limit(lim.rpm), n),
                share(_limit(lim.tpm), n),
                share(_limit(lim.max_parallel), n),
                h.tokens,
                h.slot,
                ttl_ms,
                PERIOD_MS,
            )
            for h, lim in zip(held, limits, strict=True)
        ]

    def _asks(
        self, held: list[_Held], limits: list[Limits], settings: LimitsSettings
    ) -> list[tuple[int, int, int]] | None:
        """The chunks to ask for with this admission (leases.py), or None: every scope leasable, or none asked."""
        if settings.lease_seconds <= 0 or any(h.keys in self.leases.renewing for h in held):
            return None  # another request is already asking for this scope's next chunk
        asks = []
        for h, lim in zip(held, limits, strict=True):
            ask = wants(
                _limit(lim.rpm), _limit(lim.tpm), _limit(lim.max_parallel), h.tokens, self.leases.leases.get(h.keys)
            )
            if ask is None:
                return None
            asks.append(ask)
        self.leases.renewing.update(h.keys for h in held)
        return asks

    def _lease(self, h: _Held, lim: Limits, verdict: Verdict, seconds: float) -> None:
        """Hold what the admission leased (a refused admission leased nothing); give back what it replaces."""
        requests, tokens, slots = verdict.leased
        if not verdict.allowed or not (requests or tokens or slots):
            return
        lease = Lease(
            h.keys,
            _limit(lim.rpm),
            _limit(lim.tpm),
            lim.max_parallel is not None,
            self.leases.clock() + seconds,
            requests,
            tokens,
            [f"{h.slot}+{i}" for i in range(1, slots + 1)],
            verdict,
        )
        replaced = self.leases.install(lease)
        if replaced is not None:
            self._give_back(replaced)

    def _give_back(self, lease: Lease) -> None:
        """A lease's end: what is left returned to the shared limits, its overdraft paid, its free slots freed."""
        requests = lease.requests if lease.rpm >= 0 else 0
        tokens = lease.tokens if lease.tpm >= 0 else 0
        free, lease.free = lease.free, []
        if self._batch is None or not (requests or tokens or free):
            return
        command = self._batch.encode(
            "give_back", lease.keys, (str(lease.rpm), str(lease.tpm), _PERIOD), ("", str(requests), str(tokens), *free)
        )
        self._batch.send([command]).add_done_callback(self._settled)

    def _give_back_late(self, held: list[_Held], limits: list[Limits], replies: list[Any]) -> None:
        """A reply that came after its request stopped waiting (and went local): what it took is given back, and
        what it leased."""
        (reply,) = replies
        if isinstance(reply, Exception) or reply[:1] != b"1":  # refused: nothing was taken
            return
        late = [dataclasses.replace(h, shared=True, lease=None) for h in held]
        for h, lim, part in zip(late, limits, reply.split(b";"), strict=True):
            verdict = Verdict.of_script(part)
            requests, tokens, slots = verdict.leased
            if requests or tokens or slots:
                lease = Lease(h.keys, _limit(lim.rpm), _limit(lim.tpm), True, 0.0, requests, tokens, [], verdict)
                lease.free = [f"{h.slot}+{i}" for i in range(1, slots + 1)]
                self._give_back(lease)
        self._settle(Ticket(late), None, failed=True)

    def _settle(self, ticket: Ticket, usage: dict[str, Any] | None, failed: bool) -> None:
        held, ticket.held = ticket.held, []
        if not held:
            return
        prompt, completion = tokens_of(usage)
        used = prompt + completion if usage else None
        for h in held:
            delta = -h.tokens if failed else (0 if used is None else used - h.tokens)
            if h.tpm <= 0:
                delta = 0
            lease = h.lease
            if lease is not None and not lease.ended:  # settled in the lease; its end settles with Redis
                lease.tokens -= delta
                if h.slot:
                    lease.out -= 1
                    lease.free.append(h.slot)
                continue
            if not h.shared or self._batch is None:
                self.local.settle(h.scope, h.ident, share(h.tpm, self.settings().replicas), delta, h.slot, PERIOD_MS)
            elif delta or h.slot:
                owed = self._owed.get((h.keys, h.tpm))
                if owed is None:
                    owed = self._owed[(h.keys, h.tpm)] = [0, []]
                owed[0] += delta
                if h.slot:
                    owed[1].append(h.slot)
                if not self._owed_soon:
                    # Every request of a scope that ends in this turn of the loop: one call for all of them.
                    self._owed_soon = True
                    asyncio.get_running_loop().call_soon(self._send_owed)

    def _send_owed(self) -> None:
        owed, self._owed, self._owed_soon = self._owed, {}, False
        if self._batch is None or not owed:
            return
        commands = []
        for ((_, k_tpm, k_par), tpm), (delta, slots) in owed.items():
            commands.append(self._batch.encode("settle", (k_tpm, k_par), (str(tpm), _PERIOD), ("", str(delta), *slots)))
        self._batch.send(commands).add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[list[Any]]) -> None:
        # A lost settle costs a slot until its TTL and leaves the estimate in place of the usage.
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            exc = next((r for r in future.result() if isinstance(r, Exception)), None)
        if exc is not None:
            self.breaker.failure(_reason(exc))

    def _degraded(self, degraded: bool, reason: str) -> None:
        """The breaker left closed (degraded) or closed again: one line each way."""
        if degraded:
            log.error(
                "Redis unreachable: rate limits enforced per replica (each limit divided by routeiq.limits.replicas)",
                extra={
                    "event": "degraded_mode",
                    "service": "redis",
                    "degraded": True,
                    "replicas": self.settings().replicas,
                    "reason": reason[:300],
                },
            )
        else:
            log.info(
                "Redis reachable again: rate limits shared across replicas",
                extra={"event": "degraded_mode", "service": "redis", "degraded": False},
            )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _refusal(
    scope: str, ident: str, limits: Limits, verdict: Verdict, views: list[tuple[Limits, Verdict]]
) -> GatewayError:
    who = "key" if scope == "k" else f"team {ident}"
    what = {"rpm": "requests per minute", "tpm": "tokens per minute", "parallel": "parallel requests"}[
        verdict.denied_by
    ]
    limit = {"rpm": limits.rpm, "tpm": limits.tpm, "parallel": limits.max_parallel}[verdict.denied_by]
    retry = max(1, -(-verdict.retry_ms // 1000))
    headers = [(b"retry-after", str(retry).encode()), *_headers([*views, (limits, verdict)])]
    return GatewayError(
        429,
        f"Rate limit reached for this {who}: {what} limit {limit}. Retry after {retry} s.",
        code="rate_limit_exceeded",
        headers=tuple(headers),
    )


_KINDS = (
    (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests", b"x-ratelimit-reset-requests"),
    (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens"),
)


def _headers(views: list[tuple[Limits, Verdict]]) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* for requests and tokens: of the tightest scope (fewest remaining) that has the limit."""
    requests: tuple[int, int, int] | None = None
    tokens: tuple[int, int, int] | None = None
    for limits, v in views:
        if limits.rpm is not None and (requests is None or v.rpm_remaining < requests[0]):
            requests = (v.rpm_remaining, limits.rpm, v.rpm_reset_ms)
        if limits.tpm is not None and (tokens is None or v.tpm_remaining < tokens[0]):
            tokens = (v.tpm_remaining, limits.tpm, v.tpm_reset_ms)
    out: list[tuple[bytes, bytes]] = []
    for names, best in zip(_KINDS, (requests, tokens), strict=True):
        if best is not None:
            remaining, limit, reset_ms = best
            out += (
                (names[0], b"%d" % limit),
                (names[1], b"%d" % max(0, remaining)),
                (names[2], _duration(reset_ms)),
            )
    return out


def _duration(ms: int) -> bytes:
    """OpenAI's reset format: "1s", "6m0s", "120ms"."""
    if ms < 1000:
        return f"{max(0, ms)}ms".encode()
    minutes, seconds = divmod(ms / 1000, 60)
    if minutes:
        return f"{int(minutes)}m{seconds:.0f}s".encode()
    return f"{seconds:.3g}s".encode()
