"""The emulator's fault switches over real sockets: drop, close, stall, malformed, delay, HTTP errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest
import websockets

from smc_quant.domain.candles import MINUTE_MS
from tests.integration.emulator_kit import Factory, emulator_factory

pytestmark = pytest.mark.integration
BTC = "btcusdt@kline_1m"


@pytest.fixture
def emulator(shared_data: Path) -> Factory:
    """A factory of started, paused emulators on 127.0.0.1:0 replaying at full speed."""
    return emulator_factory(shared_data, max_minutes=6, start_paused=True, symbols=("BTCUSDT",))


async def test_drop_all_is_an_abnormal_close_1006(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """drop_all cuts the TCP connection without a close frame: clients see 1006."""
    async with emulator() as em:
        lib = await websockets.connect(f"{em.ws_market_base}/stream?streams={BTC}")
        aio = await http.ws_connect(f"{em.ws_market_base}/stream?streams={BTC}")
        await lib.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
        await asyncio.wait_for(lib.recv(), 5)
        await _registered(aio)
        assert em.faults.drop_all() == 2
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(lib.recv(), 5)
        assert closed.value.rcvd is None
        msg = await aio.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert aio.close_code == 1006
        assert em.faults.counters["drops"] == 2


async def test_close_all_sends_the_close_code(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """close_all(1001) closes every connection with a 1001 close frame."""
    async with emulator() as em, http.ws_connect(f"{em.ws_market_base}/stream?streams={BTC}") as ws:
        await _registered(ws)
        em.faults.close_all(1001)
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1001


async def test_stall_keeps_the_socket_open_and_leaves_a_gap(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """While stalled no data arrives though the replay advances; afterwards data resumes past a gap."""
    async with emulator() as em, http.ws_connect(f"{em.ws_market_base}/stream?streams={BTC}") as ws:
        em.faults.stall(True)
        em.resume()
        await em.wait_minutes(2)
        em.pause()
        stalled_at = em.minutes_replayed
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.3)
        assert not ws.closed
        assert em.stats["frames_stalled"] >= 8
        em.faults.stall(False)
        em.resume()
        await em.wait_minutes(stalled_at + 1)
        first = orjson.loads((await ws.receive(timeout=5)).data)["data"]["k"]
        assert first["t"] >= em.start_ms + stalled_at * MINUTE_MS


async def test_malformed_frames_are_malformed(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """malformed(3) replaces the next three frames with broken JSON, a NaN close and a negative close."""
    async with emulator() as em, http.ws_connect(f"{em.ws_market_base}/stream?streams={BTC}") as ws:
        em.faults.malformed(3)
        em.resume()
        await em.wait_minutes(2)
        texts = [(await ws.receive(timeout=5)).data for _ in range(8)]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(texts[0])
    closes = [orjson.loads(t)["data"]["k"]["c"] for t in texts[1:]]
    assert closes[0] == "NaN"
    assert closes[1].startswith("-")
    assert all(float(c) > 0 for c in closes[2:])
    assert em.faults.counters["malformed"] == 3


async def test_http_error_injects_statuses(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """http_error answers the next requests with 503, 429 or 418 and Binance-like bodies."""
    async with emulator() as em:
        url = f"{em.rest_url}/fapi/v1/time"
        em.faults.http_error(503, 2)
        assert [(await http.get(url)).status for _ in range(3)] == [503, 503, 200]
        em.faults.http_error(429, 1)
        async with http.get(url) as r:
            assert r.status == 429
            assert (await r.json())["code"] == -1003
            assert r.headers["Retry-After"] == "1"
        em.faults.http_error(418, 1)
        async with http.get(url) as r:
            assert r.status == 418
            assert "banned until" in (await r.json())["msg"]
        assert (await http.get(url)).status == 200


async def test_delay_holds_back_rest_responses(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """delay_ms delays REST responses (and stream frames) by the given time."""
    async with emulator() as em:
        em.faults.delay_ms(200)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert (await http.get(f"{em.rest_url}/fapi/v1/ping")).status == 200
        assert loop.time() - began >= 0.2


async def test_admin_endpoint_drives_faults_and_reports_state(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """POST /_emulator/faults runs fault actions and GET /_emulator/state reports them."""
    async with emulator() as em:
        admin = f"{em.rest_url}/_emulator"
        commands = [
            {"action": "stall", "on": True},
            {"action": "http_error", "status": 503, "count": 1},
            {"action": "resume"},
        ]
        async with http.post(f"{admin}/faults", json=commands) as r:
            assert r.status == 200
        await em.wait_minutes(1)
        async with http.get(f"{admin}/state") as r:
            state = await r.json()
        assert state["faults"]["stalled"] is True
        assert state["faults"]["http_error"]["pending"] == 1
        assert state["minutes_replayed"] >= 1
        assert state["symbols"] == 1
        async with http.post(f"{admin}/faults", json={"action": "explode"}) as r:
            assert r.status == 400


async def _registered(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Make sure the server has registered the connection (a control round trip)."""
    await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":0}')
    assert (await ws.receive_json(timeout=5))["id"] == 0


async def test_stall_can_target_the_connections_of_some_streams(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """stall(streams=…) silences only the connections subscribed to one of those streams."""
    async with (
        emulator(symbols=("BTCUSDT", "ETHUSDT")) as em,
        http.ws_connect(f"{em.ws_market_base}/stream?streams={BTC}") as btc,
        http.ws_connect(f"{em.ws_market_base}/stream?streams=ethusdt@kline_1m") as eth,
    ):
        em.faults.stall(True, streams=[BTC])
        em.resume()
        await em.wait_minutes(1)
        assert (await eth.receive_json(timeout=5))["stream"] == "ethusdt@kline_1m"
        with pytest.raises(TimeoutError):
            await btc.receive(timeout=0.3)
        assert em.faults.state()["stalled_streams"] == [BTC]


async def test_rest_answers_can_be_garbled_refused_or_carry_broken_rows(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """garbled cuts a 200 body in half (not JSON); http_error(400) refuses with -1121; malformed_rows breaks every
    other row of the next /klines answer from the second: cut short, "abc" high, null open time, NaN close,
    high < low."""
    async with emulator(history_minutes=30) as em:
        start = em.start_ms - 12 * MINUTE_MS
        klines = f"{em.rest_url}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=12&startTime={start}"
        em.faults.garbled(1, path="/fapi/v1/klines")
        async with http.get(f"{em.rest_url}/fapi/v1/time") as r:
            assert r.status == 200 and "serverTime" in await r.json()  # another path: untouched
        async with http.get(klines) as r:
            assert r.status == 200
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(await r.read())
        em.faults.http_error(400, 1)
        async with http.get(klines) as r:
            assert (r.status, await r.json()) == (400, {"code": -1121, "msg": "Invalid symbol."})
        async with http.get(klines) as r:
            clean = await r.json()
        em.faults.malformed_rows(5)
        async with http.get(klines) as r:
            broken = await r.json()
        assert len(clean) == len(broken) == 12
        assert [i for i in range(12) if broken[i] != clean[i]] == [1, 3, 5, 7, 9]
        assert broken[1] == clean[1][:5] and broken[3][2] == "abc" and broken[5][0] is None
        assert broken[7][4] == "NaN" and float(broken[9][2]) < float(broken[9][3])
        async with http.get(klines) as r:
            assert await r.json() == clean  # consumed
        assert (em.faults.counters["garbled"], em.faults.counters["http_400"],
                em.faults.counters["malformed_rows"]) == (1, 1, 5)
