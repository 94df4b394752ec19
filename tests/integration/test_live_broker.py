"""LiveBroker over real sockets: the emulator's signed trading endpoints, and a tiny local app for the edges.

The emulator runs at ``speed=1`` so its server clock (the replay clock) advances like ours and the measured
offset holds. The local app (``edge_app``) answers Binance's documented error JSON for what the emulator
does not model (503 "Service Unavailable" on reads, 429 -1015, v3 404 fallback, -4046, malformed rows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from smc_quant.errors import RateLimited, TemporaryError
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.trade_client import ExchangeRejected, LiveBroker
from smc_quant.orders.broker import AccountConfig, AlgoRequest, OrderRequest, OrderStatusUnknown
from smc_quant.orders.limiter import OrderLimiter
from smc_quant.orders.reactions import Reaction
from smc_quant.orders.signing import RequestSigner

SYMBOLS = ("BTCUSDT", "ETHUSDT")
D = Decimal


class SkewedClock:
    """Our wall clock in ms plus a settable skew (a local clock that jumps)."""

    def __init__(self) -> None:
        self.skew_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms


async def require_trading_routes(http: aiohttp.ClientSession, em: Emulator) -> None:
    """Skip (naming what is missing) when this emulator build does not serve the signed trading routes yet."""
    async with http.post(f"{em.rest_url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "emulator-key"}) as resp:
        if resp.status == 404:
            pytest.skip("emulator serves no POST /fapi/v1/listenKey, /fapi/v1/order, /private/ws yet "
                        "(trading.py/userdata.py not wired in emulator/server.py)")


@dataclass
class Live:
    em: Emulator
    broker: LiveBroker
    clock: SkewedClock


def make_broker(session: aiohttp.ClientSession, rest_url: str, clock: Callable[[], int], *, key: str = "emulator-key",
                secret: str = "emulator-secret", timeout_s: float = 5.0, ws_base: str | None = None) -> LiveBroker:
    signer = RequestSigner(key, secret, clock)
    limiter = OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event)
    return LiveBroker(session, rest_url, signer, governor=WeightGovernor(), limiter=limiter, timeout_s=timeout_s,
                      ws_base_url=ws_base, stream_options={"backoff": lambda attempt: 0.05})


@pytest.fixture
async def live(shared_data: Path, http: aiohttp.ClientSession) -> AsyncIterator[Live]:
    config = EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=SYMBOLS)
    async with Emulator(config) as em:
        await require_trading_routes(http, em)
        clock = SkewedClock()
        broker = make_broker(http, em.rest_url, clock, timeout_s=1.0, ws_base=em.ws_legacy_base)
        yield Live(em, broker, clock)
        await broker.close()


# -- against the emulator ----------------------------------------------------------------------------------------


async def test_clock_offset_follows_the_replay_clock(live: Live) -> None:
    """The emulator's server time is the 2023 replay clock: the midpoint offset brings our timestamps onto it."""
    offset = await live.broker.sync_time()
    server = await live.broker.server_time()
    assert offset.best is not None and offset.best.rtt_ms < 1000
    assert abs(live.clock() + offset.offset_ms - server) < 1500
    assert offset.offset_ms < -365 * 86_400_000  # the replay is years behind the wall clock


async def test_market_order_placed_and_filled(live: Live) -> None:
    """A MARKET BUY with RESULT comes back FILLED with its average price; the position and balance follow."""
    b = live.broker
    await b.set_leverage("BTCUSDT", 5)
    await b.set_margin_type("BTCUSDT", "ISOLATED")
    await b.set_margin_type("BTCUSDT", "ISOLATED")  # -4046 → no-op
    state = await b.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-test-mkt-en-0"))
    assert (state.status, state.executed_qty, state.client_order_id) == ("FILLED", D("0.010"), "smc-test-mkt-en-0")
    assert state.avg_price > 0 and state.final
    assert b.limiter.acquired_total == 1
    positions = await b.positions()
    assert [(p.symbol, p.side, p.quantity) for p in positions] == [("BTCUSDT", "LONG", D("0.010"))]
    queried = await b.query_order("BTCUSDT", "smc-test-mkt-en-0")
    assert queried is not None and queried.status == "FILLED" and queried.order_id == state.order_id
    balance = await b.balance()
    assert balance.wallet < D(10000) and balance.available < balance.wallet  # commission paid, margin used


