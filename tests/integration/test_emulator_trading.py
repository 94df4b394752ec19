"""The emulator's signed REST side over real sockets: security checks, orders on replayed prices, limits, faults.

Requests are signed by our own ``RequestSigner`` with the server offset measured by ``ClockOffset`` from
``/fapi/v1/time`` (the replay clock, in 2023), exactly as the live client does. Replays start paused at
speed 0, so the price is the first minute's open until a test resumes the replay.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yarl

from smc_quant.exchange.emulator import Emulator
from smc_quant.exchange.emulator.frames import in_candle_path
from smc_quant.exchange.wire_trading import parse_event, parse_order
from smc_quant.orders.broker import FINAL_ALGO, AlgoUpdate, OrderUpdate
from smc_quant.orders.signing import ClockOffset, Param, RequestSigner, TimeSample, hmac_signature
from tests.integration.emulator_kit import Factory, emulator_factory

pytestmark = pytest.mark.integration
D = Decimal
KEY, SECRET = "emulator-key", "emulator-secret"
UNKNOWN_503 = "Unknown error, please check your request or try again later."


class FakeClock:
    """A wall clock that only moves when told (order-count windows, listenKey TTLs)."""

    def __init__(self, now: float = 1_700_000_001.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def wall_ms() -> int:
    return int(time.time() * 1000)


class Client:
    """A minimal signed client: our signer, a measured offset, params in the query (GET/DELETE) or body (POST)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, key: str = KEY, secret: str = SECRET) -> None:
        self.http, self.base = http, base
        self.signer = RequestSigner(key, secret, wall_ms)
        self.offset = ClockOffset()

    async def sync(self) -> None:
        """Measure the server offset (a new round: after the replay clock jumped, as after a -1021)."""
        self.offset = self.offset.invalidate()
        sent = wall_ms()
        async with self.http.get(f"{self.base}/fapi/v1/time") as r:
            server = (await r.json())["serverTime"]
        self.offset = self.offset.add(TimeSample(sent, server, wall_ms()))

    async def call(self, method: str, path: str, params: Sequence[Param] = (), *, skew_ms: int = 0,
                   client_timeout_s: float | None = None) -> Reply:
        in_body = method in ("POST", "PUT") and bool(params)
        signed = self.signer.sign(() if in_body else params, params if in_body else (),
                                  offset_ms=self.offset.offset_ms + skew_ms)
        return await self.raw(method, path, signed.query, signed.body, dict(signed.headers),
                              client_timeout_s=client_timeout_s)

    async def raw(self, method: str, path: str, query: str, body: str, headers: dict[str, str],
                  client_timeout_s: float | None = None) -> Reply:
        url = yarl.URL(f"{self.base}{path}" + (f"?{query}" if query else ""), encoded=True)
        kwargs: dict[str, Any] = {"headers": headers}
        if body:
            kwargs["data"] = body.encode()
        if client_timeout_s is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=client_timeout_s)
        async with self.http.request(method, url, **kwargs) as r:
            return Reply(r.status, dict(r.headers), await r.json())

    async def key_only(self, method: str, headers: dict[str, str] | None = None,
                       params: Sequence[Param] = ()) -> Reply:
        """A USER_STREAM call (listenKey): the key header, no signature."""
        query = "&".join(f"{k}={v}" for k, v in params)
        return await self.raw(method, "/fapi/v1/listenKey", query, "",
                              self.signer.headers if headers is None else headers)


@pytest.fixture
def emulator(shared_data: Path) -> Factory:
    """Paused, speed-0 emulators on BTCUSDT and ETHUSDT with a fake wall clock."""
    return emulator_factory(shared_data, max_minutes=60, symbols=("BTCUSDT", "ETHUSDT"), start_paused=True)


async def connect(http: aiohttp.ClientSession, em: Emulator) -> Client:
    client = Client(http, em.rest_url)
    await client.sync()
    return client


def first_open(em: Emulator, symbol: str) -> Decimal:
    c = em.market.candle(symbol, em.start_ms)
    assert c is not None
    return D(repr(c.open))


