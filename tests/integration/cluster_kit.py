"""Helpers for the cluster tests: settings pointing at an emulator, and checks against PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from asyncpg.transaction import Transaction

from smc_quant.domain.candles import Candle
from smc_quant.exchange.emulator import Emulator
from smc_quant.settings import Settings, load_settings

SECRET = "s3cr3t-never-shown-0123456789abcdef"


def settings_for(emu: Emulator, dsn: str, *, shards: int = 4, market_base: str | None = None,
                 cluster: dict[str, Any] | None = None, **feed: Any) -> Settings:
    """Service settings aimed at ``emu`` with fast heartbeats and backoff for loopback tests (``feed``:
    overrides of the feed section, ``cluster``: of the cluster section). Symbols start empty (no
    bootstrap history) unless ``bootstrap_candles`` is given: these tests count candles from the replay's
    first minute."""
    feed_settings = {"heartbeat_timeout_s": 1.5, "backoff_initial_s": 0.05, "backoff_max_s": 0.5,
                     "flush_interval_s": 0.05, "control_messages_per_s": 10.0, "bootstrap_candles": 0, **feed}
    return load_settings(
        shard_count=shards,
        database_url=dsn,
        redis_url=None,
        venue={"rest_base": emu.rest_url, "ws_market_base": market_base or emu.ws_market_base,
               "ws_public_base": emu.ws_public_base},
        universe={"quote_assets": ("USDT", "USDC")},
        feed=feed_settings,
        ops={"port": 0, "freshness_window_s": 1.0},
        cluster=cluster or {},
        log_level="WARNING",
        binance_api_key=SECRET[::-1],
        binance_api_secret=SECRET,
    )


async def stored_candles(dsn: str) -> dict[str, list[Candle]]:
    """Every 1m candle in the database, per symbol, oldest first."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT symbol, interval, open_time, open, high, low, close, volume, quote_volume, trades, "
            "taker_buy_volume, taker_buy_quote_volume FROM candles WHERE interval = '1m' "
            "ORDER BY symbol, open_time")
    finally:
        await conn.close()
    out: dict[str, list[Candle]] = {}
    for r in rows:
        out.setdefault(r["symbol"], []).append(Candle(*r.values()))
    return out


def assert_exact(emu: Emulator, stored: dict[str, list[Candle]], symbols: tuple[str, ...], minutes: int) -> None:
    """Each symbol has exactly ``minutes`` candles, equal field by field to what the emulator served."""
    assert set(stored) == set(symbols), set(symbols) ^ set(stored)
    for symbol in symbols:
        served = [c for c in emu.candles(symbol)][:minutes]
        got = stored[symbol]
        assert len(got) == minutes, (symbol, len(got))
        assert got == served, symbol


@contextlib.asynccontextmanager
async def candles_locked(dsn: str) -> AsyncIterator[Transaction]:
    """Another session holds the candles table in ACCESS EXCLUSIVE mode: every write to it blocks, the
    database there but unable to take candles. Roll the yielded transaction back to release it early."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        yield tx
    finally:
        await conn.close()