async def test_limit_order_open_and_cancelled(live: Live) -> None:
    """A far LIMIT order rests (openOrders lists it) and is cancelled; a second cancel answers None (-2011)."""
    b = live.broker
    state = await b.place_order(OrderRequest("ETHUSDT", "BUY", "LIMIT", D("0.100"), "smc-test-lim-en-0",
                                             price=D("1850.00")))
    assert state.status == "NEW" and not state.final
    assert [o.client_order_id for o in await b.open_orders("ETHUSDT")] == ["smc-test-lim-en-0"]
    cancelled = await b.cancel_order("ETHUSDT", "smc-test-lim-en-0")
    assert cancelled is not None and cancelled.status == "CANCELED"
    assert await b.open_orders() == []
    assert await b.cancel_order("ETHUSDT", "smc-test-lim-en-0") is None


async def test_algo_stop_market_placed_queried_cancelled(live: Live) -> None:
    """A protective STOP_MARKET (closePosition) goes to /fapi/v1/algoOrder, is queried, listed, cancelled."""
    b = live.broker
    filled = await b.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-test-alg-en-0"))
    stop_price = (filled.avg_price * D("0.9")).quantize(D("0.1"))
    algo = await b.place_algo(AlgoRequest("BTCUSDT", "SELL", "STOP_MARKET", stop_price, "smc-test-alg-sl-0",
                                          close_position=True, working_type="MARK_PRICE"))
    assert (algo.status, algo.type, algo.trigger_price, algo.close_position) == (
        "NEW", "STOP_MARKET", stop_price, True)
    queried = await b.query_algo("BTCUSDT", "smc-test-alg-sl-0")
    assert queried is not None and queried.algo_id == algo.algo_id and queried.status == "NEW"
    assert [a.client_algo_id for a in await b.open_algo_orders("BTCUSDT")] == ["smc-test-alg-sl-0"]
    cancelled = await b.cancel_algo("BTCUSDT", "smc-test-alg-sl-0")
    assert cancelled is not None and cancelled.status == "CANCELED"
    assert await b.open_algo_orders() == []
    assert await b.cancel_algo("BTCUSDT", "smc-test-alg-sl-0") is None  # already gone
    assert b.limiter.acquired_total == 2


async def test_unknown_ids_query_to_none(live: Live) -> None:
    """Querying ids the exchange never saw gives None (-2013), for orders and algo orders."""
    assert await live.broker.query_order("BTCUSDT", "smc-never-sent-en-0") is None
    assert await live.broker.query_algo("BTCUSDT", "smc-never-sent-sl-0") is None
    assert await live.broker.cancel_order("BTCUSDT", "smc-never-sent-en-0") is None


async def test_invalid_timestamp_resyncs_and_retries_once(live: Live) -> None:
    """After a sync, our clock jumps 20 s ahead: -1021 → resample /time → re-sign → the retry is accepted."""
    b = live.broker
    await b.sync_time()
    refreshes = b.time_refreshes
    live.clock.skew_ms = 20_000
    state = await b.place_order(OrderRequest("ETHUSDT", "BUY", "MARKET", D("0.050"), "smc-test-skew-en-0"))
    assert state.status == "FILLED"
    assert (b.resyncs, b.time_refreshes) == (1, refreshes + 1)
    assert b.limiter.acquired_total == 2  # the rejected first send took a slot too (conservative)


async def test_timeout_raises_status_unknown_and_never_resends(live: Live) -> None:
    """The emulator executes the order but holds the answer past our 1 s timeout: OrderStatusUnknown, one send."""
    b = live.broker
    live.em.faults.order_timeout(1, hold_s=30.0)
    with pytest.raises(OrderStatusUnknown) as info:
        await b.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.020"), "smc-test-tmo-en-0"))
    assert info.value.client_id == "smc-test-tmo-en-0"
    assert b.limiter.acquired_total == 1
    queried = await b.query_order("BTCUSDT", "smc-test-tmo-en-0")
    assert queried is not None and queried.status == "FILLED"
    positions = await b.positions()
    assert [(p.symbol, p.quantity) for p in positions] == [("BTCUSDT", D("0.020"))]  # executed exactly once


