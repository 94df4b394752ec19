"""The emulator's user-data side over real sockets: listenKey lifecycle, ``/private`` streams, allow-lists, expiry.

Events are read off the socket and parsed with the live client's ``parse_event``; the account writes an
order's events before its REST answer, so after a placement returns they are already on the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from smc_quant.exchange.emulator import Emulator
from smc_quant.exchange.wire_trading import parse_event, parse_order
from smc_quant.orders.broker import AccountUpdate, AlgoUpdate, OrderUpdate
from tests.integration.emulator_kit import Factory, emulator_factory
from tests.integration.test_emulator_trading import Client, FakeClock, first_open

pytestmark = pytest.mark.integration
READ_TIMEOUT_S = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(shared_data: Path, clock: FakeClock) -> Factory:
    return emulator_factory(shared_data, max_minutes=30, symbols=("BTCUSDT", "ETHUSDT"), start_paused=True,
                            clock=clock, listen_key_ttl_s=3600)


async def connect(http: aiohttp.ClientSession, em: Emulator) -> Client:
    client = Client(http, em.rest_url)
    await client.sync()
    return client


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=READ_TIMEOUT_S)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    doc: dict[str, Any] = orjson.loads(msg.data)
    return doc


async def test_listen_key_lifecycle(emulator: Factory, http: aiohttp.ClientSession, clock: FakeClock) -> None:
    """POST returns (and extends) the one active key; PUT echoes it; DELETE and the TTL invalidate it (-1125)."""
    async with emulator() as em:
        client = await connect(http, em)
        first = await client.key_only("POST")
        key = first.body["listenKey"]
        assert first.status == 200 and len(key) == 64
        clock.now += 3000
        assert (await client.key_only("POST")).body == {"listenKey": key}  # same key, extended to +3600 s
        clock.now += 3000
        assert (await client.key_only("PUT", params=[("listenKey", key)])).body == {"listenKey": key}
        assert (await client.key_only("DELETE", params=[("listenKey", key)])).body == {}
        gone = await client.key_only("PUT", params=[("listenKey", key)])
        assert (gone.status, gone.body) == (400, {"code": -1125, "msg": "This listenKey does not exist."})

        fresh = (await client.key_only("POST")).body["listenKey"]
        assert fresh != key
        clock.now += 3601
        assert (await client.key_only("PUT", params=[("listenKey", fresh)])).body["code"] == -1125
        assert (await client.key_only("POST")).body["listenKey"] not in (key, fresh)

        no_key = await client.key_only("POST", headers={})
        assert (no_key.status, no_key.body["code"]) == (401, -2014)
        bad_key = await client.key_only("POST", headers={"X-MBX-APIKEY": "someone-else"})
        assert (bad_key.status, bad_key.body["code"]) == (401, -2015)


async def test_order_events_on_query_and_path_forms(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """Both URL forms get ORDER_TRADE_UPDATE (NEW, then the TRADE fill) and ACCOUNT_UPDATE for a MARKET order;
    an ``events`` allow-list gets only what it names."""
    async with emulator() as em:
        client = await connect(http, em)
        key = (await client.key_only("POST")).body["listenKey"]
        base = em.ws_private_base
        async with http.ws_connect(f"{base}/ws?listenKey={key}") as query_ws, \
                http.ws_connect(f"{base}/ws/{key}") as path_ws, \
                http.ws_connect(f"{base}/ws?listenKey={key}&events=ACCOUNT_UPDATE") as only_account:
            placed = await client.call("POST", "/fapi/v1/order", [
                ("symbol", "ETHUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quantity", "0.100"),
                ("newClientOrderId", "u-market"), ("newOrderRespType", "RESULT")])
            state = parse_order(placed.body)
            for ws in (query_ws, path_ws):
                frames = [await next_event(ws) for _ in range(3)]
                assert [f["e"] for f in frames] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
                assert all(isinstance(f["E"], int) and isinstance(f["T"], int) for f in frames)
                new, trade, account = (parse_event(f) for f in frames)
                assert isinstance(new, OrderUpdate) and (new.execution, new.status) == ("NEW", "NEW")
                assert isinstance(trade, OrderUpdate) and (trade.execution, trade.status) == ("TRADE", "FILLED")
                assert (trade.client_order_id, trade.last_qty, trade.avg_price) == (
                    "u-market", state.executed_qty, state.avg_price)
                assert trade.commission > 0 and trade.last_price == state.avg_price
                assert isinstance(account, AccountUpdate) and account.reason == "ORDER"
                assert account.positions[0] != ("ETHUSDT", None)
            only = await next_event(only_account)
            assert only["e"] == "ACCOUNT_UPDATE"  # the two order events were written before it and filtered out
        assert em.user_data.stats["events_sent"] == 7


async def test_algo_events_and_unknown_key(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """ALGO_UPDATE NEW on placement and CANCELED on cancel; an unknown key's socket is closed at once."""
    async with emulator() as em:
        client = await connect(http, em)
        async with http.ws_connect(f"{em.ws_private_base}/ws?listenKey=nope") as refused:
            msg = await refused.receive(timeout=READ_TIMEOUT_S)
            assert msg.type == aiohttp.WSMsgType.CLOSE and refused.close_code == 1008
        key = (await client.key_only("POST")).body["listenKey"]
        async with http.ws_connect(f"{em.ws_private_base}/ws?listenKey={key}&events=ALGO_UPDATE") as ws:
            trigger = first_open(em, "BTCUSDT") - 500
            placed = await client.call("POST", "/fapi/v1/algoOrder", [
                ("algoType", "CONDITIONAL"), ("symbol", "BTCUSDT"), ("side", "SELL"), ("type", "STOP_MARKET"),
                ("quantity", "0.010"), ("triggerPrice", str(trigger)), ("reduceOnly", "true"),
                ("clientAlgoId", "u-stop")])
            assert placed.status == 200, placed.body
            frame = await next_event(ws)
            assert (frame["o"]["q"], frame["o"]["R"]) == ("0.010", True)
            new = parse_event(frame)
            assert isinstance(new, AlgoUpdate) and (new.client_algo_id, new.status, new.trigger_price) == (
                "u-stop", "NEW", trigger)
            await client.call("DELETE", "/fapi/v1/algoOrder", [("clientAlgoId", "u-stop")])
            cancelled = parse_event(await next_event(ws))
            assert isinstance(cancelled, AlgoUpdate) and cancelled.status == "CANCELED"


