"""A delisting announced while the service runs: the emulator's exchangeInfo gets the symbol's ``deliveryDate``
(as Binance announces one), the universe refresh reads it, and the trading stack stops entering that symbol at
once (other symbols trade on), saying so once; an open position on a symbol whose delisting is near is closed."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import structlog

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.trading import ExitReason, Signal, Trade
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.rest import BinanceRestClient
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.notify import utc_minute
from smc_quant.settings import load_settings
from smc_quant.universe import BinanceUniverse

pytestmark = pytest.mark.integration
START_MS = 1_689_696_000_000  # 2023-07-18 16:00 UTC, inside the shared data
DELIST_MS = START_MS + 3 * 86_400_000


async def test_a_delisting_announced_while_running_stops_new_entries_on_that_symbol(
        shared_data: Path, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with Emulator(EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True,
                                       symbols=("BTCUSDT", "ETHUSDT"), start_time_ms=START_MS,
                                       max_minutes=10)) as em:
        settings = load_settings(state_dir=tmp_path, trading={"funding_stream": False},
                                 venue={"rest_base": em.rest_url}, universe={"refresh_s": 60.0})
        governor = WeightGovernor(2400, 0.1)
        source = BinanceUniverse(BinanceRestClient(http, em.rest_url, governor), None, None, settings.universe)
        universe = await source.load()
        assert universe.symbols == ("BTCUSDT", "ETHUSDT") and universe.delistings == {}
        stack = TradingStack(settings, filters=universe.filters, session=http, pool=None, governor=governor,
                             brackets_file=shared_data / LEVERAGE_TIERS, delistings=universe.delistings)
        await stack.start()
        try:
            em.resume()
            await em.wait_minutes(1)
            em.pause()
            for symbol in universe.symbols:  # marks and paper prices of the minute that closed
                stack.on_candle(em.candles(symbol)[-1], [])

            em.market.schedule_delisting("ETHUSDT", DELIST_MS)
            with structlog.testing.capture_logs() as logs:
                change = await source.refresh()
                assert source.current is not None and change.added == change.removed == ()
                assert stack.set_delistings(source.current.delistings) == ["ETHUSDT"]
                await source.refresh()  # the next refresh: still scheduled, not announced again
                assert stack.set_delistings(source.current.delistings) == []
            [said] = [e for e in logs if e["event"] == "delisting_scheduled"]
            assert (said["symbol"], said["at"], said["open_position"]) == ("ETHUSDT", "2023-07-21 16:00 UTC", False)

            for symbol in universe.symbols:
                last = em.candles(symbol)[-1]
                assert stack.executor.submit(Signal(
                    f"{symbol}:LONG:{last.open_time}", symbol, "LONG", last.open_time, Decimal(repr(last.close)),
                    0.75, 1.0, 1.5, "delisting-test", features=tuple(0.0 for _ in FEATURE_SCHEMA.names),
                    schema_version=FEATURE_SCHEMA.version, created_ms=stack.clock()))
            await stack.executor.idle()
            assert stack.executor.stats.skip_reasons == {"delisting": 1}
            assert set(stack.executor.book) == {"BTCUSDT"}  # the other symbol trades on

            # BTCUSDT's delisting is announced 20 minutes ahead, inside the 30-minute lead: the exit clock closes
            # the open position now, at market, as a forced exit with its own reason (long before its 2 h limit)
            soon = stack.clock() + 20 * 60_000
            em.market.schedule_delisting("BTCUSDT", soon)
            with structlog.testing.capture_logs() as logs:
                await source.refresh()
                assert source.current is not None
                assert stack.set_delistings(source.current.delistings) == ["BTCUSDT"]
            [said] = [e for e in logs if e["event"] == "delisting_scheduled"]
            assert (said["open_position"], said["closes_by"]) == (True, utc_minute(soon - 30 * 60_000))
            closed: asyncio.Queue[Trade] = asyncio.Queue()
            stack.executor.add_trade_listener(closed.put_nowait)
            assert await stack.executor.check_exits() == 1
            trade = await asyncio.wait_for(closed.get(), 10.0)
            assert (trade.symbol, trade.exit_reason) == ("BTCUSDT", ExitReason.DELISTING)
            assert stack.executor.book == {} and stack.executor.stats.forced_exits == 1
            assert await stack.broker.positions() == []  # the paper account is flat too
        finally:
            await stack.executor.stop()
            await stack.stop()
