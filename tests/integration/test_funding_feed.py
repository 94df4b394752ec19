"""The funding guard end to end: the emulator's ``!markPrice@arr`` stream, the FundingFeed over a real socket,
the FundingBook, and the executor refusing the side that pays (stored with the quote it was judged by)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shards.funding_feed import STREAM, FundingFeed
from smc_quant.funding import FundingBook
from smc_quant.settings import load_settings
from tests.integration.emulator_kit import emulator_factory
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000


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
            unknown = rig.signal("SOLUSDT", "LONG", confidence=0.75, stop_pct=3.0, target_pct=6.0)
            await feed.stop()  # no more pushes: two minutes later the quotes are stale
            clock[0] += 120.001
            assert book.quote("SOLUSDT") is None
            assert ex.submit(unknown)
            await ex.idle()
            assert "SOLUSDT" in ex.book and ex.stats.funding_unknown == 1  # unknown funding never blocks
        finally:
            await feed.stop()