async def test_expire_listen_key_fault(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """expire_listen_key: streams get listenKeyExpired (unless their allow-list omits it) and close; PUT → -1125."""
    async with emulator() as em:
        client = await connect(http, em)
        key = (await client.key_only("POST")).body["listenKey"]
        async with http.ws_connect(f"{em.ws_private_base}/ws/{key}") as ws, \
                http.ws_connect(f"{em.ws_private_base}/ws?listenKey={key}&events=ORDER_TRADE_UPDATE") as filtered:
            reply = await http.post(f"{em.rest_url}/_emulator/faults", json={"action": "expire_listen_key"})
            assert (await reply.json())["results"] == [2]
            expired = await next_event(ws)
            assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key
            assert (await ws.receive(timeout=READ_TIMEOUT_S)).type == aiohttp.WSMsgType.CLOSE
            assert (await filtered.receive(timeout=READ_TIMEOUT_S)).type == aiohttp.WSMsgType.CLOSE
        assert (await client.key_only("PUT", params=[("listenKey", key)])).body["code"] == -1125
        assert em.faults.counters["listen_keys_expired"] == 1


async def test_a_key_past_its_ttl_tells_its_streams(
    emulator: Factory, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """Without keepalive the key dies after listen_key_ttl_s: its stream gets listenKeyExpired, then closes."""
    async with emulator() as em:
        client = await connect(http, em)
        key = (await client.key_only("POST")).body["listenKey"]
        async with http.ws_connect(f"{em.ws_private_base}/ws?listenKey={key}") as ws:
            clock.now += 3599
            assert (await client.key_only("PUT", params=[("listenKey", key)])).status == 200  # extended to +3600
            clock.now += 3600
            late = await client.key_only("PUT", params=[("listenKey", key)])
            assert late.body["code"] == -1125
            expired = await next_event(ws)
            assert (expired["e"], expired["listenKey"]) == ("listenKeyExpired", key)
            assert expired["E"] == int((clock.now) * 1000)
            assert (await ws.receive(timeout=READ_TIMEOUT_S)).type == aiohttp.WSMsgType.CLOSE
