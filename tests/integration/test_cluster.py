"""The data plane end to end: emulator on loopback → 4 shards → PostgreSQL, clean and under faults."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shards.app import Service
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from tests.integration.cluster_kit import assert_exact, settings_for, stored_candles

pytestmark = pytest.mark.integration
MINUTES = 6


def _emulator(data: Path, *, minutes: int, speed: float = 120.0) -> Emulator:
    return Emulator(EmulatorConfig(data_dir=data, speed=speed, updates_per_candle=2, map_to_exchange_info=True,
                                   max_minutes=minutes, start_paused=True))


async def _run_to_end(service: Service, emu: Emulator, minutes: int) -> None:
    assert service.cluster is not None
    await emu.wait_minutes(minutes)
    await service.cluster.wait_until(emu.start_ms + (minutes - 1) * 60_000)
    await service.cluster.wait_persisted()


async def test_300_symbols_over_4_shards_store_every_candle(shared_data: Path, pg_dsn: str) -> None:
    """After N replayed minutes each of 300+ symbols has exactly N candles in PostgreSQL, equal to the source."""
    emu = _emulator(shared_data, minutes=MINUTES)
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=4))
    try:
        await service.start()
        assert service.cluster is not None and service.universe is not None
        symbols = service.universe.symbols
        assert len(symbols) >= 300
        assert len(service.cluster.feeds) == 4
        await service.cluster.wait_subscribed()
        emu.resume()
        await asyncio.wait_for(_run_to_end(service, emu, MINUTES), 60)
        assert_exact(emu, await stored_candles(pg_dsn), symbols, MINUTES)
        m = service.cluster.metrics
        assert sum(x.queue_drops for x in m) == 0
        assert sum(x.gaps_detected for x in m) == 0
    finally:
        await service.stop()
        await emu.stop()


FAULTS_AT = {
    2: lambda f: f.drop_all(),
    3: lambda f: f.malformed(40),
    5: lambda f: (f.http_error(429, 3), f.drop_all()),
    6: lambda f: f.stall(True),
    11: lambda f: (f.stall(False), f.close_all(1001)),
    12: lambda f: f.close_all(1008),
}


async def _inject_faults(emu: Emulator) -> None:
    for minute in sorted(FAULTS_AT):
        await emu.wait_minutes(minute)
        FAULTS_AT[minute](emu.faults)


async def test_faults_lose_nothing_and_duplicate_nothing(shared_data: Path, pg_dsn: str) -> None:
    """Drops, a stall, malformed frames, a 429 burst and policy closes still leave exactly N candles, no 418."""
    minutes = 18
    emu = _emulator(shared_data, minutes=minutes)
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=4))
    try:
        await service.start()
        assert service.cluster is not None and service.universe is not None and service.governor is not None
        await service.cluster.wait_subscribed()
        emu.resume()
        await asyncio.wait_for(_inject_faults(emu), 60)
        await asyncio.wait_for(_run_to_end(service, emu, minutes), 90)
        assert_exact(emu, await stored_candles(pg_dsn), service.universe.symbols, minutes)
        m = service.cluster.metrics
        assert sum(x.reconnects for x in m) >= 4 * 4
        assert sum(x.stalls for x in m) >= 1
        assert sum(x.rejected["malformed"] + x.rejected["bad_price"] + x.rejected["high_below_low"]
                   for x in m) >= 1
        assert sum(x.gaps_detected for x in m) > 0 and sum(x.candles_backfilled for x in m) > 0
        assert sum(x.gaps_unfilled for x in m) == 0
        assert emu.faults.counters["http_429"] == 3
        assert service.governor.banned_418 == 0 and emu.faults.counters["http_418"] == 0
    finally:
        await service.stop()
        await emu.stop()
