"""The exchange changes under a running stack, which follows at the next universe refresh without a restart:

- a symbol's filters change (Binance moves a tick size from time to time): with the filters it started with, the
  live stack's protective stop is refused (-1111: too many decimals) and the position is closed at once, paying
  two fees for nothing; from the refresh on,
  it rounds with the new tick and the position opens protected;
- a new perpetual is listed: the stack can trade it, with the account's own leverage brackets read at once, and
  the single-process service subscribes it in its shard, fetches its history and analyses it.

Real emulator (signed orders, the user-data stream, its exchangeInfo), real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import structlog

from shards.app import Service
from shards.assignment import shard_of
from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.trading import ExitReason, PositionSide, Signal
from smc_quant.exchange.brackets import DEFAULT_TIER, load_brackets
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.rest import BinanceRestClient
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.store.migrations import apply_migrations
from smc_quant.universe import BinanceUniverse
from tests.integration.cluster_kit import settings_for, stored_candles
from tests.integration.trading_kit import FEATURES, live_settings, trading_rig

pytestmark = pytest.mark.integration
NEW_TICK = Decimal("0.10")


async def test_a_live_stack_follows_a_changed_tick_size_and_a_new_listing(shared_data: Path, pg_dsn: str,
                                                                         tmp_path: Path) -> None:
    """A live trading stack on its own (the refresh's filters handed over by hand, as the service's round does):
    before the refresh the stop on the old tick is refused and the position closed at market; after it the
    same signal opens protected on the new tick. A listing that opens becomes tradable with the account's own
    brackets."""
    async with trading_rig(shared_data, pg_dsn, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT")) as rig:
        em = rig.emulator
        em.market.hold_listing("SOLUSDT")  # announced, not trading yet
        settings = live_settings(em, tmp_path)
        governor = WeightGovernor(2400, 0.1)
        source = BinanceUniverse(BinanceRestClient(rig.session, em.rest_url, governor), None, None,
                                 settings.universe)
        universe = await source.load()
        assert universe.symbols == ("BTCUSDT", "ETHUSDT")
        stack = TradingStack(settings, filters=universe.filters, session=rig.session, pool=rig.pool,
                             governor=governor)
        await stack.start()
        try:
            ex = stack.executor

            def mark_all() -> None:
                for symbol in em.symbols:
                    stack.on_candle(em.candles(symbol)[-1], [])

            def signal(symbol: str, side: PositionSide, stop_pct: float, target_pct: float) -> Signal:
                last = em.candles(symbol)[-1]
                return Signal(f"{symbol}:{side}:{last.open_time}", symbol, side, last.open_time,
                              Decimal(repr(last.close)), 0.75, stop_pct, target_pct, "exchange-changes",
                              FEATURES, schema_version=FEATURE_SCHEMA.version, created_ms=stack.clock())

            mark_all()
            old_tick = stack.filters["ETHUSDT"].tick_size
            assert old_tick == Decimal("0.01")
            # Binance moves ETHUSDT's tick to 0.10; the stack still has 0.01
            em.set_filter("ETHUSDT", "PRICE_FILTER", tickSize=str(NEW_TICK))
            with structlog.testing.capture_logs() as logs:
                assert ex.submit(signal("ETHUSDT", "LONG", 1.03, 2.07))
                await ex.idle()
            # the stop rounded on the old tick: "Precision is over the maximum defined for this asset", at every try
            refused = {e["code"] for e in logs if e["event"] == "rest_rejected" and e["path"] == "/fapi/v1/algoOrder"}
            assert -1111 in refused, logs
            assert [e["message"] for e in logs if e["event"] == "order_alarm"] == [
                "stop could not be placed; closing at market"]
            assert "ETHUSDT" not in ex.book and rig.account.positions() == []  # unprotected: closed at once

            # the refresh hands the new filters over: risk and orders use them from the next signal on
            await rig.minutes(1)
            mark_all()
            with structlog.testing.capture_logs() as logs:
                await source.refresh()
                assert source.current is not None
                assert await stack.set_filters(source.current.filters) == ([], ["ETHUSDT"])
            [said] = [e for e in logs if e["event"] == "symbol_filters_changed"]
            assert said["changes"] == {"tick_size": ["0.01", "0.10"]}
            assert stack.risk.filters["ETHUSDT"].tick_size == NEW_TICK  # one dict: risk, orders, the stack
            assert ex.submit(signal("ETHUSDT", "LONG", 1.03, 2.07))
            await ex.idle()
            assert "ETHUSDT" in ex.book, ex.stats.skip_reasons
            position = ex.book["ETHUSDT"].position
            assert position.stop_price is not None and position.target_price is not None
            assert position.stop_price % NEW_TICK == 0 and position.target_price % NEW_TICK == 0
            assert {a.type for a in rig.account.open_algo_orders("ETHUSDT")} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
            await ex.close("ETHUSDT", ExitReason.MANUAL)

            # SOLUSDT opens: the refresh makes it tradable, with the account's brackets (not the default tier)
            em.market.list_again("SOLUSDT")
            await source.refresh()
            assert source.current is not None and "SOLUSDT" in source.current.symbols
            assert await stack.set_filters(source.current.filters) == (["SOLUSDT"], [])
            assert stack.brackets["SOLUSDT"].tiers != (DEFAULT_TIER,)
            assert stack.brackets["SOLUSDT"] == load_brackets(shared_data / LEVERAGE_TIERS)["SOLUSDT"]
            assert await stack.set_filters(source.current.filters) == ([], [])  # nothing new the second time
            assert ex.submit(signal("SOLUSDT", "SHORT", 1.0, 2.0))
            await ex.idle()
            assert "SOLUSDT" in ex.book, ex.stats.skip_reasons
        finally:
            await stack.stop()


async def test_the_service_takes_new_listings_into_their_shard_while_running(shared_data: Path, pg_dsn: str) -> None:
    """The single-process service, two shards of at most two streams per socket: BNBUSDT and XRPUSDT are announced
    but not trading when it starts. Once listed, the next universe refresh puts them in the shard a restart would
    give them (both DOGEUSDT's): BNBUSDT on the shard's open socket, XRPUSDT on a new one (the first is full).
    Each one's first candle fetches its recent history, and from then on it is stored, analysed in the shard's
    minute batch, priced for trading (paper) and counted by ``/health`` — no restart."""
    await apply_migrations(pg_dsn)
    new = ("BNBUSDT", "XRPUSDT")
    symbols = ("BTCUSDT", "ETHUSDT", "DOGEUSDT", *new)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=symbols, speed=240.0, updates_per_candle=1,
                                  max_minutes=30, start_paused=True, history_minutes=60, serve_history=True))
    for symbol in new:
        emu.market.hold_listing(symbol)
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=2, bootstrap_candles=20, streams_per_connection=2))
    try:
        await service.start()
        cluster, trading, ops = service.cluster, service.trading, service.ops
        assert cluster is not None and trading is not None and ops is not None and trading.paper is not None
        [feed] = [f for f in cluster.feeds if f.symbols == ("DOGEUSDT",)]
        assert {shard_of(s, 2) for s in new} == {feed.shard}  # where a restart would put them
        assert not set(new) & set(trading.filters)
        await cluster.wait_subscribed()
        emu.resume()
        await cluster.wait_until(emu.start_ms + MINUTE_MS)
        emu.pause()
        [socket] = feed.connections

        for symbol in new:
            emu.market.list_again(symbol)
        change = await service.refresh_universe()
        assert change is not None and change.added == new
        assert feed.symbols == ("BNBUSDT", "DOGEUSDT", "XRPUSDT")
        assert feed.connections[0] is socket and socket.streams == ("dogeusdt@kline_1m", "bnbusdt@kline_1m")
        assert [c.streams for c in feed.connections[1:]] == [("xrpusdt@kline_1m",)]
        analyzer = cluster.analyzers[cluster.feeds.index(feed)]
        assert set(new) <= set(analyzer.bank.index) and set(new) <= set(trading.filters)
        await cluster.wait_subscribed()  # the SUBSCRIBE on the open socket and the new socket's, acknowledged
        live_from = emu.start_ms + emu.minutes_replayed * MINUTE_MS
        until = live_from + 3 * MINUTE_MS
        emu.resume()
        await cluster.wait_until(until)
        emu.pause()

        await cluster.wait_persisted()
        stored = await stored_candles(pg_dsn)
        for symbol in new:
            times, values = feed.store.ring(symbol).arrays()
            assert times[0] == live_from - 20 * MINUTE_MS and times[-1] >= until  # history came with its first candle
            assert list(np.diff(times)) == [MINUTE_MS] * (len(times) - 1)
            real = {c.open_time: c.close for c in (emu.market.candle(symbol, int(t)) for t in times) if c is not None}
            assert [real[int(t)] for t in times] == list(values[:, 3])  # the exchange's own candles
            assert [c.open_time for c in stored[symbol]] == [int(t) for t in times]
            assert trading.paper.account.last_price(symbol) is not None  # priced by its candles: tradable
        assert analyzer.latest is not None and set(new) <= set(analyzer.latest.symbols)  # in the minute's batch
        _ok, body = ops.health()
        assert sum(shard["symbols"] for shard in body["shards"]) == len(symbols)  # type: ignore[union-attr]
    finally:
        await service.stop()
        await emu.stop()


async def test_a_live_service_reads_the_rules_again_as_soon_as_an_order_is_refused_on_one(
        shared_data: Path, pg_dsn: str, tmp_path: Path) -> None:
    """``smc-quant run`` with keys (replay mode against the emulator): Binance moves ETHUSDT's tick while it runs.
    The first order after that is refused (its stop: -1111) and the position closed at once — but the refusal makes
    the service re-read exchangeInfo at once instead of at the next hourly round (``RulesRefresh``; the stop's three
    refusals cost one read): the next signal opens protected on the new tick."""
    await apply_migrations(pg_dsn)
    async with Emulator(EmulatorConfig(data_dir=shared_data, symbols=("BTCUSDT", "ETHUSDT"), speed=240.0,
                                       updates_per_candle=1, max_minutes=30, start_paused=True)) as em:
        service = Service(live_settings(em, tmp_path, database_url=pg_dsn, redis_url=None, log_level="WARNING",
                                        ops={"port": 0}, learner={"enabled": False},
                                        feed={"bootstrap_candles": 0, "flush_interval_s": 0.05}))
        try:
            await service.start()
            cluster, trading, rules = service.cluster, service.trading, service.rules_refresh
            assert cluster is not None and trading is not None and rules is not None and trading.live is not None
            await cluster.wait_subscribed()
            minute = em.start_ms

            async def next_minute() -> None:
                nonlocal minute
                em.resume()
                await cluster.wait_until(minute)
                em.pause()
                minute += MINUTE_MS

            def signal() -> Signal:
                last = em.candles("ETHUSDT")[-1]
                return Signal(f"ETHUSDT:LONG:{last.open_time}", "ETHUSDT", "LONG", last.open_time,
                              Decimal(repr(last.close)), 0.75, 1.03, 2.07, "stale-rules", FEATURES,
                              schema_version=FEATURE_SCHEMA.version, created_ms=trading.clock())

            await next_minute()
            em.set_filter("ETHUSDT", "PRICE_FILTER", tickSize=str(NEW_TICK))
            ex = trading.executor
            assert ex.submit(signal())
            await ex.idle()
            assert "ETHUSDT" not in ex.book  # the stop on the old tick was refused: closed at once
            assert rules.runs == 1 and rules.requests >= 2  # one read for the whole burst
            await rules.idle()
            assert trading.filters["ETHUSDT"].tick_size == NEW_TICK  # read within the same minute, not the hour

            await next_minute()
            assert ex.submit(signal())
            await ex.idle()
            assert "ETHUSDT" in ex.book, ex.stats.skip_reasons
            position = ex.book["ETHUSDT"].position
            assert position.stop_price is not None and position.stop_price % NEW_TICK == 0
            assert rules.runs == 1 and service._extra_metrics()["rules_refresh_runs"] == 1
        finally:
            await service.stop()
