"""Request micro-batching: concurrent requests that share a key become one call.

Why: one ``predict`` call on 8 rows costs about what a call on 1 row costs (the noise and the
sampled weights are drawn once per call, not per row), so merging the rows of concurrent
requests that share (num_samples, seed, strategy) multiplies throughput under load.

How: requests are queued; one worker takes everything queued (waiting up to
``max_latency_ms`` for more while fewer than ``max_batch_size`` rows are waiting), groups the
jobs by key, packs each group into calls of at most ``max_batch_size`` rows (a request is
never split; a larger one runs alone) and runs each call in a thread, one after another (the
predictor serializes calls anyway). While a call runs, new requests queue up and are merged
into the next one, so batching happens under load even with ``max_latency_ms = 0``.

Isolation: a call that fails is retried one request at a time, so one request's failure
reaches only that request, never its batch neighbours; requests are validated before they
are queued, so this is a second line of defence.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchStats:
    """Counters of the batcher, for logs and tests."""

    calls: int = 0  #: run_group calls that succeeded as a whole (merged or single)
    requests: int = 0  #: requests answered (with a result or an error)
    merged_calls: int = 0  #: calls that served more than one request
    largest: int = 0  #: most requests served by one call
    retried_calls: int = 0  #: merged calls that failed and were retried per request


@dataclass
class _Job:
    key: Hashable
    payload: Any
    rows: int
    future: asyncio.Future


class MicroBatcher:
    """Merges concurrent requests into calls of ``run_group(key, payloads) -> results``.

    Args:
        run_group: runs one call for the payloads of several requests sharing `key` and
            returns one result per payload, in order. Runs in a worker thread.
        max_batch_size: most rows in one call (a request with more rows runs alone).
        max_latency_ms: longest a request waits for others before its call starts.
        mergeable: ``mergeable(key)`` False makes every request of that key run alone.
    """

    def __init__(
        self,
        run_group: Callable[[Hashable, list[Any]], list[Any]],
        max_batch_size: int = 256,
        max_latency_ms: float = 0.0,
        mergeable: Callable[[Hashable], bool] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size (={max_batch_size}) must be at least 1")
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms (={max_latency_ms}) must be >= 0")
        self.run_group = run_group
        self.max_batch_size = int(max_batch_size)
        self.max_latency = float(max_latency_ms) / 1000.0
        self.mergeable = mergeable or (lambda key: True)
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._pending_rows = 0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, key: Hashable, payload: Any, rows: int) -> tuple[Any, int, int]:
        """Queue one request and wait for its result.

        Returns:
            ``(result, rows in its call, requests in its call)``.
        """
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run_forever())
        job = _Job(key, payload, int(rows), loop.create_future())
        self._pending.append(job)
        self._pending_rows += job.rows
        assert self._wake is not None
        self._wake.set()
        return await job.future

    def stop(self) -> None:
        """Stop the worker (after the server has drained its requests)."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    # ------------------------------------------------------------------ worker
    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            deadline = loop.time() + self.max_latency
            while self._pending_rows < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            jobs = list(self._pending)
            self._pending.clear()
            self._pending_rows = 0
            for group in self._pack(jobs):
                try:
                    outcomes, merged = await loop.run_in_executor(None, self._call, group)
                except BaseException as exc:  # noqa: BLE001 - a bug here must not hang the clients
                    outcomes, merged = [exc] * len(group), False
                    if isinstance(exc, asyncio.CancelledError):
                        for job in group:
                            if not job.future.done():
                                job.future.cancel()
                        raise
                self._record(group, merged)
                rows = sum(j.rows for j in group)
                for job, outcome in zip(group, outcomes):
                    if job.future.done():  # the client went away
                        continue
                    if isinstance(outcome, BaseException):
                        job.future.set_exception(outcome)
                    elif merged:
                        job.future.set_result((outcome, rows, len(group)))
                    else:
                        job.future.set_result((outcome, job.rows, 1))

    def _pack(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Group by key (in arrival order), then fill calls of at most max_batch_size rows."""
        by_key: dict[Hashable, list[_Job]] = {}
        for job in jobs:
            by_key.setdefault(job.key, []).append(job)
        groups: list[list[_Job]] = []
        for key, members in by_key.items():
            if not self.mergeable(key):
                groups.extend([job] for job in members)
                continue
            current: list[_Job] = []
            rows = 0
            for job in members:
                if current and rows + job.rows > self.max_batch_size:
                    groups.append(current)
                    current, rows = [], 0
                current.append(job)
                rows += job.rows
            groups.append(current)
        return groups

    def _call(self, group: list[_Job]) -> tuple[list[Any], bool]:
        """Run one call (worker thread). Returns (one outcome per job, whether it ran merged);
        an outcome is a result or the exception that job raised."""
        key = group[0].key
        try:
            results = self.run_group(key, [job.payload for job in group])
            if len(results) != len(group):
                raise RuntimeError(f"run_group returned {len(results)} results for {len(group)} requests")
            return list(results), True
        except Exception as exc:
            if len(group) == 1:
                return [exc], True
        # A merged call failed: retry each request alone, so the failure stays with its owner.
        self.stats.retried_calls += 1
        outcomes: list[Any] = []
        for job in group:
            try:
                outcomes.append(self.run_group(key, [job.payload])[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes, False

    def _record(self, group: list[_Job], merged: bool) -> None:
        self.stats.requests += len(group)
        if merged:
            self.stats.calls += 1
            if len(group) > 1:
                self.stats.merged_calls += 1
            self.stats.largest = max(self.stats.largest, len(group))
        else:
            self.stats.calls += len(group)
            self.stats.largest = max(self.stats.largest, 1)