async def test_503_unknown_raises_status_unknown(live: Live) -> None:
    """HTTP 503 "Unknown error" (executed!) → OrderStatusUnknown; the query finds the order."""
    b = live.broker
    live.em.faults.order_unknown(1)
    with pytest.raises(OrderStatusUnknown):
        await b.place_order(OrderRequest("ETHUSDT", "SELL", "MARKET", D("0.100"), "smc-test-unk-en-0"))
    queried = await b.query_order("ETHUSDT", "smc-test-unk-en-0")
    assert queried is not None and queried.status == "FILLED"


async def test_503_service_unavailable_is_temporary(live: Live) -> None:
    """HTTP 503 "Service Unavailable." (not executed) → TemporaryError, not OrderStatusUnknown; nothing exists."""
    live.em.faults.order_reject_503(1)
    with pytest.raises(TemporaryError) as info:
        await live.broker.place_order(OrderRequest("ETHUSDT", "BUY", "MARKET", D("0.100"), "smc-test-503-en-0"))
    assert not isinstance(info.value, OrderStatusUnknown)
    assert await live.broker.query_order("ETHUSDT", "smc-test-503-en-0") is None


async def test_stop_market_is_never_sent_to_the_order_endpoint(live: Live) -> None:
    """-4120 cannot be produced by us: a STOP_MARKET OrderRequest is refused before anything is sent."""
    bad = OrderRequest("BTCUSDT", "SELL", "STOP_MARKET", D("0.010"), "smc-test-bad-sl-0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="place_algo"):
        await live.broker.place_order(bad)
    with pytest.raises(ValueError, match="client_order_id"):
        await live.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), ""))
    assert live.broker.limiter.acquired_total == 0


async def test_venue_rejection_carries_the_reaction(live: Live) -> None:
    """A bad symbol → ExchangeRejected(-1121) with the table's reaction (drop)."""
    with pytest.raises(ExchangeRejected) as info:
        await live.broker.place_order(OrderRequest("NOPEUSDT", "BUY", "MARKET", D("1"), "smc-test-sym-en-0"))
    assert (info.value.code, info.value.reaction.reaction) == (-1121, Reaction.DROP)


async def test_wrong_secret_is_an_alarm_and_never_logged(shared_data: Path, http: aiohttp.ClientSession,
                                                         live: Live) -> None:
    """-1022 (bad signature) → alarm; neither the secret nor the signature appears in the error or repr."""
    broker = make_broker(http, live.em.rest_url, live.clock, secret="not-the-secret-xyz")
    with pytest.raises(ExchangeRejected) as info:
        await broker.balance()
    assert (info.value.code, info.value.reaction.reaction) == (-1022, Reaction.ALARM)
    for text in (str(info.value), repr(broker), repr(broker.stream)):
        assert "not-the-secret-xyz" not in text and "signature=" not in text


async def test_leverage_brackets(live: Live) -> None:
    """leverageBracket parses into SymbolBrackets."""
    brackets = await live.broker.leverage_brackets("BTCUSDT")
    assert "BTCUSDT" in brackets and brackets["BTCUSDT"].max_leverage(D(1000)) >= 20


# -- the local edge app --------------------------------------------------------------------------------------------


