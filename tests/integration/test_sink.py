"""The candle sink never loses a batch: not to a database outage, not to cancellation mid-write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shards.sink import CandleSink
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.store.candles import CandleRepository
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from tests.builders import candles_of
from tests.integration.cluster_kit import candles_locked

pytestmark = pytest.mark.integration


async def _sink(dsn: str) -> tuple[asyncpg.Pool, CandleSink]:
    """A pool on the migrated database and a sink writing through it in batches of 100."""
    await apply_migrations(dsn)
    pool = await create_pool(dsn)
    return pool, CandleSink(CandleRepository(pool), FeedMetrics(shard=0), flush_interval_s=0.01, flush_batch=100)


async def test_cancel_during_blocked_write_then_drain_keeps_everything(shared_data: Path, pg_dsn: str) -> None:
    """A flush cancelled while PostgreSQL blocks it keeps its batch; the shutdown drain writes it once."""
    candles = candles_of(read_klines(shared_data / KLINES_2023_1M / "SOLUSDT.csv.gz"), 0, 500)
    pool, sink = await _sink(pg_dsn)
    try:
        async with candles_locked(pg_dsn) as tx:
            for c in candles:
                sink.add(c)
            task = asyncio.create_task(sink.run())
            while sink.pending:  # noqa: ASYNC110 - yields (no timing) until the flusher has taken the batch
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert sink.pending == len(candles)
            await tx.rollback()
        await sink.flush()
        assert sink.pending == 0
        assert await pool.fetchval("SELECT count(*) FROM candles") == len(candles)
    finally:
        await pool.close()


async def test_drain_gives_up_at_its_budget_and_keeps_the_batch(shared_data: Path, pg_dsn: str) -> None:
    """A shutdown drain against a blocked table returns within its budget with the batch still pending
    (counted, not dropped); once PostgreSQL answers, the next drain writes it all once."""
    candles = candles_of(read_klines(shared_data / KLINES_2023_1M / "XRPUSDT.csv.gz"), 0, 300)
    pool, sink = await _sink(pg_dsn)
    try:
        async with candles_locked(pg_dsn):
            for c in candles:
                sink.add(c)
            assert await sink.drain(0.3) == len(candles)
            assert sink.pending == len(candles)
        assert await sink.drain(30.0) == 0
        assert await pool.fetchval("SELECT count(*) FROM candles WHERE symbol = 'XRPUSDT'") == len(candles)
    finally:
        await pool.close()
