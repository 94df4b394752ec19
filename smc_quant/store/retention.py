"""Bounded storage for a service that runs for months: the ``Housekeeper`` deletes what nothing reads any more.

Measured in the demo: a stored 1m candle costs ~190 bytes with its index, so 323 symbols add ~465k rows
(~85 MB) a day, ~31 GB a year; and every learner round registers a challenger with its held-out window.
Every ``interval_s`` (an hour), and once at start:

* **candles** of every stored series that open more than ``retention_days`` before the reference time
  are deleted, oldest first, ``batch`` rows per statement, each its own short transaction, so the feed's
  writes interleave with a long first prune. The reference is the earlier of the market clock (the wall
  clock live, the latest replayed candle in a replay) and the newest stored candle: a clock ahead of
  the data — a restart after downtime, paper mode against the emulator's 2023 replay, a replay before
  its first candle (clock 0: nothing is pruned) — never makes the stored history look old, and a bogus
  future candle cannot either. The learner's look-back, the warm start and the bootstrap are always
  kept, whatever ``retention_days`` says (``effective_retention_days``); ``retention_days = 0`` keeps
  everything.
* **model candidates** never promoted, except the newest ``keep_candidates``, are deleted
  (``ModelRegistry.prune``; champions and retired champions, the rollback chain, stay); 0 keeps all.
* **retired champions**, except the ``keep_retired`` most recently promoted (the rollback chain), are deleted
  (``ModelRegistry.prune_retired``): a learner that promotes often would keep every model it ever crowned,
  each with its artifact and held-out window; 0 keeps all.

A failed run is logged (``housekeeping_failed``) and counted, and the next one comes on schedule.
Deleted rows leave space that autovacuum makes reusable: the table stops growing, its files do not shrink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from smc_quant.logging import get_logger
from smc_quant.settings import Settings
from smc_quant.store.candles import CandleRepository
from smc_quant.store.models import ModelRegistry

DAY_MS = 86_400_000


def effective_retention_days(settings: Settings) -> float:
    """``feed.retention_days``, raised to what the service reads back (0 stays 0: keep everything)."""
    feed = settings.feed
    if feed.retention_days == 0:
        return 0.0
    needed_minutes = max(feed.warm_start_candles, feed.bootstrap_candles, feed.ring_size)
    learner = settings.learner.history_days + settings.learner.min_history_candles / 1440  # what it fetches
    return max(feed.retention_days, learner, needed_minutes / 1440)


@dataclass(slots=True)
class HousekeepingStats:
    """Counters of the loop (``housekeeping_*`` metrics)."""

    runs: int = 0
    failed: int = 0
    candles_deleted: int = 0
    models_deleted: int = 0
    last_seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {f"housekeeping_{k}": float(v) for k, v in asdict(self).items()}


class Housekeeper:
    """Deletes candles past the retention window, old unpromoted candidates and old retired champions, on a
    schedule."""

    def __init__(self, candles: CandleRepository, registry: ModelRegistry | None, clock: Callable[[], int], *,
                 retention_days: float, keep_candidates: int, keep_retired: int = 0, interval_s: float = 3600.0,
                 batch: int = 10_000, logger: Any = None) -> None:
        if retention_days < 0 or keep_candidates < 0 or keep_retired < 0 or interval_s <= 0 or batch < 1:
            raise ValueError("retention_days, keep_candidates and keep_retired must be >= 0, interval_s > 0, "
                             "batch >= 1")
        self._candles = candles
        self._registry = registry
        self._clock = clock
        self.retention_ms = int(retention_days * DAY_MS)
        self.keep_candidates = keep_candidates
        self.keep_retired = keep_retired
        self.interval_s = interval_s
        self.batch = batch
        self.stats = HousekeepingStats()
        self._log = logger or get_logger(component="housekeeping")

    @classmethod
    def of(cls, settings: Settings, candles: CandleRepository, registry: ModelRegistry | None,
           clock: Callable[[], int], logger: Any = None) -> Housekeeper:
        """The service's housekeeper (``SMC_FEED__RETENTION_DAYS``, ``SMC_LEARNER__KEEP_CANDIDATES``,
        ``SMC_LEARNER__KEEP_RETIRED``)."""
        return cls(candles, registry, clock, retention_days=effective_retention_days(settings),
                   keep_candidates=settings.learner.keep_candidates, keep_retired=settings.learner.keep_retired,
                   logger=logger)

    async def run_once(self) -> tuple[int, int]:
        """One pass: (candles deleted, models deleted — candidates and retired champions)."""
        started = time.monotonic()
        candles = await self._prune_candles()
        models = 0
        if self._registry is not None and self.keep_candidates > 0:
            models += await self._registry.prune(self.keep_candidates)
        if self._registry is not None and self.keep_retired > 0:
            models += await self._registry.prune_retired(self.keep_retired)
        st = self.stats
        st.runs += 1
        st.candles_deleted += candles
        st.models_deleted += models
        st.last_seconds = time.monotonic() - started
        if candles or models:
            self._log.info("housekeeping", candles_deleted=candles, models_deleted=models,
                           seconds=round(st.last_seconds, 3))
        return candles, models

    async def _prune_candles(self) -> int:
        now = self._clock()
        if self.retention_ms == 0 or now <= 0:  # keep everything, or no market time yet (a replay's start)
            return 0
        series = await self._candles.series()
        if not series:
            return 0
        cut = min(now, max(newest for _, _, newest in series)) - self.retention_ms
        deleted = 0
        for symbol, interval, _ in series:
            while True:
                n = await self._candles.prune(symbol, interval, cut, self.batch)
                deleted += n
                if n < self.batch:
                    break
        return deleted

    async def run(self) -> None:
        """Forever: a pass now, then one every ``interval_s``; a failed pass is logged and counted."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be down: the next pass retries, the service goes on
                self.stats.failed += 1
                self._log.warning("housekeeping_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval_s)


__all__ = ["Housekeeper", "HousekeepingStats", "effective_retention_days"]
