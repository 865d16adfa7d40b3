"""Running router models and custom routers without stalling the event loop for other requests.

Choice, by measurement (bench/router_decisions.py, uvloop, one core): handing a call to a worker thread costs the
loop ~0.03 ms p50 / 0.06 ms p99 (a no-op through run_in_executor), while a scikit-learn scorer of the built-in
kind (hashed n-grams + logistic regression) takes ~0.5 ms for one prompt, and the gateway spends ~0.25 ms of CPU
per proxied request. So a call runs inline only when its measured cost is below INLINE_BELOW_SECONDS (0.3 ms,
about one request's worth of loop time: stalling other requests by less than that is cheaper than the hop and
the GIL hand-over), and in a small thread pool otherwise — numpy/scipy release the GIL in their kernels, and a
slow custom router or a heavy model then waits in a worker while the loop keeps serving. Batching was not
chosen: it adds a wait to every routed request to save work that a thread already keeps off the loop. Unknown
callables (a new model version, a custom router) run in the pool first, so their first call is measured off the
loop; the cost is an EWMA, so a callable that becomes slow moves to the pool after a slow call or two.
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