@dataclass
class Edge:
    url: str
    hits: dict[str, int]
    release: asyncio.Event
    stamps: list[int]
    """The ``timestamp`` of every signed request received, in order."""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    """A local app answering Binance's documented JSON for edge cases the emulator does not model."""
    hits: dict[str, int] = {}
    release = asyncio.Event()
    stamps: list[int] = []

    def count(request: web.Request) -> None:
        hits[request.path] = hits.get(request.path, 0) + 1
        if "timestamp" in request.query:
            stamps.append(int(request.query["timestamp"]))

    async def server_time(request: web.Request) -> web.Response:
        count(request)
        return _json({"serverTime": time.time_ns() // 1_000_000})

    async def hang(request: web.Request) -> web.Response:
        count(request)
        await release.wait()
        return _json({"code": -1000, "msg": "late"}, 500)

    async def throttled(request: web.Request) -> web.Response:
        count(request)
        return _json({"code": -1015, "msg": "Too many new orders; current limit is 300 orders per TEN_SECONDS."},
                     429, {"Retry-After": "7"})

    async def not_found(request: web.Request) -> web.Response:
        count(request)
        return web.Response(status=404, text="<html>404 Not Found</html>")

    async def positions_v2(request: web.Request) -> web.Response:
        count(request)
        return _json([{"symbol": "BTCUSDT", "positionAmt": "-0.5", "entryPrice": "30000", "leverage": "10"},
                      {"symbol": "ETHUSDT", "positionAmt": "0", "entryPrice": "0"},
                      {"symbol": "XRPUSDT", "positionAmt": "bad", "entryPrice": "1"}])

    async def balance_v2(request: web.Request) -> web.Response:
        count(request)
        return _json([{"asset": "USDT", "balance": "100", "crossUnPnl": "-2", "availableBalance": "90"}])

    async def position_mode(request: web.Request) -> web.Response:
        count(request)
        return _json({"dualSidePosition": True})

    async def asset_mode(request: web.Request) -> web.Response:
        count(request)
        return _json({"multiAssetsMargin": False})

    async def unavailable(request: web.Request) -> web.Response:
        count(request)
        return _json({"code": -1001, "msg": "Service Unavailable."}, 503)

    async def insufficient(request: web.Request) -> web.Response:
        count(request)
        return _json({"code": -2019, "msg": "Margin is insufficient."}, 400)

    app = web.Application()
    app.add_routes([
        web.get("/fapi/v1/time", server_time), web.post("/fapi/v1/order", hang),
        web.post("/fapi/v1/algoOrder", throttled), web.get("/fapi/v3/positionRisk", not_found),
        web.get("/fapi/v2/positionRisk", positions_v2), web.get("/fapi/v3/balance", not_found),
        web.get("/fapi/v2/balance", balance_v2), web.get("/fapi/v1/openOrders", unavailable),
        web.post("/fapi/v1/leverage", insufficient), web.get("/fapi/v1/accountConfig", not_found),
        web.get("/fapi/v1/positionSide/dual", position_mode), web.get("/fapi/v1/multiAssetsMargin", asset_mode),
    ])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Edge(f"http://127.0.0.1:{port}", hits, release, stamps)
    finally:
        release.set()
        await runner.cleanup()


def _edge_broker(http: aiohttp.ClientSession, edge: Edge, timeout_s: float = 0.3) -> LiveBroker:
    clock = SkewedClock()
    return make_broker(http, edge.url, clock, key="k", secret="s", timeout_s=timeout_s)


async def test_edge_timeout_is_status_unknown_with_one_send(http: aiohttp.ClientSession, edge: Edge) -> None:
    """A placement whose answer never comes within the timeout → OrderStatusUnknown; exactly one POST."""
    broker = _edge_broker(http, edge)
    with pytest.raises(OrderStatusUnknown) as info:
        await broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("1"), "smc-edge-tmo-en-0"))
    assert info.value.client_id == "smc-edge-tmo-en-0"
    assert edge.hits["/fapi/v1/order"] == 1


async def test_edge_a_request_that_waits_for_weight_is_signed_after_the_wait(http: aiohttp.ClientSession,
                                                                              edge: Edge) -> None:
    """A 429 pause makes a read wait (up to a minute) for its weight. It is stamped after that wait, so it reaches
    the exchange inside its 5 s recvWindow; stamped before, it arrived a whole pause late and was refused (-1021)."""
    clock = SkewedClock()

    async def pass_at_once(seconds: float) -> None:  # the wait is not spent: our clock jumps over it
        clock.skew_ms += round(seconds * 1000)

    governor = WeightGovernor(clock=clock, sleep=pass_at_once)
    broker = LiveBroker(http, edge.url, RequestSigner("k", "s", clock), governor=governor,
                        limiter=OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event), timeout_s=1.0)
    await broker.sync_time()
    paused_until = governor.penalise(429, 30.0, "Too many requests.")
    with pytest.raises(TemporaryError):  # the edge's openOrders answers 503
        await broker.open_orders("BTCUSDT")
    assert clock() >= paused_until and len(edge.stamps) == 1
    assert edge.stamps[0] >= paused_until - 1_000  # within the offset's error of the end of the pause


