"""Settings changed between two runs with positions open (found by a review of that everyday operator action).

- The traded symbols narrowed (``SMC_UNIVERSE__SYMBOLS`` / ``MAX_SYMBOLS``) with positions open on symbols left
  out: the live start used to fail on them (``KeyError`` from the order manager's rules, in a loop: the positions
  left to their exchange-side orders with no 2-hour exit, breaker or drawdown guard) and the paper start dropped
  them (``position_vanished``, their PnL lost). The stack keeps a booked symbol's rules until its position closes.
- The API key pointed at another sub-account of the same venue: refused while the book is open.

The TradingStack as the service builds it, signed to the emulator (replay mode: the live code path) or on paper,
over real sockets and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import structlog

from shards.account_guard import BookElsewhere
from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.trading import ExitReason, Signal
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.emulator.account import account_filters
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.settings import load_settings
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.mark.parametrize("mode", ["replay", "paper"])
async def test_positions_on_symbols_left_out_are_kept_and_closed_as_usual(shared_data: Path, pg_dsn: str,
                                                                         tmp_path: Path, mode: str) -> None:
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=6)
    em = Emulator(EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=SYMBOLS, max_minutes=60))
    await em.start()
    settings = load_settings(
        state_dir=tmp_path, mode=mode, binance_api_key=em.config.api_key, binance_api_secret=em.config.api_secret,
        venue={"rest_base": em.rest_url, "ws_market_base": em.ws_market_base, "ws_private_base": em.ws_private_base,
               "ws_public_base": em.ws_public_base},
        trading={"funding_stream": False})
    rules = account_filters(em.market)

    def stack_of(session: aiohttp.ClientSession, traded: tuple[str, ...]) -> TradingStack:
        return TradingStack(settings, filters={s: rules[s] for s in traded}, session=session, pool=pool,
                            governor=WeightGovernor(2400, 0.1), brackets_file=shared_data / LEVERAGE_TIERS,
                            other_filters={s: f for s, f in rules.items() if s not in traded})

    async def minute(stack: TradingStack) -> None:
        em.resume()
        await em.wait_minutes(em.minutes_replayed + 1)
        em.pause()
        for symbol in SYMBOLS:
            stack.on_candle(em.candles(symbol)[-1], [])

    def signal(stack: TradingStack, symbol: str) -> Signal:
        last = em.candles(symbol)[-1]
        return Signal(f"{symbol}:LONG:{last.open_time}", symbol, "LONG", last.open_time, Decimal(repr(last.close)),
                      0.75, 8.0, 30.0, "test", features=tuple(0.0 for _ in FEATURE_SCHEMA.names),
                      schema_version=FEATURE_SCHEMA.version, created_ms=stack.clock())

    try:
        async with aiohttp.ClientSession() as session:
            first = stack_of(session, SYMBOLS)
            await first.start()
            await minute(first)
            for symbol in ("ETHUSDT", "SOLUSDT"):
                assert first.executor.submit(signal(first, symbol))
            await first.executor.idle()
            assert sorted(first.executor.book) == ["ETHUSDT", "SOLUSDT"], first.executor.stats.skip_reasons
            await first.stop()

            second = stack_of(session, ("BTCUSDT",))  # the operator now trades BTCUSDT only
            with structlog.testing.capture_logs() as logs:
                await second.start()  # used to fail: KeyError 'ETHUSDT'
                await second.executor.idle()
            try:
                assert sorted(second.executor.book) == ["ETHUSDT", "SOLUSDT"]
                assert [e["symbols"] for e in logs if e["event"] == "symbols_kept_until_closed"] == [
                    ["ETHUSDT", "SOLUSDT"]]
                assert second.repo is not None and await second.repo.open_alarms() == []
                if mode == "replay":
                    assert sorted(p.symbol for p in em.account.positions()) == ["ETHUSDT", "SOLUSDT"]
                    assert len(em.account.open_algo_orders("ETHUSDT")) == 2  # its stop and target stand
                assert await second.executor.close("ETHUSDT", ExitReason.TIME)  # the 2-hour exit still works
                await second.executor.idle()
                assert sorted(second.executor.book) == ["SOLUSDT"]
                assert [t.symbol for t in await second.repo.trades()] == ["ETHUSDT"]
            finally:
                await second.executor.stop()
                await second.stop()
    finally:
        await em.stop()
        await pool.close()


async def test_a_key_of_another_sub_account_is_refused_while_the_book_is_open(shared_data: Path, pg_dsn: str,
                                                                             tmp_path: Path) -> None:
    """The API key is pointed at another sub-account on the same venue (two emulators stand in for two accounts:
    both bind as the same account, as two sub-accounts both bind as ``live https://fapi.binance.com``) while ETHUSDT
    is open. The start used to end the book as ``position_vanished`` there — no trade, its entry marked ended — and,
    back on the first account, the real position was a stranger's: no 2-hour exit, caps or breaker. The start is now
    refused, the book untouched; back on the first account it starts and holds the position as before."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=6)
    first, other = (Emulator(EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=SYMBOLS,
                                            max_minutes=60)) for _ in range(2))
    await first.start()
    await other.start()

    def stack_on(em: Emulator, session: aiohttp.ClientSession) -> TradingStack:
        settings = load_settings(
            state_dir=tmp_path, mode="replay", binance_api_key=em.config.api_key,
            binance_api_secret=em.config.api_secret, trading={"funding_stream": False},
            venue={"rest_base": em.rest_url, "ws_market_base": em.ws_market_base,
                   "ws_private_base": em.ws_private_base, "ws_public_base": em.ws_public_base})
        return TradingStack(settings, filters=dict(account_filters(em.market)), session=session, pool=pool,
                            governor=WeightGovernor(2400, 0.1), brackets_file=shared_data / LEVERAGE_TIERS)

    try:
        async with aiohttp.ClientSession() as session:
            stack = stack_on(first, session)
            await stack.start()
            first.resume()
            await first.wait_minutes(first.minutes_replayed + 1)
            first.pause()
            last = first.candles("ETHUSDT")[-1]
            stack.on_candle(last, [])
            assert stack.executor.submit(Signal(
                f"ETHUSDT:LONG:{last.open_time}", "ETHUSDT", "LONG", last.open_time, Decimal(repr(last.close)), 0.75,
                8.0, 30.0, "test", features=tuple(0.0 for _ in FEATURE_SCHEMA.names),
                schema_version=FEATURE_SCHEMA.version, created_ms=stack.clock()))
            await stack.executor.idle()
            assert list(stack.executor.book) == ["ETHUSDT"]
            await stack.stop()

            elsewhere = stack_on(other, session)
            try:
                with pytest.raises(BookElsewhere, match="knows none of the open book's entries"):
                    await elsewhere.start()
            finally:
                await elsewhere.executor.stop()
                await elsewhere.stop()
            assert stack.repo is not None
            assert [p.symbol for p, _ in await stack.repo.open_positions()] == ["ETHUSDT"]
            assert await stack.repo.open_alarms() == [] and await stack.repo.trades() == []

            back = stack_on(first, session)
            await back.start()
            try:
                assert list(back.executor.book) == ["ETHUSDT"] and back.executor.foreign == set()
            finally:
                await back.executor.stop()
                await back.stop()
    finally:
        await first.stop()
        await other.stop()
        await pool.close()