async def test_signature_time_and_key_checks(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """A correctly signed request passes; a wrong secret, stale/future timestamps and bad keys are refused."""
    async with emulator() as em:
        client = await connect(http, em)
        ok = await client.call("GET", "/fapi/v2/balance")
        assert ok.status == 200 and ok.body[0]["asset"] == "USDT" and ok.body[0]["balance"] == "10000"
        assert ok.headers["X-MBX-USED-WEIGHT-1M"] == "6"  # time (1) + balance (5)

        wrong = Client(http, em.rest_url, secret="not-the-secret")
        wrong.offset = client.offset
        assert (await wrong.call("GET", "/fapi/v2/balance")).body == {
            "code": -1022, "msg": "Signature for this request is not valid."}

        stale = await client.call("GET", "/fapi/v2/balance", skew_ms=-6000)  # recvWindow 5000
        assert (stale.status, stale.body) == (400, {
            "code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})
        ahead = await client.call("GET", "/fapi/v2/balance", skew_ms=1500)
        assert ahead.body["code"] == -1021 and "ahead" in ahead.body["msg"]
        unsynced = Client(http, em.rest_url)  # wall clock is 2026, the replay clock 2023
        assert (await unsynced.call("GET", "/fapi/v2/balance")).body["code"] == -1021

        stranger = Client(http, em.rest_url, key="someone-else")
        stranger.offset = client.offset
        refused = await stranger.call("GET", "/fapi/v2/balance")
        assert (refused.status, refused.body["code"]) == (401, -2015)
        no_key = await client.raw("GET", "/fapi/v2/balance", "timestamp=1&signature=00", "", {})
        assert (no_key.status, no_key.body["code"]) == (401, -2014)

        ts = client.signer.timestamp(client.offset.offset_ms)
        q = f"recvWindow=70000&timestamp={ts}"
        too_wide = await client.raw("GET", "/fapi/v2/balance",
                                    f"{q}&signature={hmac_signature(SECRET.encode(), q)}", "", {"X-MBX-APIKEY": KEY})
        assert too_wide.body["code"] == -1131
        q = "recvWindow=5000"
        no_ts = await client.raw("GET", "/fapi/v2/balance", f"{q}&signature={hmac_signature(SECRET.encode(), q)}",
                                 "", {"X-MBX-APIKEY": KEY})
        assert no_ts.body["code"] == -1102 and "timestamp" in no_ts.body["msg"]

        # query + body, signed over their plain concatenation (BINANCE-PROTOCOL.md §5.2 example 3)
        signed = client.signer.sign([("symbol", "BTCUSDT")], [("leverage", 7)], offset_ms=client.offset.offset_ms)
        assert signed.query == "symbol=BTCUSDT" and signed.body.startswith("leverage=7&")
        mixed = await client.raw("POST", "/fapi/v1/leverage", signed.query, signed.body, dict(signed.headers))
        assert (mixed.status, mixed.body["leverage"], mixed.body["symbol"]) == (200, 7, "BTCUSDT")
        assert em.account.leverage("BTCUSDT") == 7


async def test_market_order_fills_at_the_replayed_price_with_fee(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """MARKET BUY fills at the price the replay shows (plus slippage ≤ 1 bp), pays the taker fee, opens a long."""
    async with emulator() as em:
        client = await connect(http, em)
        price = first_open(em, "BTCUSDT")
        placed = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.010"),
            ("newClientOrderId", "t-market-1"), ("newOrderRespType", "RESULT")])
        assert placed.status == 200, placed.body
        assert (placed.headers["X-MBX-ORDER-COUNT-10S"], placed.headers["X-MBX-ORDER-COUNT-1M"]) == ("1", "1")
        state = parse_order(placed.body)
        assert (state.status, state.client_order_id, state.executed_qty) == ("FILLED", "t-market-1", D("0.010"))
        assert price <= state.avg_price <= price * D("1.0001") + D("0.1")  # slippage 1 bp, rounded to the tick
        assert D(placed.body["cumQuote"]) == state.avg_price * D("0.010")

        trades = (await client.call("GET", "/fapi/v1/userTrades", [("symbol", "BTCUSDT")])).body
        assert len(trades) == 1 and D(trades[0]["price"]) == state.avg_price
        fee = D(trades[0]["commission"])
        assert abs(fee - state.avg_price * D("0.010") * D("0.0005")) < D("0.00000001")
        balance = (await client.call("GET", "/fapi/v3/balance")).body[0]
        assert abs(D(balance["balance"]) - (D(10000) - fee)) < D("0.00000001")
        rows = (await client.call("GET", "/fapi/v3/positionRisk")).body
        assert [(r["symbol"], r["positionAmt"], D(r["entryPrice"])) for r in rows] == [
            ("BTCUSDT", "0.010", state.avg_price)]

        ack = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "BTCUSDT"), ("side", "SELL"), ("type", "MARKET"), ("quantity", "0.010"),
            ("reduceOnly", "true"), ("newClientOrderId", "t-market-2")])
        assert (ack.body["status"], ack.body["executedQty"]) == ("NEW", "0")  # ACK: accepted, not the outcome
        queried = await client.call("GET", "/fapi/v1/order", [("symbol", "BTCUSDT"),
                                                              ("origClientOrderId", "t-market-2")])
        assert parse_order(queried.body).status == "FILLED"
        assert (await client.call("GET", "/fapi/v3/positionRisk")).body == []
        assert em.account.order_log == ["t-market-1", "t-market-2"]
        account = await (await http.get(f"{em.rest_url}/_emulator/account")).json()
        assert account["order_log"] == ["t-market-1", "t-market-2"] and len(account["fills"]) == 2


