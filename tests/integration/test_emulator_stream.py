"""The emulator's WebSocket side over real sockets: frame shapes, routes, control messages, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from smc_quant.domain.candles import MINUTE_MS
from tests.integration.emulator_kit import Factory, emulator_factory

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator(shared_data: Path) -> Factory:
    """A factory of started, paused emulators on 127.0.0.1:0 replaying at full speed."""
    return emulator_factory(shared_data, max_minutes=3, start_paused=True, symbols=("BTCUSDT", "ETHUSDT"))


async def read_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=5.0)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def drain(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Read until nothing arrives for 0.3 s; the number of messages read."""
    n = 0
    try:
        while True:
            await ws.receive(timeout=0.3)
            n += 1
    except TimeoutError:
        return n


async def collect(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[Any]:
    return [await read_json(ws) for _ in range(n)]


async def test_combined_frames_have_binance_shape_and_final_equals_source(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """Combined frames carry Binance's kline shape and each final frame equals the real candle."""
    async with emulator() as em:
        url = f"{em.ws_market_base}/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        async with http.ws_connect(url) as ws:
            em.resume()
            await em.wait_minutes(3)
            frames = await collect(ws, 3 * 4 * 2)
        finals = {"BTCUSDT": [], "ETHUSDT": []}  # type: dict[str, list[dict[str, Any]]]
        for frame in frames:
            assert set(frame) == {"stream", "data"}
            data, k = frame["data"], frame["data"]["k"]
            assert frame["stream"] == f"{data['s'].lower()}@kline_1m"
            assert set(data) == {"e", "E", "s", "k"}
            assert data["e"] == "kline"
            assert set(k) == set("tTsifLochlvnxqVQB")
            assert all(isinstance(k[f], str) for f in "ochlvqVQB")
            assert k["T"] == k["t"] + 59_999
            assert k["i"] == "1m"
            assert k["s"] == data["s"]
            assert float(k["l"]) <= float(k["c"]) <= float(k["h"])
            if k["x"]:
                finals[data["s"]].append(k)
        for symbol, ks in finals.items():
            source = em.candles(symbol)
            assert len(ks) == len(source) == 3
            for k, c in zip(ks, source, strict=True):
                assert (
                    k["t"],
                    float(k["o"]),
                    float(k["h"]),
                    float(k["l"]),
                    float(k["c"]),
                    float(k["v"]),
                ) == (c.open_time, c.open, c.high, c.low, c.close, c.volume)
                assert (float(k["q"]), k["n"], float(k["V"]), float(k["Q"])) == (
                    c.quote_volume,
                    c.trades,
                    c.taker_buy_volume,
                    c.taker_buy_quote_volume,
                )


async def test_in_candle_updates_stay_inside_the_real_range(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """In-candle updates lie inside the real candle's range and their volume grows to the final one."""
    async with emulator(updates_per_candle=5, symbols=("SOLUSDT",)) as em:
        async with http.ws_connect(f"{em.ws_market_base}/ws/solusdt@kline_1m") as ws:
            em.resume()
            await em.wait_minutes(3)
            frames = await collect(ws, 3 * 6)
        for m, real in enumerate(em.candles("SOLUSDT")):
            minute = [f["k"] for f in frames[m * 6 : (m + 1) * 6]]
            assert [k["x"] for k in minute] == [False] * 5 + [True]
            volumes = [float(k["v"]) for k in minute]
            assert volumes == sorted(volumes)
            assert volumes[-1] == real.volume
            for k in minute:
                assert k["t"] == real.open_time
                assert float(k["o"]) == real.open
                assert real.low <= float(k["l"]) <= float(k["c"]) <= float(k["h"]) <= real.high
            assert float(minute[-1]["c"]) == real.close


async def test_wrong_routes_ack_kline_subscriptions_then_stay_silent(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """Kline subscriptions on legacy /stream, /ws and on /public are acked and then deliver nothing."""
    async with emulator() as em:
        market = await http.ws_connect(f"{em.ws_market_base}/stream?streams=btcusdt@kline_1m")
        wrong = [
            await http.ws_connect(u)
            for u in (f"{em.ws_legacy_base}/stream", f"{em.ws_legacy_base}/ws", f"{em.ws_public_base}/stream")
        ]
        for i, ws in enumerate(wrong):
            await ws.send_str(
                orjson.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": i}).decode()
            )
            assert await read_json(ws) == {"result": None, "id": i}
        em.resume()
        await em.wait_minutes(2)
        assert len(await collect(market, 8)) == 8
        assert await asyncio.gather(*(drain(ws) for ws in wrong)) == [0, 0, 0]
        assert not any(ws.closed for ws in wrong)
        for ws in [market, *wrong]:
            await ws.close()


async def test_subscribe_unsubscribe_list_and_properties(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET/GET_PROPERTY answer as Binance documents."""
    async with emulator() as em, http.ws_connect(f"{em.ws_market_base}/stream") as ws:

        async def call(req: dict[str, Any]) -> Any:
            await ws.send_bytes(orjson.dumps(req))
            return await read_json(ws)

        params = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
        assert await call({"method": "SUBSCRIBE", "params": params, "id": 1}) == {"result": None, "id": 1}
        assert await call({"method": "LIST_SUBSCRIPTIONS", "id": 2}) == {"result": params, "id": 2}
        assert await call({"method": "UNSUBSCRIBE", "params": params[:1], "id": 3}) == {
            "result": None,
            "id": 3,
        }
        assert await call({"method": "LIST_SUBSCRIPTIONS", "id": 4}) == {"result": params[1:], "id": 4}
        assert await call({"method": "GET_PROPERTY", "params": ["combined"], "id": 5}) == {
            "result": True,
            "id": 5,
        }
        assert await call({"method": "SET_PROPERTY", "params": ["combined", False], "id": 6}) == {
            "result": None,
            "id": 6,
        }
        errors = [
            await call({"method": "SET_PROPERTY", "params": ["combined", "no"], "id": 7}),
            await call({"method": "GET_PROPERTY", "params": ["colour"], "id": 8}),
            await call({"method": "SUBSCRIBE", "params": [], "id": -1}),
            await call({"method": "LISTEN", "id": 9}),
        ]
        assert [e["error"]["code"] for e in errors] == [1, 0, 2, 2]
        assert "unknown variant `LISTEN`" in errors[3]["error"]["msg"]
        em.resume()
        await em.wait_minutes(1)
        raw = await read_json(ws)
        assert raw["e"] == "kline"
        assert raw["s"] == "ETHUSDT"


async def test_invalid_json_gets_an_error_then_a_close(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """Invalid JSON is answered with code 3 and the connection is closed."""
    async with emulator() as em, http.ws_connect(f"{em.ws_market_base}/stream") as ws:
        await ws.send_str("{not json")
        reply = await read_json(ws)
        assert reply["error"]["code"] == 3
        assert reply["error"]["msg"].startswith("Invalid JSON")
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1008


async def test_more_than_200_streams_are_refused(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """A 201st stream on one connection closes it with 1008, on SUBSCRIBE and in the URL."""
    names = [f"s{i}usdt@kline_1m" for i in range(201)]
    async with emulator() as em:
        async with http.ws_connect(f"{em.ws_market_base}/stream") as ws:
            await ws.send_bytes(orjson.dumps({"method": "SUBSCRIBE", "params": names[:200], "id": 1}))
            assert await read_json(ws) == {"result": None, "id": 1}
            await ws.send_bytes(orjson.dumps({"method": "SUBSCRIBE", "params": names[200:], "id": 2}))
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 1008
            assert msg.extra == "connection closed subscribed channels exceeds limit"
        async with http.ws_connect(f"{em.ws_market_base}/stream?streams=" + "/".join(names)) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 1008


async def test_more_than_10_messages_a_second_close_with_1008(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """The 11th incoming message within one second closes the connection with 1008."""
    async with emulator() as em, http.ws_connect(f"{em.ws_market_base}/stream") as ws:
        for i in range(11):
            await ws.send_bytes(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        replies = []
        while (msg := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
            replies.append(orjson.loads(msg.data))
        assert len(replies) == 10
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1008


async def test_server_pings_and_client_pongs(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """The server sends WebSocket pings at its ping interval."""
    async with (
        emulator(ping_interval_s=0.05) as em,
        http.ws_connect(f"{em.ws_market_base}/stream", autoping=False) as ws,
    ):
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.PING
        await ws.pong(msg.data)


async def test_speed_paces_the_replay_clock(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """At speed 1200 a minute takes at least 50 ms of wall time and serverTime follows the replay clock."""
    async with emulator(speed=1200) as em:
        loop = asyncio.get_running_loop()
        began = loop.time()
        em.resume()
        await em.wait_minutes(2)
        assert loop.time() - began >= 2 * 60 / 1200
        async with http.get(f"{em.rest_url}/fapi/v1/time") as r:
            server_time = (await r.json())["serverTime"]
        assert em.start_ms + 2 * MINUTE_MS <= server_time <= em.now_ms <= em.start_ms + 3 * MINUTE_MS


async def test_pause_freezes_the_replay(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """While paused no minute advances and no frame is sent; resume continues from there."""
    async with (
        emulator(max_minutes=4) as em,
        http.ws_connect(f"{em.ws_market_base}/ws/btcusdt@kline_1m") as ws,
    ):
        em.resume()
        await em.wait_minutes(1)
        em.pause()
        done, now = em.minutes_replayed, em.now_ms
        received = await drain(ws)
        assert received == em.stats["frames_sent"]
        assert (em.minutes_replayed, em.now_ms) == (done, now)
        em.resume()
        await em.wait_minutes(4)
        assert em.replay_done.is_set()
