"""/health follows shard freshness; `smc-quant check` exit codes follow /health; /metrics and /ready."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from shards.app import Service
from shards.cli import main as cli_main
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from tests.integration.cluster_kit import SECRET, settings_for

pytestmark = pytest.mark.integration


async def _health(session: aiohttp.ClientSession, url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def _until_status(session: aiohttp.ClientSession, url: str, status: int) -> dict:  # type: ignore[type-arg]
    """Poll /health the way an uptime monitor does until it answers ``status``."""
    while True:
        got, body = await _health(session, url)
        if got == status:
            return body
        await asyncio.sleep(0.1)


async def _check_exit(url: str) -> int:
    return await asyncio.to_thread(cli_main, ["check", "--url", url, "--timeout", "2"])


async def test_health_turns_503_on_one_stalled_shard_and_recovers(shared_data: Path, pg_dsn: str) -> None:
    """One shard's stream stalls: 503 naming only it within the window; resumes: back to 200."""
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=120.0, updates_per_candle=1,
                                  map_to_exchange_info=True, max_minutes=200, start_paused=True))
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=3, heartbeat_timeout_s=30.0))
    bodies: list[str] = []
    try:
        with capture_logs() as logs:
            await service.start()
        assert service.cluster is not None and service.ops is not None
        await service.cluster.wait_subscribed()
        emu.resume()
        await service.cluster.wait_until(emu.start_ms + 60_000)
        url = f"http://127.0.0.1:{service.ops.port}/health"
        async with aiohttp.ClientSession() as session:
            body = await _until_status(session, url, 200)
            assert body["status"] == "ok" and len(body["shards"]) == 3
            trading = body["trading"]  # the paper stack: reconciled at start, no user-data stream
            assert (trading["status"], trading["problems"], trading["halted"]) == ("ok", [], None)
            assert trading["user_stream_down_s"] == 0 and trading["seconds_since_reconcile"] < 60
            assert await _check_exit(url) == 0
            stalled = service.cluster.feeds[1]
            emu.faults.stall(True, streams=stalled.connections[0].streams)
            body = await asyncio.wait_for(_until_status(session, url, 503), 10)
            assert body["stale_shards"] == [1]
            assert await _check_exit(url) == 1
            emu.faults.stall(False, streams=stalled.connections[0].streams)
            body = await asyncio.wait_for(_until_status(session, url, 200), 10)
            assert body["stale_shards"] == []
            assert await _check_exit(url) == 0
            async with session.get(f"http://127.0.0.1:{service.ops.port}/metrics") as resp:
                text = await resp.text()
            bodies += [text, str(body)]
            assert 'smc_feed_frames_total{shard="1"}' in text and "smc_feed_queue_depth" in text
            assert "smc_rest_weight_used" in text
            async with session.get(f"http://127.0.0.1:{service.ops.port}/ready") as resp:
                assert resp.status == 200
                bodies.append(await resp.text())
        for secret in (SECRET, SECRET[::-1]):
            assert all(secret not in b for b in bodies)
            assert secret not in repr(logs)
    finally:
        await service.stop()
        await emu.stop()


def test_check_reports_unreachable_endpoint() -> None:
    """`smc-quant check` exits 1 when nothing listens on the health URL."""
    assert cli_main(["check", "--url", "http://127.0.0.1:9/health", "--timeout", "1"]) == 1