async def test_order_rejections(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """STOP_MARKET on /order → -4120; a stop that would fire at once → -2021; unknown ids → -2013; bad symbol."""
    async with emulator() as em:
        client = await connect(http, em)
        price = first_open(em, "ETHUSDT")
        stop = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "ETHUSDT"), ("side", "SELL"), ("type", "STOP_MARKET"), ("quantity", "0.1"),
            ("stopPrice", str(price - 10))])
        assert (stop.status, stop.body["code"]) == (400, -4120)
        assert "Algo Order API" in stop.body["msg"]
        now = await client.call("POST", "/fapi/v1/algoOrder", [
            ("algoType", "CONDITIONAL"), ("symbol", "ETHUSDT"), ("side", "SELL"), ("type", "STOP_MARKET"),
            ("quantity", "0.1"), ("triggerPrice", str(price + 5)), ("clientAlgoId", "t-stop-now")])
        assert (now.status, now.body) == (400, {"code": -2021, "msg": "Order would immediately trigger."})
        missing = await client.call("GET", "/fapi/v1/order", [("symbol", "ETHUSDT"), ("origClientOrderId", "nope")])
        assert missing.body["code"] == -2013
        bad = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "NOPEUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "1")])
        assert bad.body == {"code": -1121, "msg": "Invalid symbol."}
        assert em.account.order_log == []


async def test_order_count_limit(shared_data: Path, http: aiohttp.ClientSession) -> None:
    """Over the 10 s order limit → 429 -1015, not executed; the next 10 s window accepts again."""
    clock = FakeClock()
    async with emulator_factory(shared_data, max_minutes=5, symbols=("BTCUSDT",), start_paused=True,
                                order_limit_10s=3, clock=clock)() as em:
        client = await connect(http, em)
        limit = (first_open(em, "BTCUSDT") * D("0.98")).quantize(D("0.1"))
        counts = []
        for i in range(3):
            r = await client.call("POST", "/fapi/v1/order", [
                ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "0.005"),
                ("price", str(limit)), ("timeInForce", "GTC"), ("newClientOrderId", f"t-limit-{i}")])
            assert r.status == 200, r.body
            counts.append(r.headers["X-MBX-ORDER-COUNT-10S"])
        assert counts == ["1", "2", "3"]
        over = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "0.005"),
            ("price", str(limit)), ("timeInForce", "GTC"), ("newClientOrderId", "t-limit-3")])
        assert (over.status, over.body) == (429, {
            "code": -1015, "msg": "Too many new orders; current limit is 3 orders per TEN_SECONDS."})
        opened = (await client.call("GET", "/fapi/v1/openOrders", [("symbol", "BTCUSDT")])).body
        assert sorted(o["clientOrderId"] for o in opened) == ["t-limit-0", "t-limit-1", "t-limit-2"]
        assert all(o["price"] == str(limit) and o["timeInForce"] == "GTC" for o in opened)
        clock.now += 10
        again = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "0.005"),
            ("price", str(limit)), ("timeInForce", "GTC"), ("newClientOrderId", "t-limit-3")])
        assert again.status == 200 and again.headers["X-MBX-ORDER-COUNT-10S"] == "1"
        assert again.headers["X-MBX-ORDER-COUNT-1M"] == "4"
        done = await client.call("DELETE", "/fapi/v1/allOpenOrders", [("symbol", "BTCUSDT")])
        assert done.body["code"] == 200
        assert (await client.call("GET", "/fapi/v1/openOrders")).body == []
        assert em.account.order_log == [f"t-limit-{i}" for i in range(4)]


