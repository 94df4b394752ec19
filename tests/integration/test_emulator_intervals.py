"""Klines longer than 1m over real sockets: aggregated from real 1m candles, checked against real 5m."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smc_quant.datasets import read_klines
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.exchange.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.integration
FIVE = 5 * MINUTE_MS


@pytest.fixture
async def emu(shared_data: Path) -> AsyncIterator[Emulator]:
    """A paused emulator on ETHUSDT whose replay starts two minutes into a 5-minute window."""
    first = int(read_klines(shared_data / "klines/binance-usdm-2023/1m/ETHUSDT.csv.gz").open_time[0])
    start = first + 10_000 * MINUTE_MS
    start = start - start % FIVE + 2 * MINUTE_MS
    config = EmulatorConfig(
        data_dir=shared_data,
        speed=0,
        symbols=("ETHUSDT",),
        start_time_ms=start,
        max_minutes=13,
        start_paused=True,
    )
    async with Emulator(config) as em:
        yield em


async def klines(http: aiohttp.ClientSession, em: Emulator, **params: Any) -> list[list[Any]]:
    query = {"symbol": "ETHUSDT", **{k: str(v) for k, v in params.items()}}
    async with http.get(f"{em.rest_url}/fapi/v1/klines", params=query) as r:
        assert r.status == 200
        rows: list[list[Any]] = await r.json()
        return rows


def aggregate(rows: list[list[Any]]) -> tuple[float, ...]:
    """OHLCV, quote volume, trades, taker-buy volumes of consecutive 1m rows as one kline."""
    return (
        float(rows[0][1]),
        max(float(r[2]) for r in rows),
        min(float(r[3]) for r in rows),
        float(rows[-1][4]),
        *(sum(float(r[i]) for r in rows) for i in (5, 7, 8, 9, 10)),
    )


async def test_rest_5m_klines_match_the_real_5m_data(emu: Emulator, shared_data: Path) -> None:
    """REST 5m rows aggregated from real 1m candles equal the exchange's own 5m candles."""
    real = read_klines(shared_data / "klines/binance-usdm-2023/5m/ETHUSDT.csv.gz")
    at = {int(t): i for i, t in enumerate(real.open_time.tolist())}
    async with aiohttp.ClientSession() as http:
        rows = await klines(http, emu, interval="5m", endTime=emu.start_ms - 3 * MINUTE_MS, limit=300)
    assert len(rows) == 300
    assert all(r[0] % FIVE == 0 and r[6] == r[0] + FIVE - 1 for r in rows)
    compared = 0
    for row in rows:
        i = at.get(row[0])
        if i is None:
            continue
        compared += 1
        assert tuple(map(float, row[1:5])) == (real.open[i], real.high[i], real.low[i], real.close[i])
        assert float(row[5]) == pytest.approx(real.volume[i], rel=1e-9)
    assert compared >= 250


async def test_rest_5m_rows_aggregate_the_1m_rows_and_end_with_the_open_window(emu: Emulator) -> None:
    """Each 5m row sums its 1m rows; while replaying, the last 5m row is the open window so far."""
    emu.resume()
    await emu.wait_minutes(13)
    async with aiohttp.ClientSession() as http:
        ones = await klines(http, emu, interval="1m", startTime=emu.start_ms - 2 * MINUTE_MS, limit=15)
        fives = await klines(http, emu, interval="5m", startTime=emu.start_ms - 2 * MINUTE_MS, limit=3)
    assert [r[0] for r in fives] == [ones[0][0] + i * FIVE for i in range(3)]
    for n, row in enumerate(fives):
        part = ones[n * 5 : (n + 1) * 5]
        assert (*map(float, row[1:6]), float(row[7]), row[8], float(row[9]), float(row[10])) == pytest.approx(
            aggregate(part), rel=1e-12
        )


async def test_stream_5m_updates_every_minute_and_closes_with_the_window(emu: Emulator) -> None:
    """A kline_5m stream updates at every step and its final frame (x true) closes each 5-minute window."""
    async with aiohttp.ClientSession() as http:
        url = f"{emu.ws_market_base}/stream?streams=ethusdt@kline_5m/ethusdt@kline_1m"
        async with http.ws_connect(url) as ws:
            emu.resume()
            await emu.wait_minutes(13)
            frames = [await ws.receive_json(timeout=5) for _ in range(13 * 4 * 2)]
    five = [f["data"]["k"] for f in frames if f["stream"] == "ethusdt@kline_5m"]
    one = [f["data"]["k"] for f in frames if f["stream"] == "ethusdt@kline_1m" and f["data"]["k"]["x"]]
    assert len(five) == 13 * 4
    assert len(one) == 13
    assert all(k["i"] == "5m" and k["t"] % FIVE == 0 and k["T"] == k["t"] + FIVE - 1 for k in five)
    closed = [k for k in five if k["x"]]
    w0 = emu.start_ms - 2 * MINUTE_MS
    assert [k["t"] for k in closed] == [w0, w0 + FIVE, w0 + 2 * FIVE]
    for k in closed[1:]:
        minutes = [c for c in one if k["t"] <= c["t"] < k["t"] + FIVE]
        assert len(minutes) == 5
        assert float(k["o"]) == float(minutes[0]["o"])
        assert float(k["c"]) == float(minutes[-1]["c"])
        assert float(k["h"]) == max(float(c["h"]) for c in minutes)
        assert float(k["l"]) == min(float(c["l"]) for c in minutes)
        assert k["n"] == sum(c["n"] for c in minutes)
        assert float(k["v"]) == pytest.approx(sum(float(c["v"]) for c in minutes), rel=1e-12)
    # the replay joined the first window two minutes late; its kline still covers the whole window
    joined = [k for k in five if k["t"] == w0]
    assert len(joined) == 3 * 4
    assert float(closed[0]["v"]) > sum(float(c["v"]) for c in one if c["t"] < w0 + FIVE)
