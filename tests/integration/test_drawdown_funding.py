"""Funding in the max-drawdown PnL on a live TradingStack: the emulator (real 2023 candles, signed REST, the
user-data stream) replayed across a funding time, PostgreSQL for the trades and the control events."""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.trading import Signal
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.emulator.account import account_filters
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.settings import load_settings
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations

pytestmark = pytest.mark.integration
MINUTE_MS = 60_000
FUNDING_MS = 1_689_696_000_000
"""2023-07-18 16:00 UTC, a funding time inside the shared data."""
RATE = Decimal("0.0001")  # the emulator's default funding rate


async def test_a_live_stack_counts_funding_as_charged_and_reads_it_back_from_the_exchange_at_start(
        shared_data: Path, pg_dsn: str, tmp_path: Path) -> None:
    """A long opened through the live stack (replay mode: signed orders to the emulator, on its clock) pays
    funding at 16:00 UTC: the executor takes the update's ``bc`` into the max-drawdown PnL at once; a new stack
    started on the same account reads the same payment back from ``GET /fapi/v1/income`` (no trade has closed:
    the funding is all the PnL there is); a start while that endpoint fails goes on without it, and says so."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=4)
    config = EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=("BTCUSDT",),
                            start_time_ms=FUNDING_MS - 4 * MINUTE_MS, max_minutes=12)
    em = Emulator(config)
    await em.start()
    settings = load_settings(
        state_dir=tmp_path, mode="replay", binance_api_key=config.api_key, binance_api_secret=config.api_secret,
        venue={"rest_base": em.rest_url, "ws_market_base": em.ws_market_base, "ws_private_base": em.ws_private_base,
               "ws_public_base": em.ws_public_base},
        trading={"funding_stream": False})
    filters = account_filters(em.market)

    def stack_of(session: aiohttp.ClientSession) -> TradingStack:
        return TradingStack(settings, filters=filters, session=session, pool=pool,
                            governor=WeightGovernor(2400, 0.1), brackets_file=shared_data / LEVERAGE_TIERS)

    async def minute(stack: TradingStack) -> None:
        em.resume()
        await em.wait_minutes(em.minutes_replayed + 1)
        em.pause()
        stack.on_candle(em.candles("BTCUSDT")[-1], [])

    try:
        async with aiohttp.ClientSession() as session:
            stack = stack_of(session)
            await stack.start()
            try:
                await minute(stack)
                last = em.candles("BTCUSDT")[-1]
                signal = Signal(f"BTCUSDT:LONG:{last.open_time}", "BTCUSDT", "LONG", last.open_time,
                                Decimal(repr(last.close)), 0.75, 5.0, 20.0, "funding-drawdown",
                                features=tuple(0.0 for _ in FEATURE_SCHEMA.names),
                                schema_version=FEATURE_SCHEMA.version, created_ms=stack.clock())
                assert stack.executor.submit(signal)
                await stack.executor.idle()
                assert "BTCUSDT" in stack.executor.book, stack.executor.stats.skip_reasons
                qty = stack.executor.book["BTCUSDT"].position.quantity
                funded = asyncio.Event()  # subscribed after the executor: when it fires, the executor has it

                def on_event(event: Any) -> None:
                    if getattr(event, "reason", "") == "FUNDING_FEE":
                        funded.set()

                stack.broker.subscribe(on_event)
                while stack.clock() < FUNDING_MS:
                    await minute(stack)
                await asyncio.wait_for(funded.wait(), 10)
                await stack.executor.idle()
                mark = Decimal(repr(em.market.candle("BTCUSDT", FUNDING_MS - MINUTE_MS).close))
                paid = (qty * mark * RATE).quantize(Decimal("0.00000001"), ROUND_HALF_UP)
                assert paid > 0 and stack.executor.stats.funding_settlements == 1
                assert stack.executor.drawdown_guard.pnl == -paid  # counted as charged
                assert stack.executor.metrics()["executor_funding_settlements"] == 1.0
                assert stack.executor.day_funding is not None  # the daily summary's: the exchange's income history
                assert await stack.executor.day_funding(FUNDING_MS, FUNDING_MS + 1) == -paid
                assert await stack.executor.day_funding(FUNDING_MS + 1, FUNDING_MS + 2) == 0
            finally:
                await stack.executor.stop()
                await stack.stop()

            em.faults.http_error(503, count=1, path="/fapi/v1/income")  # the history unavailable at one start
            blind = stack_of(session)
            with structlog.testing.capture_logs() as logs:
                await blind.start()
            try:  # the start went on without it, said so, and recovered the position
                assert blind.executor.drawdown_guard.pnl == 0 and "BTCUSDT" in blind.executor.book
                [unknown] = [e for e in logs if e["event"] == "drawdown_funding_unknown"]
                assert unknown["error"].startswith("TemporaryError") and "/fapi/v1/income" in unknown["error"], unknown
            finally:
                await blind.executor.stop()
                await blind.stop()

            again = stack_of(session)
            await again.start()
            try:
                assert again.executor.drawdown_guard.pnl == -paid  # from the exchange's income history
                assert again.executor.stats.funding_settlements == 0
            finally:
                await again.executor.stop()
                await again.stop()
    finally:
        await em.stop()
        await pool.close()
