"""Retention on a real PostgreSQL: candles past the window are deleted in batches, nothing newer is touched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.settings import Settings
from smc_quant.store.candles import CandleRepository
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.retention import DAY_MS, Housekeeper, effective_retention_days
from tests.builders import candles_of

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BARS = 3000  # a little over two days of real 1m candles per symbol



@pytest.fixture
async def stored(pool: asyncpg.Pool, shared_data: Path) -> dict[str, np.ndarray]:
    """The first ``BARS`` real candles of each symbol, stored; their open times by symbol."""
    repo = CandleRepository(pool, synchronous_commit=True)
    out = {}
    for symbol in SYMBOLS:
        series = read_klines(shared_data / KLINES_2023_1M / f"{symbol}.csv.gz").slice(0, BARS)
        assert await repo.upsert(candles_of(series)) == BARS
        out[symbol] = series.open_time.astype(np.int64)
    return out


async def _open_times(pool: asyncpg.Pool, symbol: str) -> np.ndarray:
    rows = await pool.fetch("SELECT open_time FROM candles WHERE symbol = $1 ORDER BY open_time", symbol)
    return np.array([r["open_time"] for r in rows], dtype=np.int64)


@pytest.mark.parametrize("clock_ahead_ms", [0, 400 * DAY_MS],
                         ids=["clock-at-the-data", "clock-ahead-of-the-data"])
async def test_candles_older_than_the_window_are_deleted_in_batches(
        pool: asyncpg.Pool, stored: dict[str, np.ndarray], clock_ahead_ms: int) -> None:
    """With a one-day window, exactly the candles opening more than a day before the newest stored one go,
    in statements of at most ``batch`` rows; every later candle stays; a second pass deletes nothing. A
    clock far ahead of the data (paper mode against a 2023 replay, a restart after downtime) changes
    nothing: the window is measured from the earlier of the clock and the newest stored candle."""
    newest = int(max(t[-1] for t in stored.values()))
    now = newest + MINUTE_MS + clock_ahead_ms
    cut = min(now, newest) - DAY_MS
    keeper = Housekeeper(CandleRepository(pool), None, lambda: now, retention_days=1, keep_candidates=0, batch=400)
    expected = sum(int((t < cut).sum()) for t in stored.values())
    assert expected > 2 * 400, "the window must force several batches per symbol"
    assert await keeper.run_once() == (expected, 0)
    for symbol, times in stored.items():
        np.testing.assert_array_equal(await _open_times(pool, symbol), times[times >= cut])
    assert await keeper.run_once() == (0, 0)
    assert keeper.stats.runs == 2 and keeper.stats.candles_deleted == expected and keeper.stats.failed == 0


@pytest.mark.parametrize(("retention_days", "clock_ms"), [(0, None), (1, 0)],
                         ids=["retention-0-keeps-everything", "replay-before-its-first-candle"])
async def test_nothing_is_deleted_without_a_window_or_a_market_time(
        pool: asyncpg.Pool, stored: dict[str, np.ndarray], retention_days: float, clock_ms: int | None) -> None:
    """``retention_days = 0`` keeps everything; a replay clock that has not seen a candle yet (0) prunes
    nothing."""
    now = clock_ms if clock_ms is not None else int(max(t[-1] for t in stored.values())) + 10 * DAY_MS
    keeper = Housekeeper(CandleRepository(pool), None, lambda: now, retention_days=retention_days,
                         keep_candidates=0)
    assert await keeper.run_once() == (0, 0)
    for symbol, times in stored.items():
        np.testing.assert_array_equal(await _open_times(pool, symbol), times)


class _Log:
    """Records warnings; ``failures`` is set after the second ``housekeeping_failed``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []
        self.failures = asyncio.Event()

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))
        if sum(1 for e, _ in self.lines if e == "housekeeping_failed") >= 2:
            self.failures.set()


async def test_a_failed_pass_is_counted_and_the_loop_goes_on(pg_dsn: str) -> None:
    """With its database gone (a closed pool) each pass fails, is logged and counted, and the next one
    still comes: the service is not taken down by its housekeeping."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=1)
    await pool.close()
    log = _Log()
    keeper = Housekeeper(CandleRepository(pool), None, lambda: 10 * DAY_MS, retention_days=1, keep_candidates=0,
                         interval_s=0.01, logger=log)
    task = asyncio.create_task(keeper.run())
    try:
        await asyncio.wait_for(log.failures.wait(), timeout=30)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert keeper.stats.failed >= 2 and keeper.stats.runs == 0
    assert log.lines[0][0] == "housekeeping_failed" and "closed" in log.lines[0][1]["error"].lower()


def test_the_window_never_drops_what_the_service_reads_back() -> None:
    """The learner's look-back (its labelled days and the warm-up before them) and the warm start are kept
    whatever ``retention_days`` says; 0 stays 0."""
    def days(min_history: int = 4320, **feed: Any) -> float:
        return effective_retention_days(Settings(feed=feed, learner={"history_days": 7.0,
                                                                     "min_history_candles": min_history}))

    assert days(retention_days=1.0) == 10.0  # 7 labelled days + 3 days of warm-up before them
    assert days(retention_days=1.0, min_history=0) == 7.0
    assert days(retention_days=120.0) == 120.0
    assert days(retention_days=0.0) == 0.0
    assert days(retention_days=1.0, warm_start_candles=20_160) == 14.0  # warm start of two weeks
    with pytest.raises(ValueError, match="retention_days"):
        Housekeeper(None, None, lambda: 0, retention_days=-1, keep_candidates=0)  # type: ignore[arg-type]
