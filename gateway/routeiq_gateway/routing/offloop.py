"""Running router models and custom routers without stalling the event loop for other requests.

Choice, by measurement (bench/router_decisions.py): the built-in scorers take ~0.05-0.2 ms for one prompt (a
hashed n-gram vector and a dot product) — less than a thread hand-off costs on the loop (~0.1-0.2 ms of
futures, wake-ups and GIL hand-over). So a call runs inline when its measured cost is below INLINE_BELOW_SECONDS,
and in a small thread pool otherwise: a slow custom router or a heavy model (a transformer, seconds of
unpickling-sized work) then waits in a worker while the loop keeps serving. Batching was not chosen: it adds a
wait to every routed request to save work that is already cheap. Unknown callables (a new model version, a
custom router) run in the pool first, so the first call is measured off the loop; the cost is an EWMA, so a
callable that becomes slow moves to the pool after one slow call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

INLINE_BELOW_SECONDS = 0.0003
WORKERS = 2  # the pod has few cores; more threads only contend for the GIL
_ALPHA = 0.2


def _timed(fn: Callable[[Any], Any], arg: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(arg)
    return result, time.perf_counter() - start


class ScoringRunner:
    def __init__(self, inline_below: float = INLINE_BELOW_SECONDS, workers: int = WORKERS) -> None:
        self.inline_below = inline_below
        self.workers = workers
        self.cost: dict[Hashable, float] = {}  # key → EWMA seconds of one call
        self._pool: ThreadPoolExecutor | None = None  # created on first need: most configs never need it
        self.offloaded = 0  # calls sent to the pool (for tests and the bench)

    def _observe(self, key: Hashable, seconds: float) -> None:
        old = self.cost.get(key)
        self.cost[key] = seconds if old is None else old + _ALPHA * (seconds - old)

    async def run(self, key: Hashable, fn: Callable[[Any], Any], arg: Any) -> Any:
        """fn(arg), inline when `key`'s calls are known to be cheap, else in a worker thread. Exceptions of fn
        propagate (the caller falls back)."""
        cost = self.cost.get(key)
        if cost is not None and cost < self.inline_below:
            result, seconds = _timed(fn, arg)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="routeiq-score")
            self.offloaded += 1
            result, seconds = await asyncio.get_running_loop().run_in_executor(self._pool, _timed, fn, arg)
        self._observe(key, seconds)
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