async def test_order_timeout_executes_but_holds_the_answer(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """order_timeout: the order fills, the answer never comes in time; a query tells the outcome, no resend."""
    async with emulator() as em:
        client = await connect(http, em)
        em.faults.order_timeout(1, hold_s=60)
        with pytest.raises(TimeoutError):
            await client.call("POST", "/fapi/v1/order", [
                ("symbol", "ETHUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.100"),
                ("newClientOrderId", "t-held")], client_timeout_s=0.5)
        queried = await client.call("GET", "/fapi/v1/order", [("symbol", "ETHUSDT"), ("origClientOrderId", "t-held")])
        assert parse_order(queried.body).status == "FILLED"
        assert em.account.order_log == ["t-held"]
        assert em.faults.counters["order_timeout"] == 1


async def test_order_unknown_and_503_faults(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """order_unknown executes and answers 503 "unknown"; order_reject_503 answers 503 and executes nothing."""
    async with emulator() as em:
        client = await connect(http, em)
        admin = await http.post(f"{em.rest_url}/_emulator/faults",
                                json=[{"action": "order_unknown", "n": 1}, {"action": "order_reject_503", "n": 1}])
        assert admin.status == 200
        params: list[Param] = [("symbol", "ETHUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.100")]
        unknown = await client.call("POST", "/fapi/v1/order", [*params, ("newClientOrderId", "t-unknown")])
        assert (unknown.status, unknown.body) == (503, {"code": -1000, "msg": UNKNOWN_503})
        assert parse_order((await client.call("GET", "/fapi/v1/order", [
            ("symbol", "ETHUSDT"), ("origClientOrderId", "t-unknown")])).body).status == "FILLED"
        down = await client.call("POST", "/fapi/v1/order", [*params, ("newClientOrderId", "t-down")])
        assert (down.status, down.body) == (503, {"code": -1001, "msg": "Service Unavailable."})
        assert (await client.call("GET", "/fapi/v1/order", [
            ("symbol", "ETHUSDT"), ("origClientOrderId", "t-down")])).body["code"] == -2013
        retried = await client.call("POST", "/fapi/v1/order", [*params, ("newClientOrderId", "t-down")])
        assert retried.status == 200
        assert em.account.order_log == ["t-unknown", "t-down"]
        counters = em.state()["faults"]["counters"]
        assert (counters["order_unknown"], counters["order_reject_503"]) == (1, 1)


def crossing_stop(em: Emulator, symbol: str, minutes: int) -> tuple[Decimal, int]:
    """A SELL stop trigger below the first open that the real price path of the next minutes reaches."""
    src = em.market.source_of[symbol]
    prec = em.market.precision[src]
    start = first_open(em, symbol)
    for m in range(minutes):
        i = em.market.index(src, em.start_ms + m * 60_000)
        assert i is not None
        for bar in in_candle_path(em.market.bar(src, i), em.config.updates_per_candle, prec):
            low = D(repr(bar.close))
            if low <= start - D("0.5"):
                return (low + D("0.1")).quantize(D("0.1"), rounding=ROUND_DOWN), m  # BTCUSDT tick 0.10
    raise AssertionError("no falling step in the window")


async def test_algo_stop_triggers_as_the_replay_moves(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """A closePosition STOP_MARKET under a long fires when the real BTCUSDT path falls through it."""
    async with emulator() as em:
        client = await connect(http, em)
        trigger, minute = crossing_stop(em, "BTCUSDT", 60)
        opened = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.010"),
            ("newClientOrderId", "t-entry")])
        assert opened.status == 200
        algo = await client.call("POST", "/fapi/v1/algoOrder", [
            ("algoType", "CONDITIONAL"), ("symbol", "BTCUSDT"), ("side", "SELL"), ("type", "STOP_MARKET"),
            ("triggerPrice", str(trigger)), ("closePosition", "true"), ("clientAlgoId", "t-stop")])
        assert algo.status == 200, algo.body
        assert (algo.body["algoStatus"], algo.body["orderType"], algo.body["closePosition"]) == (
            "NEW", "STOP_MARKET", True)
        assert [a["clientAlgoId"] for a in (await client.call("GET", "/fapi/v1/openAlgoOrders")).body] == ["t-stop"]
        key = (await client.key_only("POST")).body["listenKey"]
        async with http.ws_connect(f"{em.ws_private_base}/ws?listenKey={key}&events=ALGO_UPDATE/ORDER_TRADE_UPDATE") \
                as ws:
            em.resume()
            await em.wait_minutes(minute + 1)
            em.pause()
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["e"] != "ALGO_UPDATE" or frames[-1]["o"]["X"] not in FINAL_ALGO:
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                frames.append(orjson.loads(msg.data))
        events = [parse_event(f) for f in frames]
        closing = [e for e in events if isinstance(e, OrderUpdate) and e.execution == "TRADE"]
        assert len(closing) == 1 and (closing[0].side, closing[0].status, closing[0].cum_qty) == (
            "SELL", "FILLED", D("0.010"))
        finished = events[-1]
        assert isinstance(finished, AlgoUpdate) and (finished.client_algo_id, finished.status) == ("t-stop", "FINISHED")
        assert em.start_ms + minute * 60_000 < finished.event_time_ms <= em.start_ms + (minute + 1) * 60_000
        await client.sync()  # the replay clock moved minutes ahead
        state = (await client.call("GET", "/fapi/v1/algoOrder", [("clientAlgoId", "t-stop")])).body
        assert state.get("algoStatus") in ("TRIGGERED", "FINISHED"), state
        assert (await client.call("GET", "/fapi/v3/positionRisk")).body == []
        fills = em.account.fills
        assert len(fills) == 2 and fills[1].side == "SELL" and fills[1].price <= trigger
        assert (await client.call("GET", "/fapi/v1/openAlgoOrders")).body == []



async def test_income_lists_the_funding_ledger_with_binance_params(emulator: Factory,
                                                                   http: aiohttp.ClientSession) -> None:
    """``GET /fapi/v1/income`` (weight 30): the account's FUNDING_FEE rows, oldest first, in Binance's shape;
    no start/end → the 7 days up to the replay clock; both bounds inclusive; symbol, limit, page; any other
    incomeType → []; a bad limit or page → 400 -1130, an unknown symbol → -1121."""
    async with emulator(clock=FakeClock()) as em:
        client = await connect(http, em)
        opened = await client.call("POST", "/fapi/v1/order", [
            ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.010")])
        assert opened.status == 200, opened.body
        day, now = 86_400_000, em.now_ms
        times = [now - 8 * day, now - 2 * day, now - 2 * day, now - 1000]
        # booked by the call the replay makes at a funding time, here at chosen times
        paid = [em.account.settle_funding("BTCUSDT", D("0.0001"), t)[0] for t in times]
        assert all(p > 0 for p in paid)

        recent = await client.call("GET", "/fapi/v1/income")
        again = await client.call("GET", "/fapi/v1/income", [("incomeType", "FUNDING_FEE"), ("symbol", "BTCUSDT")])
        assert int(again.headers["X-MBX-USED-WEIGHT-1M"]) - int(recent.headers["X-MBX-USED-WEIGHT-1M"]) == 30
        assert recent.body == again.body == [
            {"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": f"-{p}", "asset": "USDT",
             "info": "FUNDING_FEE", "time": t, "tranId": n, "tradeId": ""}
            for n, (t, p) in enumerate(zip(times, paid, strict=True), start=1) if n > 1]

        async def tran_ids(*params: Param) -> list[int]:
            reply = await client.call("GET", "/fapi/v1/income", params)
            assert reply.status == 200, reply.body
            return [row["tranId"] for row in reply.body]

        assert await tran_ids(("startTime", 0)) == [1, 2, 3, 4]
        assert await tran_ids(("endTime", now - 2 * day)) == [1, 2, 3]
        assert await tran_ids(("startTime", now - 2 * day), ("endTime", now - 2 * day)) == [2, 3]
        assert await tran_ids(("startTime", now - 2 * day + 1), ("endTime", now - 1001)) == []
        assert await tran_ids(("startTime", 0), ("limit", 3)) == [1, 2, 3]
        assert await tran_ids(("startTime", 0), ("limit", 3), ("page", 2)) == [4]
        assert await tran_ids(("startTime", 0), ("symbol", "ETHUSDT")) == []
        assert await tran_ids(("startTime", 0), ("incomeType", "REALIZED_PNL")) == []
        for bad in (("limit", 0), ("limit", 1001), ("page", 0)):
            refused = await client.call("GET", "/fapi/v1/income", [bad])
            assert (refused.status, refused.body) == (400, {
                "code": -1130, "msg": f"Data sent for parameter '{bad[0]}' is not valid."})
        unknown = await client.call("GET", "/fapi/v1/income", [("symbol", "NOPEUSDT")])
        assert unknown.body == {"code": -1121, "msg": "Invalid symbol."}
