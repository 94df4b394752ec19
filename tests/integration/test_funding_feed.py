"""The funding guard end to end: the emulator's ``!markPrice@arr`` stream, the FundingFeed over a real socket,
the FundingBook, and the executor refusing the side that pays (stored with the quote it was judged by)."""

from __future__ import annotations

import asyncio
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from shards.funding_feed import STREAM, FundingFeed
from smc_quant.funding import FundingBook
from smc_quant.settings import load_settings
from tests.integration.emulator_kit import emulator_factory
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000
CENT_MICRO = Decimal("0.00000001")  # USDT amounts: 8 places, half-up (smc_quant.sim.ledger.to_usdt)


async def test_the_stream_lists_every_symbol_at_every_step_with_its_rate_and_next_funding_time(
        shared_data: Path, http: aiohttp.ClientSession) -> None:
    """Per step one push of both symbols: the in-candle price (the real close on the final step), the
    configured rates as Binance writes them, ``T`` the next 8-hour boundary after ``E``; nothing on the
    legacy route (acked, silent: the 2026 mis-route)."""
    make = emulator_factory(shared_data, max_minutes=2, start_paused=True, symbols=("BTCUSDT", "ETHUSDT"),
                            funding_rates=(("ETHUSDT", Decimal("-0.0075")),))
    async with make() as em:
        async with http.ws_connect(f"{em.ws_market_base}/stream?streams={STREAM}") as ws, \
                http.ws_connect(f"{em.ws_legacy_base}/stream?streams={STREAM}") as legacy:
            em.resume()
            await em.wait_minutes(2)
            frames = [orjson.loads((await ws.receive(timeout=5.0)).data) for _ in range(2 * 4)]
            with pytest.raises(TimeoutError):
                await legacy.receive(timeout=0.3)
        finals: dict[str, list[Any]] = {"BTCUSDT": [], "ETHUSDT": []}
        for n, frame in enumerate(frames):
            assert frame["stream"] == STREAM
            items = {i["s"]: i for i in frame["data"]}
            assert set(items) == {"BTCUSDT", "ETHUSDT"}
            assert (items["BTCUSDT"]["r"], items["ETHUSDT"]["r"]) == ("0.0001", "-0.0075")
            for item in items.values():
                assert item["e"] == "markPriceUpdate" and item["p"] == item["i"] == item["P"]
                assert item["T"] == (item["E"] // (8 * HOUR_MS) + 1) * 8 * HOUR_MS
                if n % 4 == 3:
                    finals[item["s"]].append(float(item["p"]))
        for symbol, closes in finals.items():
            assert closes == [c.close for c in em.candles(symbol)]


async def test_a_long_that_would_pay_funding_within_the_hold_is_refused_and_a_short_opens(
        shared_data: Path, pg_dsn: str) -> None:
    """ETHUSDT at +0.75 % per hour (funding every hour: always inside the 2-hour hold), the stream's first push
    truncated (counted, not fatal): the long is refused
    (``funding``, stored with the rate and time, no order sent), the short (paid 0.75 %) opens, and a BTCUSDT
    long at the 0.01 % baseline opens too."""
    async with trading_rig(shared_data, pg_dsn, funding_rates=(("ETHUSDT", Decimal("0.0075")),),
                           funding_interval_h=1) as rig:
        clock = [0.0]  # the book's receiving clock, advanced by hand
        book = FundingBook(max_age_s=120.0, clock=lambda: clock[0])
        feed = FundingFeed(session=rig.session, ws_market_base=rig.emulator.ws_market_base, book=book,
                           settings=load_settings().feed)
        feed.start()
        assert feed.metrics_dict()["funding_age_s"] == -1.0  # nothing received yet
        try:
            await asyncio.wait_for(feed.connection.subscribed.wait(), 10)
            rig.emulator.faults.malformed(1)  # the first push arrives truncated: counted, the next ones are used
            await rig.minutes(1)
            await asyncio.wait_for(feed.quoted.wait(), 10)
            assert feed.metrics.rejected == {"malformed": 1}
            now = rig.clock()
            eth = book.quote("ETHUSDT")
            assert eth is not None and eth.rate == Decimal("0.0075") and now < eth.next_ms <= now + HOUR_MS
            assert feed.metrics_dict()["funding_symbols"] == 5.0 and feed.metrics_dict()["funding_rejected"] == 1
            assert feed.metrics_dict()["funding_age_s"] >= 0.0  # quotes arrived

            ex = await rig.executor(funding=book.quote)
            long = rig.signal("ETHUSDT", "LONG", confidence=0.75, stop_pct=3.0, target_pct=6.0)
            assert ex.submit(long)
            await ex.idle()
            assert not ex.book and ex.stats.skip_reasons == {"funding": 1}
            assert rig.account.open_orders("ETHUSDT") == [] and rig.account.open_algo_orders("ETHUSDT") == []
            row = await rig.pool.fetchrow("SELECT decision, decision_reason, decision_detail FROM signals "
                                          "WHERE signal_id = $1", long.signal_id)
            assert (row["decision"], row["decision_reason"]) == ("skip", "funding")
            assert json.loads(row["decision_detail"])["funding"] == {"rate": "0.0075", "next_ms": eth.next_ms}
            for s in (rig.signal("ETHUSDT", "SHORT", confidence=0.75, stop_pct=3.0, target_pct=6.0),
                      rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=3.0, target_pct=6.0)):
                assert ex.submit(s)
                await ex.idle()
            assert set(ex.book) == {"ETHUSDT", "BTCUSDT"} and ex.book["ETHUSDT"].position.side == "SHORT"
            assert ex.stats.funding_unknown == 0

            # at the funding time the exchange charges both positions (the short receives 0.75 %, the long
            # pays 0.01 %) and says so on the user-data stream: the executor's wallet follows
            funded = asyncio.Event()  # subscribed after the executor: when it fires, the executor has the event
            rig.brokers[-1].subscribe(lambda e: funded.set() if getattr(e, "reason", "") == "FUNDING_FEE" else None)
            before = rig.account.balance().wallet
            held = {s: ex.book[s].position.quantity for s in ("ETHUSDT", "BTCUSDT")}
            while rig.clock() < eth.next_ms:
                await rig.minutes(1)
            await asyncio.wait_for(funded.wait(), 10)
            await ex.idle()
            assert set(ex.book) == {"ETHUSDT", "BTCUSDT"}, "precondition: no exit before the funding time"
            close = {s: Decimal(repr(rig.emulator.market.candle(s, eth.next_ms - 60_000).close)) for s in held}
            paid = (-held["ETHUSDT"] * close["ETHUSDT"] * Decimal("0.0075")).quantize(CENT_MICRO, ROUND_HALF_UP) \
                + (held["BTCUSDT"] * close["BTCUSDT"] * Decimal("0.0001")).quantize(CENT_MICRO, ROUND_HALF_UP)
            assert paid < 0 and rig.account.balance().wallet == before - paid
            assert ex.wallet == rig.account.balance().wallet
            assert rig.emulator.trading.funding_settled == 2

            unknown = rig.signal("SOLUSDT", "LONG", confidence=0.75, stop_pct=3.0, target_pct=6.0)
            await feed.stop()  # no more pushes: two minutes later the quotes are stale
            clock[0] += 120.001
            assert book.quote("SOLUSDT") is None
            assert ex.submit(unknown)
            await ex.idle()
            assert "SOLUSDT" in ex.book and ex.stats.funding_unknown == 1  # unknown funding never blocks
        finally:
            await feed.stop()


