"""Running router models and custom routers without stalling the event loop for other requests.

Choice, by measurement (bench/router_decisions.py, uvloop, one core): handing a call to a worker thread costs the
loop ~0.03 ms p50 / 0.06 ms p99 (a no-op through run_in_executor), while a scikit-learn scorer of the built-in
kind (hashed n-grams + logistic regression) takes ~0.5 ms for one prompt, and the gateway spends ~0.25 ms of CPU
per proxied request. So:
- a call runs inline only when its measured cost is below INLINE_BELOW_SECONDS (0.3 ms, about one request's
  worth of loop time: stalling others by less than that is cheaper than the hop and the GIL hand-over);
- a model's score/predict otherwise runs in a worker thread, batched opportunistically (`run_batched`): prompts
  that arrive while a batch is being scored form the next batch, started as soon as the worker is free. No
  timer, so an idle gateway adds no wait; a busy one pays the model's per-call overhead (input validation,
  vectoriser set-up: most of a scikit-learn call for one short text) once per batch. In `make bench`'s
  routeiq-auto row (a TF-IDF + logistic-regression model, 32 connections, one core) this took `model: auto`
  from 0.2x to ~0.57x of the fixed model's throughput;
- a custom router (one text per call, not batchable) runs in the pool unless measured cheap.
Unknown callables (a new model version, a custom router) run in the pool first, so their first call is measured
off the loop; the cost is an EWMA, so a callable that becomes slow moves to the pool after a slow call or two.
A batch that raises is retried item by item, so one prompt a model cannot score fails only its own request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

INLINE_BELOW_SECONDS = 0.0003
WORKERS = 2  # the pod has few cores; more threads only contend for the GIL
_ALPHA = 0.2


def _timed(fn: Callable[[Any], Any], arg: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(arg)
    return result, time.perf_counter() - start


def _each(fn: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> list[tuple[bool, Any]]:
    """A failed batch, item by item: one prompt a model cannot score must not fail the others."""
    out: list[tuple[bool, Any]] = []
    for item in items:
        try:
            out.append((True, fn([item])[0]))
        except Exception as exc:  # noqa: BLE001 — handed to that item's caller, which falls back
            out.append((False, exc))
    return out


@dataclass(slots=True)
class _Batch:
    fn: Callable[[list[Any]], Sequence[Any]]
    pending: list[tuple[Any, asyncio.Future[Any]]] = field(default_factory=list)
    running: bool = False


class ScoringRunner:
    def __init__(self, inline_below: float = INLINE_BELOW_SECONDS, workers: int = WORKERS) -> None:
        self.inline_below = inline_below
        self.workers = workers
        self.cost: dict[Hashable, float] = {}  # key → EWMA seconds of one call
        self._pool: ThreadPoolExecutor | None = None  # created on first need: most configs never need it
        self.offloaded = 0  # calls sent to the pool (for tests and the bench)
        self.batches: dict[Hashable, _Batch] = {}
        self.largest_batch = 0
        self._tasks: set[asyncio.Future[None]] = set()

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

    async def run_batched(self, key: Hashable, fn: Callable[[list[Any]], Sequence[Any]], item: Any) -> Any:
        """fn([item])[0], where fn scores a list at once (a model's score/predict). Cheap: inline. Else in the
        pool, batched opportunistically: a request arriving while a batch is being scored joins the next one,
        started as soon as the worker is free — no timer, so an idle gateway adds no wait, and a busy one pays
        a model's per-call overhead (input checks, vectoriser set-up) once per batch instead of per request."""
        cost = self.cost.get(key)
        if cost is not None and cost < self.inline_below:
            results, seconds = _timed(fn, [item])
            self._observe(key, seconds)
            return results[0]
        batch = self.batches.get(key)
        if batch is None:
            batch = self.batches[key] = _Batch(fn)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        batch.pending.append((item, future))
        if not batch.running:
            batch.running = True
            task = asyncio.ensure_future(self._drain(key, batch))
            self._tasks.add(task)  # a reference until done, or the task may be collected mid-flight
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, key: Hashable, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        taken: list[tuple[Any, asyncio.Future[Any]]] = []
        try:
            while batch.pending:
                taken, batch.pending = batch.pending, []
                items = [item for item, _ in taken]
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="routeiq-score")
                self.offloaded += 1
                self.largest_batch = max(self.largest_batch, len(items))
                try:
                    results, seconds = await loop.run_in_executor(self._pool, _timed, batch.fn, items)
                    if len(results) != len(items):
                        raise ValueError(f"{len(results)} results for {len(items)} inputs")
                    outcomes: list[tuple[bool, Any]] = [(True, r) for r in results]
                    # One call's cost decides inline or not; a whole batch's cost is an upper bound of it.
                    if len(items) == 1 or seconds < self.inline_below:
                        self._observe(key, seconds)
                except Exception:  # noqa: BLE001 — retried one by one, so only the bad item fails
                    outcomes = await loop.run_in_executor(self._pool, _each, batch.fn, items)
                for (_, future), (ok, value) in zip(taken, outcomes, strict=True):
                    if future.done():  # its request was cancelled meanwhile
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                taken = []
        finally:
            batch.running = False
            # Only when cancelled (shutdown): nobody will score these, so their requests must not wait forever.
            for _, future in (*taken, *batch.pending):
                if not future.done():
                    future.cancel()
            batch.pending = []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
