"""The emulator as a process and under load: the CLI, slow clients, pings and pong timeouts."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from smc_quant.exchange.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.integration


async def test_cli_prints_its_urls_serves_and_exits_0_on_sigterm(shared_data: Path) -> None:
    """``python -m smc_quant.exchange.emulator`` prints its URLs, serves, and exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smc_quant.exchange.emulator",
        "--data",
        str(shared_data),
        "--speed",
        "0",
        "--symbols",
        "BTCUSDT",
        "--max-minutes",
        "2",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = re.match(
            r"emulator rest=(http://127\.0\.0\.1:\d+) market=(ws://127\.0\.0\.1:\d+/market) ", line
        )
        assert found, line
        async with aiohttp.ClientSession() as http, http.get(f"{found[1]}/fapi/v1/exchangeInfo") as r:
            assert [s["symbol"] for s in (await r.json())["symbols"]] == ["BTCUSDT"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_client_that_does_not_read_is_dropped_not_buffered(shared_data: Path) -> None:
    """A connection that stops reading is dropped once its unsent data passes the bound."""
    config = EmulatorConfig(
        data_dir=shared_data,
        speed=40_000,
        map_to_exchange_info=True,
        max_minutes=200,
        start_paused=True,
        max_send_buffer_bytes=256 * 1024,
    )
    async with Emulator(config) as em:
        streams = "/".join(f"{s.lower()}@kline_1m" for s in em.symbols[:200])
        reader, writer = await asyncio.open_connection("127.0.0.1", em.port)
        writer.write(
            f"GET /market/stream?streams={streams} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        em.resume()  # from here on the client reads nothing
        await asyncio.wait_for(em.replay_done.wait(), 30)
        assert em.stats["slow_client_drops"] == 1
        assert em.stats["connections_open"] == 0
        assert em.minutes_replayed == 200
        writer.close()


async def test_at_speed_0_the_replay_waits_for_a_slow_reader(shared_data: Path) -> None:
    """At speed 0 a slow but live reader gets every frame: the replay paces itself to it."""
    config = EmulatorConfig(
        data_dir=shared_data, speed=0, map_to_exchange_info=True, max_minutes=100, start_paused=True
    )
    async with Emulator(config) as em, aiohttp.ClientSession() as http:
        streams = "/".join(f"{s.lower()}@kline_1m" for s in em.symbols[:200])
        async with http.ws_connect(f"{em.ws_market_base}/stream?streams={streams}") as ws:
            em.resume()
            for i in range(200 * 4 * 100):
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT
                if i % 10_000 == 0:
                    await asyncio.sleep(0.05)
        assert em.stats["slow_client_drops"] == 0
        assert em.stats["frames_sent"] == 200 * 4 * 100


async def test_pong_timeout_closes_the_connection(shared_data: Path) -> None:
    """A client that never answers the server's pings is closed after the pong timeout."""
    config = EmulatorConfig(
        data_dir=shared_data,
        speed=0,
        symbols=("BTCUSDT",),
        start_paused=True,
        ping_interval_s=0.05,
        pong_timeout_s=0.2,
    )
    async with (
        Emulator(config) as em,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{em.ws_market_base}/stream", autoping=False) as ws,
    ):
        while (msg := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.PING:
            pass
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1008
