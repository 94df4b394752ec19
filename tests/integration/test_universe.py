"""BinanceUniverse against the emulator, real PostgreSQL and real Redis: sources and refresh."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from smc_quant.datasets import load_exchange_info
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.rest import BinanceRestClient, WeightGovernor
from smc_quant.settings import UniverseSettings
from smc_quant.store.universe_cache import UniverseCache
from smc_quant.universe import FALLBACK_SYMBOLS, BinanceUniverse
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.integration



@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    """The test Redis database."""
    client: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_key() -> str:
    """A key of this test's own, so concurrent test runs cannot see each other's payloads."""
    return f"test:universe:{uuid.uuid4().hex}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP session for the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening, so every connection attempt is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def start_emulator(root: Path, **options: Any) -> Emulator:
    emu = Emulator(EmulatorConfig(data_dir=root, speed=0, start_paused=True, **options))
    await emu.start()
    return emu


def rest_client(session: aiohttp.ClientSession, url: str) -> BinanceRestClient:
    return BinanceRestClient(session, url, WeightGovernor(), retries=0)


def make(rest: BinanceRestClient, pool: asyncpg.Pool, redis: aioredis.Redis | None,
         redis_key: str = "unused") -> BinanceUniverse:
    return BinanceUniverse(rest, UniverseCache(pool), redis, UniverseSettings(), redis_key=redis_key)


async def test_loads_from_the_exchange_and_writes_through(
        shared_data: Path, session: aiohttp.ClientSession, pool: asyncpg.Pool, redis: aioredis.Redis,
        redis_key: str) -> None:
    """All 297 tradable USDT perpetuals come from exchangeInfo, and the payload lands in Redis and PG."""
    emu = await start_emulator(shared_data, map_to_exchange_info=True, weight_limit=1200)
    try:
        rest = rest_client(session, emu.rest_url)
        universe = await make(rest, pool, redis, redis_key).load()
    finally:
        await emu.stop()
        cached_redis = await redis.getdel(redis_key)
    assert (universe.source, len(universe.symbols), universe.weight_limit) == ("exchange", 297, 1200)
    assert universe.filters["ETHUSDT"] is not None
    assert universe.filters["ETHUSDT"].tick_size == Decimal("0.01")
    assert rest.governor.budget == 1080
    cached_pg = await UniverseCache(pool).load()
    assert cached_pg is not None
    assert len(cached_pg.payload["symbols"]) == len(orjson.loads(cached_redis)["symbols"]) == 347


async def test_exchange_down_falls_back_to_redis_then_postgres_then_the_list(
        shared_data: Path, session: aiohttp.ClientSession, pool: asyncpg.Pool, redis: aioredis.Redis,
        redis_key: str) -> None:
    """With the emulator stopped the universe comes from Redis, then PostgreSQL, then the 20-pair list."""
    emu = await start_emulator(shared_data, map_to_exchange_info=True)
    url = emu.rest_url
    try:
        first = await make(rest_client(session, url), pool, redis, redis_key).load()
    finally:
        await emu.stop()
    try:
        down = rest_client(session, url)
        from_redis = await make(down, pool, redis, redis_key).load()
        await redis.delete(redis_key)
        from_pg = await make(down, pool, redis, redis_key).load()
        await pool.execute("DELETE FROM exchange_info_cache")
        fallback = await make(down, pool, redis, redis_key).load()
    finally:
        await redis.delete(redis_key)
    assert (from_redis.source, from_redis.symbols) == ("redis", first.symbols)
    assert (from_pg.source, from_pg.symbols) == ("postgres", first.symbols)
    assert from_pg.filters == first.filters
    assert (fallback.source, fallback.symbols) == ("fallback", tuple(sorted(FALLBACK_SYMBOLS)))
    assert set(fallback.filters.values()) == {None}


async def test_unreachable_redis_is_skipped_for_postgres(
        shared_data: Path, session: aiohttp.ClientSession, pool: asyncpg.Pool, refused_port: int) -> None:
    """A Redis that refuses connections and an exchange that is down still give the PostgreSQL copy."""
    await UniverseCache(pool).save(load_exchange_info(shared_data))
    dead_redis: aioredis.Redis = aioredis.from_url(f"redis://127.0.0.1:{refused_port}/0")
    try:
        down = rest_client(session, f"http://127.0.0.1:{refused_port}")
        universe = await make(down, pool, dead_redis).load()
    finally:
        await dead_redis.aclose()
    assert (universe.source, len(universe.symbols)) == ("postgres", 297)


async def test_refresh_reports_added_and_removed_symbols(
        shared_data: Path, session: aiohttp.ClientSession, pool: asyncpg.Pool) -> None:
    """A universe loaded from an older cached copy reports what the exchange added and removed."""
    real = load_exchange_info(shared_data)
    without_eth = [s for s in real["symbols"] if s["symbol"] != "ETHUSDT"]
    await UniverseCache(pool).save({**real, "symbols": without_eth})
    emu = await start_emulator(shared_data, symbols=("BTCUSDT", "ETHUSDT"))
    try:
        emu.faults.http_error(503, 1)
        universe = make(rest_client(session, emu.rest_url), pool, None)
        loaded = await universe.load()
        change = await universe.refresh()
    finally:
        await emu.stop()
    assert (loaded.source, len(loaded.symbols)) == ("postgres", 296)
    assert change.added == ("ETHUSDT",)
    assert len(change.removed) == 295
    assert "BTCUSDT" not in change.removed
    assert universe.current is not None
    assert (universe.current.source, universe.current.symbols) == ("exchange", ("BTCUSDT", "ETHUSDT"))


async def test_refresh_keeps_the_universe_while_the_exchange_fails(
        shared_data: Path, session: aiohttp.ClientSession, pool: asyncpg.Pool) -> None:
    """A failed refresh reports no change and keeps the current universe instead of shrinking it."""
    emu = await start_emulator(shared_data, symbols=("BTCUSDT", "ETHUSDT"))
    try:
        universe = make(rest_client(session, emu.rest_url), pool, None)
        loaded = await universe.load()
        emu.faults.http_error(503, 1)
        change = await universe.refresh()
    finally:
        await emu.stop()
    assert (change.added, change.removed) == ((), ())
    assert universe.current is loaded
