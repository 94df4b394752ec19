"""CandleRepository against a real PostgreSQL database, on real BTCUSDT/ETHUSDT candles."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.candles import Candle
from smc_quant.store.candles import CandleRepository
from tests.builders import candles_of

pytestmark = pytest.mark.integration


def real_candles(root: Path, symbol: str, count: int) -> list[Candle]:
    """The first ``count`` real 1m candles of ``symbol`` with the derived wire fields."""
    return candles_of(read_klines(root / KLINES_2023_1M / f"{symbol}.csv.gz"), 0, count)



async def test_upsert_is_idempotent_and_counts_only_new_rows(pool: asyncpg.Pool, shared_data: Path) -> None:
    """Re-sending candles, also duplicated inside one batch, stores each once and counts only new ones."""
    repo = CandleRepository(pool)
    candles = real_candles(shared_data, "BTCUSDT", 100)
    assert await repo.upsert(candles[:60]) == 60
    assert await repo.upsert(candles[40:] + candles[40:]) == 40
    assert await repo.upsert(candles) == 0
    assert await repo.counts("1m") == {"BTCUSDT": 100}


async def test_upsert_keeps_the_first_stored_version(pool: asyncpg.Pool, shared_data: Path) -> None:
    """A later candle with the same key never overwrites the stored one."""
    repo = CandleRepository(pool)
    first = real_candles(shared_data, "ETHUSDT", 1)[0]
    await repo.upsert([first])
    altered = Candle(first.symbol, "1m", first.open_time, 1.0, 2.0, 0.5, 1.5, 9.0)
    assert await repo.upsert([altered]) == 0
    assert await repo.fetch("ETHUSDT", "1m", first.open_time, first.open_time) == [first]


async def test_upsert_of_nothing_is_zero(pool: asyncpg.Pool) -> None:
    """An empty batch is a no-op."""
    assert await CandleRepository(pool).upsert([]) == 0


async def test_round_trip_is_exact_field_by_field(pool: asyncpg.Pool, shared_data: Path) -> None:
    """What fetch returns equals what was stored, every field, oldest first, bounds inclusive."""
    repo = CandleRepository(pool)
    candles = real_candles(shared_data, "BTCUSDT", 50)
    await repo.upsert(list(reversed(candles)))
    got = await repo.fetch("BTCUSDT", "1m", candles[10].open_time, candles[19].open_time)
    assert got == candles[10:20]
    assert await repo.fetch("BTCUSDT", "5m", candles[0].open_time, candles[-1].open_time) == []


async def test_latest_gives_newest_per_symbol_oldest_first(pool: asyncpg.Pool, shared_data: Path) -> None:
    """latest() gives each symbol its own last N candles in time order and omits unknown symbols."""
    repo = CandleRepository(pool)
    btc = real_candles(shared_data, "BTCUSDT", 30)
    eth = real_candles(shared_data, "ETHUSDT", 5)
    await repo.upsert(btc + eth)
    got = await repo.latest(["BTCUSDT", "ETHUSDT", "NOPEUSDT"], "1m", 10)
    assert got == {"BTCUSDT": btc[-10:], "ETHUSDT": eth}


async def test_last_open_times_and_counts(pool: asyncpg.Pool, shared_data: Path) -> None:
    """last_open_times() and counts() report the newest open time and the number of rows per symbol."""
    repo = CandleRepository(pool)
    btc = real_candles(shared_data, "BTCUSDT", 20)
    eth = real_candles(shared_data, "ETHUSDT", 7)
    await repo.upsert(btc + eth)
    assert await repo.last_open_times(["BTCUSDT", "ETHUSDT", "NOPEUSDT"], "1m") == {
        "BTCUSDT": btc[-1].open_time, "ETHUSDT": eth[-1].open_time}
    assert await repo.counts("1m") == {"BTCUSDT": 20, "ETHUSDT": 7}


async def test_ten_thousand_rows_in_one_batch(pool: asyncpg.Pool, shared_data: Path) -> None:
    """A 10,000-candle batch goes in whole through the COPY path, twice without duplicates."""
    repo = CandleRepository(pool)
    candles = real_candles(shared_data, "BTCUSDT", 10_000)
    assert await repo.upsert(candles) == 10_000
    assert await repo.upsert(candles) == 0
    assert await repo.counts("1m") == {"BTCUSDT": 10_000}
