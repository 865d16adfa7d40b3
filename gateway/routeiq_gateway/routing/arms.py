"""A/B and canary of routers (`routeiq.routers[].arms`): which arm serves a caller.

Sticky per caller: a stable hash (blake2b, the same in every process and pod, unlike hash()) of the router's
name and the caller — the request's `user` field when present, else the presented API key — lands on the
cumulative weights. Without either, a random draw. A weight of 0 drains an arm: no point lands on it.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SPAN = float(1 << 64)


def caller_of(body: Mapping[str, Any], api_key: bytes | None) -> bytes | None:
    """What makes a request's arm sticky: its `user` field, else the API key it presented, else nothing."""
    user = body.get("user")
    if isinstance(user, str) and user:
        return b"u:" + user.encode()
    return b"k:" + api_key if api_key else None


@dataclass(frozen=True, slots=True)
class ArmSplit:
    router: bytes  # salts the hash, so a caller's arm in one router says nothing about another's
    names: tuple[str, ...]
    cumulative: tuple[float, ...]  # running sums of the weights; the last is the total (> 0, validated)

    @classmethod
    def of(cls, router: str, arms: Sequence[tuple[str, float]]) -> ArmSplit:
        total, cumulative = 0.0, []
        for _, weight in arms:
            total += weight
            cumulative.append(total)
        return cls(router.encode(), tuple(name for name, _ in arms), tuple(cumulative))

    def pick(self, caller: bytes | None, rng: random.Random) -> int:
        """The index of the arm that serves this caller."""
        if caller is None:
            point = rng.random()
        else:
            digest = hashlib.blake2b(caller, digest_size=8, key=self.router[:64]).digest()
            point = int.from_bytes(digest, "big") / _SPAN  # uniform in [0, 1)
        # bisect_right: the first arm whose running sum exceeds the point, so weight-0 arms are never chosen.
        index = bisect_right(self.cumulative, point * self.cumulative[-1])
        return min(index, len(self.names) - 1)  # float rounding at the very top
