"""The emulator's REST side over real sockets: klines, weights, 429/418, exchangeInfo, mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smc_quant.datasets import load_exchange_info
from smc_quant.domain.candles import MINUTE_MS
from tests.integration.emulator_kit import Factory, emulator_factory

pytestmark = pytest.mark.integration
FROZEN_WALL = 1_700_000_010.0  # ten seconds into a wall-clock minute, so a window never rolls mid-test


@pytest.fixture
def emulator(shared_data: Path) -> Factory:
    """A factory of started emulators on 127.0.0.1:0 with a frozen wall clock for weight windows."""
    return emulator_factory(shared_data, max_minutes=5, symbols=("BTCUSDT", "ETHUSDT"),
                            clock=lambda: FROZEN_WALL)


async def get(http: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, dict[str, str], Any]:
    async with http.get(url, params={k: str(v) for k, v in params.items()}) as r:
        return r.status, dict(r.headers), await r.json()


async def test_ping_time_and_klines_rows_equal_the_source(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """Klines rows have Binance's shape, equal the served candles, and stop at the replay clock."""
    async with emulator() as em:
        await em.wait_minutes(5)
        assert (await get(http, f"{em.rest_url}/fapi/v1/ping"))[2] == {}
        server_time = (await get(http, f"{em.rest_url}/fapi/v1/time"))[2]["serverTime"]
        assert server_time == em.now_ms == em.start_ms + 5 * MINUTE_MS
        status, headers, rows = await get(
            http,
            f"{em.rest_url}/fapi/v1/klines",
            symbol="ETHUSDT",
            interval="1m",
            startTime=em.start_ms,
            limit=1000,
        )
        assert status == 200
        assert headers["X-MBX-USED-WEIGHT-1M"] == "7"
        source = em.candles("ETHUSDT")
        assert len(rows) == len(source) == 5
        for row, c in zip(rows, source, strict=True):
            assert len(row) == 12
            assert row[6] == c.close_time
            assert row[11] == "0"
            assert all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10))
            assert (row[0], *map(float, row[1:6]), float(row[7]), row[8], float(row[9]), float(row[10])) == (
                c.open_time,
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.quote_volume,
                c.trades,
                c.taker_buy_volume,
                c.taker_buy_quote_volume,
            )
        _, _, recent = await get(
            http, f"{em.rest_url}/fapi/v1/klines", symbol="ETHUSDT", interval="1m", limit=2
        )
        assert [r[0] for r in recent] == [c.open_time for c in source[-2:]]


async def test_the_last_row_is_the_open_bar_while_replaying(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """While a minute is in progress the last klines row is its still-open bar, as on Binance."""
    async with emulator(start_paused=True, start_time_ms=1_689_679_380_000) as em:
        _, _, rows = await get(
            http, f"{em.rest_url}/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=3
        )
        assert rows[-1][0] == em.start_ms
        assert rows[-1][6] > em.now_ms
        assert rows[-1][1] == rows[-1][4]
        assert float(rows[-1][5]) == 0.0
        assert rows[0][0] == em.start_ms - 2 * MINUTE_MS


async def test_klines_weights_and_errors(emulator: Factory, http: aiohttp.ClientSession) -> None:
    """Weights are 1/2/5/10 by limit; bad limit, symbol and interval give Binance's error bodies."""
    async with emulator() as em:
        url = f"{em.rest_url}/fapi/v1/klines"
        used = []
        for limit in (99, 100, 499, 500, 1000, 1001, 1500):
            status, headers, _ = await get(http, url, symbol="BTCUSDT", interval="1m", limit=limit)
            assert status == 200
            used.append(int(headers["X-MBX-USED-WEIGHT-1M"]))
        assert [b - a for a, b in zip([0, *used], used, strict=False)] == [1, 2, 2, 5, 5, 10, 10]
        status, _, body = await get(http, url, symbol="BTCUSDT", interval="1m", limit=1501)
        assert status == 400
        assert body["code"] == -1130
        status, _, body = await get(http, url, symbol="NOPEUSDT", interval="1m")
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
        status, _, body = await get(http, url, symbol="BTCUSDT", interval="7m")
        assert status == 400
        assert body["code"] == -1120
        assert em.stats["weight_used"] >= sum(used[-1:])


async def test_over_the_weight_limit_gives_429_then_418(
    emulator: Factory, http: aiohttp.ClientSession
) -> None:
    """Past 2400 weight a minute come 429s with -1003 and Retry-After, then a 418 ban on repeated abuse."""
    async with emulator(ban_after_429s=3) as em:
        url = f"{em.rest_url}/fapi/v1/klines"
        for _ in range(240):
            status, _, _ = await get(http, url, symbol="BTCUSDT", interval="1m", limit=1500)
            assert status == 200
        statuses = []
        for _ in range(5):
            status, headers, body = await get(http, url, symbol="BTCUSDT", interval="1m", limit=1500)
            statuses.append(status)
            assert body["code"] == -1003
            assert int(headers["Retry-After"]) > 0
            assert headers["X-MBX-USED-WEIGHT-1M"] == "2400"
        assert statuses == [429, 429, 429, 418, 418]
        assert body["msg"] == f"Way too many requests; IP banned until {int((FROZEN_WALL + 120) * 1000)}."
        assert (await get(http, f"{em.rest_url}/fapi/v1/ping"))[0] == 418


async def test_exchange_info_has_the_real_shape(
    emulator: Factory, http: aiohttp.ClientSession, shared_data: Path
) -> None:
    """exchangeInfo is the real document restricted to the served symbols, with serverTime = replay clock."""
    async with emulator(symbols=("BTCUSDT", "MATICUSDT")) as em:
        status, headers, info = await get(http, f"{em.rest_url}/fapi/v1/exchangeInfo")
    real = load_exchange_info(shared_data)
    assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert set(info) == set(real)
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 2400,
    }
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "MATICUSDT"]
    assert info["symbols"][0] == next(s for s in real["symbols"] if s["symbol"] == "BTCUSDT")
    matic = info["symbols"][1]
    assert matic["baseAsset"] == "MATIC"
    assert matic["status"] == "TRADING"
    assert set(matic) == set(info["symbols"][0])


async def test_mapping_serves_all_347_exchange_info_symbols(
    emulator: Factory, http: aiohttp.ClientSession, shared_data: Path
) -> None:
    """With mapping on, every exchangeInfo symbol is served and streams a real series."""
    async with emulator(symbols=(), map_to_exchange_info=True, max_minutes=1, start_paused=True) as em:
        real = [s["symbol"] for s in load_exchange_info(shared_data)["symbols"]]
        assert em.symbols == tuple(real)
        assert len(real) == 347
        _, _, info = await get(http, f"{em.rest_url}/fapi/v1/exchangeInfo")
        assert [s["symbol"] for s in info["symbols"]] == real
        assert em.market.source_of["BTCUSDT"] == "BTCUSDT"
        assert len(set(em.market.source_of.values())) == 18  # every real series is shown somewhere
        streams = "/".join(f"{s.lower()}@kline_1m" for s in real[:200])
        async with http.ws_connect(f"{em.ws_market_base}/stream?streams={streams}") as ws:
            em.resume()
            await em.wait_minutes(1)
            seen = {(await ws.receive_json(timeout=5))["data"]["s"] for _ in range(200 * 4)}
        assert seen == set(real[:200])
        last = real[-1]
        source = em.market.source_of[last]
        assert [(c.open, c.close) for c in em.candles(last)] == [
            (c.open, c.close) for c in em.candles(source)
        ]
