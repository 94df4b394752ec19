"""A replay restarted: its trading clock (market time) stands at the newest stored close when the executor
recovers. It stood at 0 until the first live candle, so the recovery's UTC day was 1970-01-01: the next check
started a fresh day, and the day's realised losses were gone from the daily breaker (and the dedupe and
adoption windows covered all history). Emulator (real 2023 candles), the service, PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shards.app import Service
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.risk import DAY_MS
from tests.integration.cluster_kit import settings_for, stored_candles

pytestmark = pytest.mark.integration


async def test_a_restarted_replay_recovers_on_the_newest_stored_close(shared_data: Path, pg_dsn: str) -> None:
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=("BTCUSDT", "ETHUSDT"), speed=240.0,
                                  updates_per_candle=1, max_minutes=10, start_paused=True))
    await emu.start()
    settings = settings_for(emu, pg_dsn, shards=1).model_copy(  # no keys: the paper account, on market time
        update={"mode": "replay", "binance_api_key": None, "binance_api_secret": None})
    try:
        first = Service(settings)
        try:
            await first.start()
            assert first.cluster is not None
            await first.cluster.wait_subscribed()
            emu.resume()
            await asyncio.wait_for(first.cluster.wait_until(emu.start_ms + 3 * MINUTE_MS), 60)
            emu.pause()
            await first.cluster.wait_persisted()
        finally:
            await first.stop()
        newest = max(c.open_time for candles in (await stored_candles(pg_dsn)).values() for c in candles)

        second = Service(settings)  # the replay stays paused: no live candle moves the clock before the recovery
        try:
            await second.start()
            assert second.trading is not None
            assert second.trading.clock() == newest + MINUTE_MS
            assert second.trading.executor.clock() // DAY_MS == newest // DAY_MS  # the recovery's day: the market's
        finally:
            await second.stop()
    finally:
        await emu.stop()