async def test_a_paper_position_pays_funding_from_the_stream_and_a_restart_keeps_it(
        shared_data: Path, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Paper over the emulator (replay clock), funding every market hour at 0.04 % on ETHUSDT (under the
    guard's 0.05 %): a long held across the funding time pays qty × mark × rate once — in the paper wallet,
    the executor's wallet (FUNDING_FEE update) and PostgreSQL — and a restart rebuilds the same wallet."""
    from shards.trading import TradingStack
    from smc_quant.datasets import LEVERAGE_TIERS
    from smc_quant.domain.trading import Signal
    from smc_quant.exchange.emulator import Emulator, EmulatorConfig
    from smc_quant.exchange.emulator.account import account_filters
    from smc_quant.features import FEATURE_SCHEMA

    rate = Decimal("0.0004")
    em = Emulator(EmulatorConfig(data_dir=shared_data, symbols=("ETHUSDT",), speed=0, start_paused=True,
                                 funding_rates=(("ETHUSDT", rate),), funding_interval_h=1))
    await em.start()
    settings = load_settings(state_dir=tmp_path, mode="replay", venue={"ws_market_base": em.ws_market_base})
    filters = account_filters(em.market)

    def stack_of(session: aiohttp.ClientSession) -> TradingStack:
        return TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                            brackets_file=shared_data / LEVERAGE_TIERS)

    async def minutes(stack: TradingStack, n: int) -> None:
        for _ in range(n):
            em.resume()
            await em.wait_minutes(em.minutes_replayed + 1)
            em.pause()
            stack.on_candle(em.candles("ETHUSDT")[-1], [])

    try:
        async with aiohttp.ClientSession() as session:
            stack = stack_of(session)
            await stack.start()
            assert stack.funding_feed is not None and stack.paper is not None
            await asyncio.wait_for(stack.funding_feed.connection.subscribed.wait(), 10)
            await minutes(stack, 2)
            await asyncio.wait_for(stack.funding_feed.quoted.wait(), 10)
            quote = stack.funding.quote("ETHUSDT") if stack.funding is not None else None
            assert quote is not None and quote.rate == rate
            last = em.candles("ETHUSDT")[-1]
            signal = Signal(f"ETHUSDT:LONG:{last.open_time}", "ETHUSDT", "LONG", last.open_time,
                            Decimal(repr(last.close)), 0.75, 5.0, 20.0, "funding-test",
                            features=tuple(0.0 for _ in FEATURE_SCHEMA.names), schema_version=FEATURE_SCHEMA.version,
                            created_ms=stack.clock())
            assert stack.executor.submit(signal)
            await stack.executor.idle()
            assert "ETHUSDT" in stack.executor.book, stack.executor.stats.skip_reasons
            qty = stack.executor.book["ETHUSDT"].position.quantity
            funded = asyncio.Event()  # subscribed after the executor: when it fires, the executor has the event
            stack.paper.subscribe(lambda e: funded.set() if getattr(e, "reason", "") == "FUNDING_FEE" else None)
            due = quote.next_ms
            while stack.clock() < due:  # at most an hour of market time, one minute at a time
                await minutes(stack, 1)
            await asyncio.wait_for(funded.wait(), 10)
            await stack.executor.idle()
            [payment] = stack.paper.funding_payments
            mark = Decimal(repr(em.market.candle("ETHUSDT", due - 60_000).close))
            assert (payment.time_ms, payment.rate) == (due, rate)
            assert payment.amount == (qty * mark * rate).quantize(CENT_MICRO, ROUND_HALF_UP) > 0
            wallet = stack.paper.account.balance().wallet
            assert stack.executor.wallet == wallet
            # the max drawdown counts the payment as money lost, as it is charged (not only via the wallet)
            assert stack.executor.drawdown_guard.pnl == -payment.amount
            assert stack.executor.stats.funding_settlements == 1
            await stack.stop()  # awaits the background write
            assert await pool.fetchval("SELECT amount FROM funding_payments WHERE symbol = 'ETHUSDT'") == payment.amount

            again = stack_of(session)
            await again.start()
            try:
                assert again.paper is not None and again.paper.account.balance().wallet == wallet
                assert again.executor.drawdown_guard.pnl == -payment.amount  # read back from funding_payments
                assert again.executor.day_funding is not None  # the daily summary's funding: the stored payment
                assert await again.executor.day_funding(due, due + 1) == -payment.amount
                assert await again.executor.day_funding(due + 1, due + 2) == 0
            finally:
                await again.executor.stop()
                await again.stop()
    finally:
        await em.stop()
