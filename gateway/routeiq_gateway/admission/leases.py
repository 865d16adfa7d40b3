"""Allowance leased from the shared limits in chunks, so a busy scope far from its limits does not cost a Redis round
trip a request (limits.py).

A scope (a key or a team) whose every limit is large — rpm of at least LEASE_MIN_RPM, tpm of at least
LEASE_MIN_REQUESTS_OF_TPM times the request's token estimate, max_parallel of at least LEASE_MIN_PARALLEL —
asks, with a request's own admission, for a chunk for the requests that follow: n requests, n times the tokens,
k parallel slots (the ADMIT script, limit_scripts.py, counts them in Redis at once, as used). Until the chunk runs
out or `routeiq.limits.lease_seconds` pass, this replica admits that scope's requests from it in memory. At its
end what is left is given back (GIVE_BACK), and usage past the estimates is paid.

Never over a limit: a chunk is taken from the shared limit before any of it is used. Under, at worst, by the unused
part of each replica's chunk: each chunk at most a 1/(4 x replicas) share of what was left and never the last
tenth of a limit (the script's grant()), given back within lease_seconds. Near a limit there are no chunks, and
every request asks Redis, exactly as without leases. A chunk's size follows what the previous one served (twice
that, between LEASE_MIN_CHUNK and LEASE_MAX_CHUNK), so a quiet scope holds little.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from routeiq_gateway.admission.local_limits import Verdict

LEASE_MIN_RPM = 6_000  # 100 requests a second: below that a round trip a request costs nothing worth saving
LEASE_MIN_REQUESTS_OF_TPM = 200  # tpm must hold at least this many requests of the current size
LEASE_MIN_PARALLEL = 64
LEASE_MIN_CHUNK = 16
LEASE_MAX_CHUNK = 4096
LEASE_MIN_SLOTS = 8
LEASE_MAX_SLOTS = 256
_MAX_LEASES = 10_000  # scopes holding a lease at once; past this no new ones (each is given back within seconds)

Keys = tuple[str, str, str]


@dataclass(slots=True, eq=False)
class Lease:
    """What this replica holds of one scope's shared limits, and how much of it it has used."""

    keys: Keys  # the scope's rpm, tpm and parallel keys in Redis
    rpm: int  # the limits it was taken under (-1: none)
    tpm: int
    parallel: bool
    expires: float  # monotonic seconds
    requests: int  # requests left (unused when rpm < 0)
    tokens: int  # tokens left; below 0 when usage overran the estimates
    free: list[str]  # leased parallel slots not in use
    granted: Verdict  # the scope's figures in Redis when it was granted (after the chunk was taken)
    used: int = 0  # requests admitted from it
    out: int = 0  # its slots in use now
    peak: int = 0  # most of its slots in use at once
    ended: bool = False  # given back: requests that still hold its slots free them in Redis

    def covers(self, tokens: int, now: float) -> bool:
        return (
            not self.ended
            and now < self.expires
            and (self.rpm < 0 or self.requests > 0)
            and (self.tpm < 0 or self.tokens >= tokens)
            and (not self.parallel or bool(self.free))
        )

    def take(self, tokens: int) -> str:
        """One request from the lease (covers() said it can): its parallel slot, or ""."""
        self.used += 1
        if self.rpm >= 0:
            self.requests -= 1
        if self.tpm >= 0:
            self.tokens -= tokens
        if not self.parallel:
            return ""
        self.out += 1
        self.peak = max(self.peak, self.out)
        return self.free.pop()

    def verdict(self) -> Verdict:
        """The x-ratelimit-* figures of a request admitted from the lease: the shared ones at the grant plus what
        this replica still holds."""
        g = self.granted
        return Verdict(
            True,
            "",
            0,
            g.rpm_remaining + self.requests if self.rpm >= 0 else -1,
            g.rpm_reset_ms,
            g.tpm_remaining + max(0, self.tokens) if self.tpm >= 0 else -1,
            g.tpm_reset_ms,
            g.in_use - len(self.free),
        )


def wants(rpm: int, tpm: int, parallel: int, tokens: int, previous: Lease | None) -> tuple[int, int, int] | None:
    """The chunk to ask for a scope with these limits (requests, tokens, slots), or None when it is not leased."""
    if 0 <= rpm < LEASE_MIN_RPM or 0 <= parallel < LEASE_MIN_PARALLEL:
        return None
    if tpm >= 0 and tpm < LEASE_MIN_REQUESTS_OF_TPM * max(tokens, 1):
        return None
    served = previous.used if previous is not None else 0
    requests = min(LEASE_MAX_CHUNK, max(LEASE_MIN_CHUNK, 2 * served))
    slots = min(LEASE_MAX_SLOTS, max(LEASE_MIN_SLOTS, 2 * previous.peak if previous is not None else 0))
    return (
        requests if rpm >= 0 else 0,
        requests * max(tokens, 1) if tpm >= 0 else 0,
        slots if parallel >= 0 else 0,
    )


@dataclass(slots=True)
class LeaseBook:
    """The leases of this process, by scope keys; runtime state that outlives a config reload (a reload that
    changes a scope's limits lets its lease run out: it was taken under the old ones, and lasts seconds)."""

    clock: Callable[[], float] = time.monotonic
    leases: dict[Keys, Lease] = field(default_factory=dict)
    renewing: set[Keys] = field(default_factory=set)  # a request is asking Redis for this scope's next chunk

    def covering(self, keys: list[Keys], tokens: list[int]) -> list[Lease] | None:
        """Every scope's lease when each covers the request, else None (then the request asks Redis)."""
        now = self.clock()
        out = []
        for k, n in zip(keys, tokens, strict=True):
            lease = self.leases.get(k)
            if lease is None or not lease.covers(n, now):
                return None
            out.append(lease)
        return out

    def install(self, lease: Lease) -> Lease | None:
        """The scope's new lease; returns the one it replaces (to give back), if any."""
        old = self.leases.pop(lease.keys, None)
        if old is None and len(self.leases) >= _MAX_LEASES:
            lease.ended = True
            return lease  # full: given back at once rather than held untracked
        self.leases[lease.keys] = lease
        if old is not None:
            old.ended = True
        return old

    def expired(self) -> Iterator[Lease]:
        """Leases past their time, removed from the book and marked ended: to give back."""
        now = self.clock()
        for keys in [k for k, lease in self.leases.items() if lease.expires <= now]:
            lease = self.leases.pop(keys)
            lease.ended = True
            yield lease

    def drain(self) -> list[Lease]:
        """Every lease, ended (shutdown, or Redis lost)."""
        out = list(self.leases.values())
        self.leases.clear()
        for lease in out:
            lease.ended = True
        return out
