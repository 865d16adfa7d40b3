"""The same limits as limit_scripts.py (GCRA for rpm/tpm, expiring slots for max_parallel), in this process's
memory: what a replica enforces while Redis is unreachable, each limit divided by `routeiq.limits.replicas` so
the fleet together stays near the configured figure."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from routeiq_gateway.admission.limit_scripts import redis_keys

_V = TypeVar("_V")
_MAX_ENTRIES = 100_000  # scopes remembered; past this the oldest are forgotten (they refill anyway)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    denied_by: str  # "" | "rpm" | "tpm" | "parallel"
    retry_ms: int
    rpm_remaining: int  # -1: no rpm limit
    rpm_reset_ms: int
    tpm_remaining: int
    tpm_reset_ms: int
    in_use: int
    leased: tuple[int, int, int] = (0, 0, 0)  # requests, tokens and slots leased with this admission (leases.py)

    @classmethod
    def of_script(cls, reply: bytes | str) -> Verdict:
        """The ADMIT script's reply: "ok denied_by retry rpm_rem rpm_reset tpm_rem tpm_reset in_use leased_requests
        leased_tokens leased_slots"."""
        ok, by, *numbers = (reply.decode() if isinstance(reply, bytes) else reply).split()
        retry, rr, rz, tr, tz, used, lr, lt, lp = (int(n) for n in numbers)
        return cls(ok == "1", "" if by == "-" else by, retry, rr, rz, tr, tz, used, (lr, lt, lp))


def share(limit: int, replicas: int) -> int:
    """One replica's part of a limit: at least 1 for a limit above 0 (0 stays "nothing allowed"); -1 stays none."""
    if limit <= 0 or replicas <= 1:
        return limit
    return max(1, limit // replicas)


class LocalLimits:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}  # key → TAT (ms)
        self._slots: dict[str, dict[str, float]] = {}  # key → slot id → expiry (ms)

    def admit(
        self,
        scope: str,
        ident: str,
        rpm: int,
        tpm: int,
        parallel: int,
        tokens: int,
        slot: str,
        ttl_ms: int,
        period_ms: int,
    ) -> Verdict:
        now = self.clock() * 1000
        k_rpm, k_tpm, k_par = redis_keys(scope, ident)
        r = self._gcra(k_rpm, rpm, 1, now, period_ms)
        t = self._gcra(k_tpm, tpm, tokens, now, period_ms)
        slots = self._slots.get(k_par, {})
        if parallel >= 0:
            slots = {s: until for s, until in slots.items() if until > now}
        in_use = len(slots)
        denied, retry = "", 0
        if not r[0]:
            denied, retry = "rpm", r[2]
        elif not t[0]:
            denied, retry = "tpm", t[2]
        elif parallel >= 0 and in_use >= parallel:
            denied, retry = "parallel", 1000
        if denied:
            return Verdict(False, denied, retry, r[3], r[4], t[3], t[4], in_use)
        if r[1] is not None:
            self._put(self._tat, k_rpm, r[1])
        if t[1] is not None and tokens > 0:
            self._put(self._tat, k_tpm, t[1])
        if parallel >= 0:
            slots[slot] = now + ttl_ms
            self._put(self._slots, k_par, slots)
            in_use += 1
        return Verdict(True, "", 0, r[3], r[4], t[3], t[4], in_use)

    def settle(self, scope: str, ident: str, tpm: int, delta: int, slot: str, period_ms: int) -> None:
        now = self.clock() * 1000
        _, k_tpm, k_par = redis_keys(scope, ident)
        if tpm > 0 and delta:
            tat = max(self._tat.get(k_tpm, now), now) + delta * period_ms / tpm
            if tat <= now:
                self._tat.pop(k_tpm, None)
            else:
                self._tat[k_tpm] = tat
        if slot:
            self._slots.get(k_par, {}).pop(slot, None)

    def _gcra(
        self, key: str, limit: int, cost: int, now: float, period: int
    ) -> tuple[bool, float | None, int, int, int]:
        """(allowed, new TAT, retry ms, remaining, reset ms), as the ADMIT script's gcra()."""
        if limit < 0:
            return True, None, 0, -1, 0
        tat = max(self._tat.get(key, now), now)
        if limit == 0:
            return False, None, period, 0, 0
        interval = period / limit
        new_tat = tat + cost * interval
        allow_at = new_tat - period
        if allow_at > now:
            left = max(0, math.floor((period - (tat - now)) / interval))
            return False, None, math.ceil(allow_at - now), left, math.ceil(tat - now)
        return True, new_tat, 0, math.floor((period - (new_tat - now)) / interval), math.ceil(new_tat - now)

    @staticmethod
    def _put(table: dict[str, _V], key: str, value: _V) -> None:
        if key not in table and len(table) >= _MAX_ENTRIES:
            table.pop(next(iter(table)))
        table[key] = value
