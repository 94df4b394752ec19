"""The single-process service's heartbeat line after a delisting: its per-shard ``lag_s`` follows the shard's
current symbols, as ``/metrics`` and ``/health`` do. Real emulator, real PostgreSQL, the service's own universe
refresh."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shards.app import Service
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.store.migrations import apply_migrations
from tests.integration.cluster_kit import settings_for

pytestmark = pytest.mark.integration
NINE_DAYS_S = 9 * 86_400.0


async def test_a_delisted_symbol_no_longer_counts_for_the_heartbeat_lag(shared_data: Path, pg_dsn: str) -> None:
    """One shard of three symbols gets a minute of candles; DOGEUSDT is then delisted (SETTLING) and the refresh
    retires it. Its last candle, nine days old by now, used to be the heartbeat's lag for ever (777,600 s and
    growing), while ``/metrics`` already read the current symbols only."""
    await apply_migrations(pg_dsn)
    symbols = ("BTCUSDT", "ETHUSDT", "DOGEUSDT")
    async with Emulator(EmulatorConfig(data_dir=shared_data, symbols=symbols, speed=240.0, updates_per_candle=1,
                                       max_minutes=30, start_paused=True)) as emu:
        service = Service(settings_for(emu, pg_dsn, shards=1))
        try:
            await service.start()
            cluster, ops = service.cluster, service.ops
            assert cluster is not None and ops is not None
            await cluster.wait_subscribed()
            emu.resume()
            await cluster.wait_until(emu.start_ms)
            emu.pause()
            [m] = cluster.metrics
            assert set(m.last_final_mono) == set(symbols)

            emu.market.settle_delisting("DOGEUSDT")
            change = await service.refresh_universe()
            assert change is not None and change.removed == ("DOGEUSDT",)
            assert m.symbols == ("BTCUSDT", "ETHUSDT")
            m.last_final_mono["DOGEUSDT"] = time.monotonic() - NINE_DAYS_S  # its last candle, nine days on

            lag = service.report()["shards"]["0"]["lag_s"]
            assert 0.0 <= lag < 60.0, lag  # the current symbols' candles came a moment ago
            assert m.lag_s(time.monotonic()) < 60.0  # the same rule /metrics reads
            ok, _ = ops.health()
            assert ok
        finally:
            await service.stop()
