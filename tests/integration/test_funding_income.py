"""``LiveBroker.funding_income`` over real sockets: the emulator's ``GET /fapi/v1/income`` for the funding its
account charged (replayed through a funding time, or booked by hand in bulk for paging), and a tiny local app
answering a malformed row (the emulator never writes one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.trade_client import LiveBroker
from smc_quant.orders.broker import OrderRequest
from smc_quant.orders.limiter import OrderLimiter
from smc_quant.orders.signing import RequestSigner

pytestmark = pytest.mark.integration
D = Decimal
SYMBOLS = ("BTCUSDT", "ETHUSDT")
MINUTE_MS = 60_000
FUNDING_MS = 1_689_696_000_000
"""2023-07-18 16:00 UTC, a multiple of 8 hours: a funding time inside the shared data."""
RATE = D("0.0001")  # the emulator's default funding rate
USDT = D("0.00000001")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def make_broker(http: aiohttp.ClientSession, rest_url: str, *, key: str = "emulator-key",
                secret: str = "emulator-secret") -> LiveBroker:
    limiter = OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event)
    return LiveBroker(http, rest_url, RequestSigner(key, secret, wall_ms), governor=WeightGovernor(),
                      limiter=limiter, timeout_s=5.0)


def last_close(em: Emulator, symbol: str) -> Decimal:
    """The close of the minute ending at the funding time: the mark the account charged funding at."""
    candle = em.market.candle(symbol, FUNDING_MS - MINUTE_MS)
    assert candle is not None
    return D(repr(candle.close))


async def open_positions(broker: LiveBroker) -> None:
    """A BTCUSDT long (pays a positive rate) and an ETHUSDT short (receives it)."""
    for request in (OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-fund-btc-en-0"),
                    OrderRequest("ETHUSDT", "SELL", "MARKET", D("0.100"), "smc-fund-eth-en-0")):
        assert (await broker.place_order(request)).status == "FILLED"


async def test_funding_charged_at_a_funding_time_comes_back_signed_and_timed(
        shared_data: Path, http: aiohttp.ClientSession) -> None:
    """The replay crosses 16:00 UTC: the long pays qty × close × rate (income negative), the short receives it
    (positive), both at the funding time, and they add up to the wallet's move; ``since_ms`` is inclusive."""
    config = EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=SYMBOLS,
                            start_time_ms=FUNDING_MS - 3 * MINUTE_MS, max_minutes=10)
    async with Emulator(config) as em:
        broker = make_broker(http, em.rest_url)
        await open_positions(broker)
        assert await broker.funding_income(em.start_ms) == []
        before = em.account.balance().wallet
        em.resume()
        await em.wait_minutes(4)  # 15:57, 15:58, 15:59 (its final step is the funding time), 16:00
        em.pause()
        assert em.trading.funding_settled == 2
        await broker.sync_time()  # the replay clock moved minutes ahead

        income = await broker.funding_income(em.start_ms)
        close = {s: last_close(em, s) for s in SYMBOLS}
        btc = -(D("0.010") * close["BTCUSDT"] * RATE).quantize(USDT, ROUND_HALF_UP)
        eth = (D("0.100") * close["ETHUSDT"] * RATE).quantize(USDT, ROUND_HALF_UP)
        assert btc < 0 < eth
        assert income == [(FUNDING_MS, btc), (FUNDING_MS, eth)]
        assert em.account.balance().wallet - before == btc + eth
        assert await broker.funding_income(FUNDING_MS) == income
        assert await broker.funding_income(FUNDING_MS + 1) == []
        assert not broker.rejected_payloads


async def test_more_than_a_page_is_read_whole_without_duplicates(
        shared_data: Path, http: aiohttp.ClientSession) -> None:
    """2202 rows: 1201 that fill one page and a bit (a millisecond's two rows straddle the page boundary) and
    1001 in a single millisecond (no time to move on: the next ``page`` of that ``startTime``). Every row
    comes back once, oldest first, in 4 requests; ``since_ms`` cuts the first one off."""
    config = EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=SYMBOLS)  # the replay clock runs like ours
    async with Emulator(config) as em:
        broker = make_broker(http, em.rest_url)
        await open_positions(broker)
        base = em.now_ms - 3_600_000
        # booked by the call the replay makes at a funding time, here at chosen times
        em.account.settle_funding("BTCUSDT", RATE, base)
        for k in range(1, 601):
            for symbol in SYMBOLS:
                em.account.settle_funding(symbol, RATE, base + k)
        for n in range(1001):
            em.account.settle_funding(SYMBOLS[n % 2], RATE, base + 700)
        expected = [(r.time_ms, r.income) for r in em.account.funding_income()]
        assert len(expected) == 2202 and len({t for t, _ in expected}) == 602

        weight, refreshes = em.stats["weight_used"], broker.time_refreshes
        income = await broker.funding_income(base)
        pages = (em.stats["weight_used"] - weight - 3 * (broker.time_refreshes - refreshes)) // 30
        assert income == expected
        assert pages == 4  # ..500 │ 500..700 │ 700 page 1 │ 700 page 2
        assert await broker.funding_income(base + 1) == expected[1:]
        assert not broker.rejected_payloads


# -- a malformed row, from a local stand-in for Binance -----------------------------------------------------------


@pytest.fixture
async def binance() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """``/fapi/v1/time`` and one page of ``/fapi/v1/income``: two good FUNDING_FEE rows around a malformed one
    and a COMMISSION row; the income queries are recorded."""
    queries: list[dict[str, str]] = []

    def row(**fields: Any) -> dict[str, Any]:
        return {"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-0.37500000", "asset": "USDT",
                "info": "FUNDING_FEE", "time": 1570608000000, "tranId": 9689322392, "tradeId": "", **fields}

    async def server_time(request: web.Request) -> web.Response:
        return web.json_response({"serverTime": wall_ms()})

    async def income(request: web.Request) -> web.Response:
        queries.append(dict(request.query))
        rows = [row(), row(income="not-a-number", tranId=9689322393),
                row(incomeType="COMMISSION", income="-0.01", tranId=1, tradeId="2059192"),
                row(symbol="ETHUSDT", income="0.12000000", time=1570636800000, tranId=9689322394)]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

    app = web.Application()
    app.add_routes([web.get("/fapi/v1/time", server_time), web.get("/fapi/v1/income", income)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", queries
    finally:
        await runner.cleanup()


async def test_a_malformed_row_is_counted_and_skipped(http: aiohttp.ClientSession,
                                                      binance: tuple[str, list[dict[str, str]]]) -> None:
    """A row whose income is not a number → ``rejected_payloads["income_malformed"]``, skipped; a COMMISSION row
    is dropped; one short page → one signed request with FUNDING_FEE, startTime and limit 1000."""
    url, queries = binance
    broker = make_broker(http, url, key="k", secret="s")
    income = await broker.funding_income(1570608000000)
    assert income == [(1570608000000, D("-0.375")), (1570636800000, D("0.12"))]
    assert broker.rejected_payloads == {"income_malformed": 1}
    [query] = queries
    assert (query["incomeType"], query["startTime"], query["limit"]) == ("FUNDING_FEE", "1570608000000", "1000")
    assert "page" not in query and "signature" in query and "timestamp" in query