async def test_edge_429_1015_penalises_the_limiter(http: aiohttp.ClientSession, edge: Edge) -> None:
    """429 -1015 → RateLimited at Retry-After, and the order limiter blocks placements until then."""
    broker = _edge_broker(http, edge)
    with pytest.raises(RateLimited) as info:
        await broker.place_algo(AlgoRequest("BTCUSDT", "SELL", "STOP_MARKET", D("100"), "smc-edge-rl-sl-0",
                                            close_position=True))
    assert info.value.status == 429
    assert broker.limiter.penalties == 1 and 6_000 <= broker.limiter.wait_ms() <= 7_000
    assert broker.governor.rate_limited_429 == 0  # an order-count limit, not IP weight


async def test_edge_v3_404_falls_back_to_v2(http: aiohttp.ClientSession, edge: Edge) -> None:
    """positionRisk/balance v3 404 → v2 from then on; flat rows dropped, a malformed row counted."""
    broker = _edge_broker(http, edge)
    positions = await broker.positions()
    assert [(p.symbol, p.side, p.quantity, p.leverage) for p in positions] == [("BTCUSDT", "SHORT", D("0.5"), 10)]
    assert broker.rejected_payloads["position_malformed"] == 1
    await broker.positions()
    assert (edge.hits["/fapi/v3/positionRisk"], edge.hits["/fapi/v2/positionRisk"]) == (1, 2)
    balance = await broker.balance()
    assert (balance.wallet, balance.unrealized_pnl, balance.available) == (D(100), D(-2), D(90))


async def test_edge_account_config_404_falls_back_to_the_two_mode_endpoints(
        http: aiohttp.ClientSession, edge: Edge) -> None:
    """No ``/fapi/v1/accountConfig`` (404): the modes come from ``positionSide/dual`` and ``multiAssetsMargin``
    (weight 30 each), ``canTrade`` unknown."""
    broker = _edge_broker(http, edge)
    await broker.sync_time()  # 3 × GET /fapi/v1/time first, so that only the account reads are counted
    before = broker.governor.acquired_total
    assert await broker.account_config() == AccountConfig(dual_side_position=True, multi_assets_margin=False)
    assert [edge.hits[p] for p in ("/fapi/v1/accountConfig", "/fapi/v1/positionSide/dual",
                                   "/fapi/v1/multiAssetsMargin")] == [1, 1, 1]
    assert broker.governor.acquired_total - before == 5 + 30 + 30


async def test_edge_unavailable_and_repair(http: aiohttp.ClientSession, edge: Edge) -> None:
    """A read answered 503 "Service Unavailable." → TemporaryError; -2019 → ExchangeRejected(repair)."""
    broker = _edge_broker(http, edge)
    with pytest.raises(TemporaryError):
        await broker.open_orders("BTCUSDT")
    with pytest.raises(ExchangeRejected) as info:
        await broker.set_leverage("BTCUSDT", 20)
    assert (info.value.code, info.value.reaction.reaction, info.value.reaction.action) == (
        -2019, Reaction.REPAIR, "shrink_size")


async def test_edge_ip_ban_stops_placements_without_sending(http: aiohttp.ClientSession, edge: Edge) -> None:
    """During a 418 ban, a placement (0 IP weight) is refused with RateLimited and never reaches the wire."""
    broker = _edge_broker(http, edge)
    await broker.sync_time()
    until = broker.governor.clock() + 120_000
    broker.governor.penalise(418, None, f"Way too many requests; IP(***) banned until {until}.")
    with pytest.raises(RateLimited) as info:
        await broker.place_order(OrderRequest("BTCUSDT", "SELL", "MARKET", D("1"), "smc-edge-ban-ex-0",
                                              reduce_only=True))
    assert info.value.retry_at_ms == until
    with pytest.raises(RateLimited):
        await broker.positions()  # a weighted read refuses a pause longer than max_wait_s too
    assert "/fapi/v1/order" not in edge.hits and "/fapi/v3/positionRisk" not in edge.hits
