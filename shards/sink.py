"""Batched, idempotent persistence of closed candles that never slows the feed.

Workers call :meth:`CandleSink.add` (synchronous, O(1)); one flusher task upserts batches every
``flush_interval_s`` or as soon as ``flush_batch`` candles wait — but first lets a burst of adds
(the minute close, when every symbol's final arrives at once) finish: the COPY encodes the whole batch
on the event loop, and doing that in the middle of a burst would delay the burst's remaining candles.
A failing database keeps the batch and retries with backoff; the pending list is bounded and overflow
is counted, never silent. At shutdown :meth:`drain` bounds the retrying: a database that stays down must
not hold the process past its stop budget (what is left unwritten is reported, and the next start
backfills those minutes over REST).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import structlog

from shards.backoff import exponential_backoff
from smc_quant.domain.candles import Candle
from smc_quant.ops.metrics import FeedMetrics

QUIET_S = 0.005
"""A flush waits until no candle was added for this long (the burst is over)…"""
MAX_QUIET_WAIT_S = 0.25
"""…but never longer than this (a continuous stream of candles, e.g. a backlog being drained)."""


class CandleWriter(Protocol):
    async def upsert(self, candles: Sequence[Candle]) -> int: ...


class CandleSink:
    """Collects accepted candles and writes them in batches."""

    def __init__(
        self,
        writer: CandleWriter,
        metrics: FeedMetrics,
        *,
        flush_interval_s: float,
        flush_batch: int,
        max_pending: int = 2_000_000,
        backoff: Callable[[], Iterator[float]] = exponential_backoff,
        logger: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._interval = flush_interval_s
        self._batch = flush_batch
        self._max_pending = max_pending
        self._backoff = backoff
        self._log = logger or structlog.get_logger()
        self._pending: list[Candle] = []
        self._added = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, candle: Candle) -> None:
        """Queue one candle for the next batch (drops and counts beyond ``max_pending``)."""
        if len(self._pending) >= self._max_pending:
            self._metrics.reject("sink_overflow")
            return
        pending = self._pending
        if not pending:
            self._idle.clear()  # only set again by a flush that emptied the list
        pending.append(candle)
        self._added += 1
        if len(pending) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Flush forever; cancel to stop (call :meth:`flush` afterwards to drain)."""
        while True:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._pending:
                await self._until_quiet()
            await self.flush()

    async def _until_quiet(self) -> None:
        """Return once ``add`` was not called for ``QUIET_S`` (or after ``MAX_QUIET_WAIT_S``)."""
        quiet = min(QUIET_S, self._interval)
        seen, waited = -1, 0.0
        while self._added != seen and waited < MAX_QUIET_WAIT_S:
            seen = self._added
            await asyncio.sleep(quiet)
            waited += quiet

    async def flush(self) -> None:
        """Write everything pending now, retrying with backoff while the database fails."""
        delays = self._backoff()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                written = await self._writer.upsert(batch)
            except asyncio.CancelledError:
                self._pending = batch + self._pending  # idempotent upsert: safe to write again on drain
                raise
            except Exception as exc:
                self._pending = batch + self._pending
                self._metrics.persist_errors += 1
                delay = next(delays)
                self._log.warning("persist_failed", error=repr(exc), retry_in_s=round(delay, 2),
                                  pending=len(self._pending))
                await asyncio.sleep(delay)
                continue
            self._metrics.persisted += written
        self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """:meth:`flush`, giving up after ``timeout_s``; returns the candles left unwritten (still pending:
        a later flush writes them, the upsert being idempotent)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush()
        except TimeoutError:
            pass
        return len(self._pending)

    async def wait_idle(self) -> None:
        """Return once nothing is pending (for orderly shutdown and tests)."""
        self._wake.set()
        await self._idle.wait()
