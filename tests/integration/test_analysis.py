"""The SMC engine wired into the shards: live feature rows per minute equal the batch path, across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from shards.analysis import FeatureBatch
from shards.app import Service
from smc_quant.datasets import KlineSeries
from smc_quant.domain.candles import Candle
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer
from tests.integration.cluster_kit import settings_for

pytestmark = pytest.mark.integration
MINUTES = 150
CHECKED = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "1000PEPEUSDT", "WIFUSDC")


def _series(symbol: str, candles: list[Candle]) -> KlineSeries:
    col = lambda name: np.array([getattr(c, name) for c in candles], dtype=np.float64)  # noqa: E731
    return KlineSeries(symbol, np.array([c.open_time for c in candles], dtype=np.int64), col("open"),
                       col("high"), col("low"), col("close"), col("volume"))


def _collect(service: Service, into: dict[tuple[str, int], np.ndarray]) -> None:
    assert service.cluster is not None

    def keep(batch: FeatureBatch) -> None:
        assert batch.features.shape == (len(batch.symbols), len(FEATURE_SCHEMA))
        assert int(batch.open_times.max()) == batch.open_time
        for i, symbol in enumerate(batch.symbols):
            into[(symbol, int(batch.open_times[i]))] = batch.features[i].copy()

    for analyzer in service.cluster.analyzers:
        analyzer.subscribe(keep)


async def test_live_rows_equal_batch_rows_across_restart(shared_data: Path, pg_dsn: str) -> None:
    """Each minute's live rows (warm-started after a restart from PostgreSQL) equal FeatureEngineer.batch."""
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=600.0, updates_per_candle=0, map_to_exchange_info=True,
                                  max_minutes=MINUTES, start_paused=True))
    await emu.start()
    live: dict[tuple[str, int], np.ndarray] = {}
    first = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        await first.start()
        _collect(first, live)
        assert first.cluster is not None
        await first.cluster.wait_subscribed()
        emu.resume()
        await asyncio.wait_for(first.cluster.wait_until(emu.start_ms + 89 * 60_000), 60)
        emu.pause()
    finally:
        await first.stop()
    second = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        await second.start()
        assert second.cluster is not None
        assert sum(a.stats.warm_candles for a in second.cluster.analyzers) >= 90 * len(emu.symbols) // 2
        _collect(second, live)
        await second.cluster.wait_subscribed()
        emu.resume()
        await asyncio.wait_for(second.cluster.wait_until(emu.start_ms + (MINUTES - 1) * 60_000), 60)
        assert second.trading is not None and second.scorer is not None
        seen = second.trading.scalper.stats  # no model: every batch still reaches the strategy, which counts
        assert seen.batches == seen.unscored_batches == second.scorer.batches_unscored > 0  # its setups
    finally:
        await second.stop()
        await emu.stop()
    engineer = FeatureEngineer()
    for symbol in CHECKED:
        candles = emu.candles(symbol)[:MINUTES]
        expected, _ = engineer.batch(_series(symbol, candles))
        minutes = [c.open_time for c in candles]
        got = [t for t in minutes if (symbol, t) in live]
        assert len(got) >= MINUTES - 5, (symbol, len(got))
        for t in got:
            np.testing.assert_array_equal(live[(symbol, t)], expected[minutes.index(t)], err_msg=f"{symbol} {t}")
        assert not np.isnan(expected[-1]).all()
