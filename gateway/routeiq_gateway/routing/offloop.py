"""Running router models and custom routers without stalling the event loop for other requests.

Choice, by measurement (bench/router_decisions.py, uvloop, one core): handing a call to a worker thread costs the
loop ~0.03-0.05 ms p50 (a no-op through run_in_executor); the built-in learned scorers take ~0.05-0.15 ms for one
MMLU prompt with the compiled features (knn ~0.25 ms: it reads its whole bank; boost ~0.3 ms: its hand-made cues
are Python regexes), less each in a batch; the gateway spends ~0.1-0.15 ms of CPU per proxied request. So:
- a call runs inline only when its measured cost is below INLINE_BELOW_SECONDS (0.3 ms, about one request's
  worth of loop time: stalling others by less than that is cheaper than the hop and the GIL hand-over);
- a model's score/predict (`run_batched`) is batched either way, because the built-in scorers hash a batch of
  prompts in one numpy pass (routing_models.HashedTfidf.rows): most of one prompt's cost is per-call overhead.
  Its cost is measured per prompt (a batch's time over its size), so a model that is cheap in batches stays
  on the loop under load, where the batches form. A cheap model is scored on the loop, but not request by
  request: the prompts of every request that reaches it in one turn of the loop are scored in one call,
  scheduled with call_soon right after that turn (no timer, so an idle gateway adds no wait), at most
  INLINE_BATCH at a time so the loop is never held long. On one
  core a worker thread adds only its hand-off there. An expensive model runs in a worker thread, batched
  opportunistically: prompts that arrive while a batch is being scored form the next batch, started as soon
  as the worker is free;
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
INLINE_BATCH = 32  # prompts scored on the loop in one call at most: bounds how long it holds the loop
WORKERS = 2  # the pod has few cores; more threads only contend for the GIL
_ALPHA = 0.2


def _cpu_timed(fn: Callable[[Any], Any], arg: Any) -> tuple[Any, float]:
    """fn(arg) and the CPU time this thread spent on it: a model's scoring is CPU work, and wall time on a busy
    machine would charge it for the time the kernel gave other processes (which stalls everything alike)."""
    start = time.thread_time()
    result = fn(arg)
    return result, time.thread_time() - start


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


def _settle(taken: list[tuple[Any, asyncio.Future[Any]]], outcomes: list[tuple[bool, Any]]) -> None:
    for (_, future), (ok, value) in zip(taken, outcomes, strict=True):
        if future.done():  # its request was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


@dataclass(slots=True)
class _Batch:
    fn: Callable[[list[Any]], Sequence[Any]]
    pending: list[tuple[Any, asyncio.Future[Any]]] = field(default_factory=list)
    running: bool = False  # a worker drains `pending`
    scheduled: bool = False  # an inline call is scheduled to score `pending` on the loop


class ScoringRunner:
    def __init__(self, inline_below: float = INLINE_BELOW_SECONDS, workers: int = WORKERS) -> None:
        self.inline_below = inline_below
        self.workers = workers
        self.cost: dict[Hashable, float] = {}  # key → EWMA seconds of one call
        self._pool: ThreadPoolExecutor | None = None  # created on first need: most configs never need it
        self.offloaded = 0  # calls sent to the pool (for tests and the bench)
        self.batches: dict[Hashable, _Batch] = {}
        self.largest_batch = 0
        self.inline_batches = 0  # inline calls that scored more than one prompt (for tests and the bench)
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
        """fn([item])[0], where fn scores a list at once (a model's score/predict). Cheap: on the loop, with the
        other prompts of this turn of the loop in one call. Else in the pool, batched opportunistically: a
        request arriving while a batch is being scored joins the next one, started as soon as the worker is
        free. Neither waits on a timer, so an idle gateway adds no wait, and a busy one pays a model's per-call
        overhead (hashing set-up, input checks) once per batch instead of per request."""
        loop = asyncio.get_running_loop()
        batch = self.batches.get(key)
        if batch is None:
            batch = self.batches[key] = _Batch(fn)
        batch.fn = fn  # the newest (same model and version: the same scoring)
        future: asyncio.Future[Any] = loop.create_future()
        batch.pending.append((item, future))
        cost = self.cost.get(key)
        if cost is not None and cost < self.inline_below:
            if not batch.scheduled and not batch.running:
                batch.scheduled = True
                loop.call_soon(self._score_on_loop, key, batch)
            return await future
        if not batch.running:
            batch.running = True
            task = asyncio.ensure_future(self._drain(key, batch))
            self._tasks.add(task)  # a reference until done, or the task may be collected mid-flight
            task.add_done_callback(self._tasks.discard)
        return await future

    def _score_on_loop(self, key: Hashable, batch: _Batch) -> None:
        """Score what is pending, INLINE_BATCH at a time (the rest after the loop's next turn)."""
        batch.scheduled = False
        if batch.running:  # a worker took over meanwhile (the model became slow): it drains these too
            return
        taken, batch.pending = batch.pending[:INLINE_BATCH], batch.pending[INLINE_BATCH:]
        if batch.pending:
            batch.scheduled = True
            asyncio.get_running_loop().call_soon(self._score_on_loop, key, batch)
        taken = [(item, future) for item, future in taken if not future.done()]  # cancelled meanwhile
        if not taken:
            return
        items = [item for item, _ in taken]
        self.largest_batch = max(self.largest_batch, len(items))
        self.inline_batches += len(items) > 1
        try:
            results, seconds = _cpu_timed(batch.fn, items)
            if len(results) != len(items):
                raise ValueError(f"{len(results)} results for {len(items)} inputs")
            outcomes: list[tuple[bool, Any]] = [(True, r) for r in results]
            self._observe(key, seconds / len(items))  # a batchable model: its cost per prompt decides
        except Exception:  # noqa: BLE001 — retried one by one, so only the bad item fails
            outcomes = _each(batch.fn, items)
        _settle(taken, outcomes)

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
                    results, seconds = await loop.run_in_executor(self._pool, _cpu_timed, batch.fn, items)
                    if len(results) != len(items):
                        raise ValueError(f"{len(results)} results for {len(items)} inputs")
                    outcomes: list[tuple[bool, Any]] = [(True, r) for r in results]
                    self._observe(key, seconds / len(items))  # as in _score_on_loop
                except Exception:  # noqa: BLE001 — retried one by one, so only the bad item fails
                    outcomes = await loop.run_in_executor(self._pool, _each, batch.fn, items)
                _settle(taken, outcomes)
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
