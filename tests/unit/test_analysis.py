"""The per-shard minute analyzer: one batch per complete minute, counted rejection of impossible candles."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from shards.analysis import FeatureBatch, MinuteAnalyzer
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.features import FEATURE_SCHEMA
from tests.builders import candles_of


def test_one_batch_per_complete_minute_and_bad_input_counted(shared_data: Path) -> None:
    """Two symbols closing a minute give one batch; an impossible candle is rejected and counted, not raised."""
    btc_series = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz")
    eth_series = read_klines(shared_data / KLINES_2023_1M / "ETHUSDT.csv.gz")
    start = int(np.searchsorted(eth_series.open_time, btc_series.open_time[0]))
    btc = candles_of(btc_series, 0, 3)
    eth = candles_of(eth_series, start, start + 3)
    assert [c.open_time for c in btc] == [c.open_time for c in eth]
    analyzer = MinuteAnalyzer(0, ["BTCUSDT", "ETHUSDT"])
    seen: list[FeatureBatch] = []
    analyzer.subscribe(seen.append)
    analyzer.on_candle(btc[0], [])
    assert seen == []
    analyzer.on_candle(eth[0], [])
    assert len(seen) == 1
    assert seen[0].symbols == ("BTCUSDT", "ETHUSDT")
    assert seen[0].features.shape == (2, len(FEATURE_SCHEMA))
    assert np.isnan(seen[0].features).any()  # warm-up is explicit
    bad = msgspec.structs.replace(btc[1], high=btc[1].low / 2)
    analyzer.on_candle(bad, [])
    analyzer.on_candle(eth[1], [])
    assert analyzer.stats.rejected_batches == 1 and len(seen) == 1
    analyzer.on_candle(btc[2], [])
    analyzer.on_candle(eth[2], [])
    assert len(seen) == 2 and seen[1].open_time == eth[2].open_time
