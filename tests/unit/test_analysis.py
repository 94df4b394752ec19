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


def test_a_minute_waits_only_for_listed_symbols_and_takes_a_new_listing(shared_data: Path) -> None:
    """A symbol the exchange stopped listing no longer holds the minute (its stream is silent); a symbol added while
    running is waited for from then on, and its rows equal those of an analyzer that had it from the start."""
    series = {s: read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz") for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    first = max(int(s.open_time[0]) for s in series.values())
    bars = {sym: candles_of(s, int(np.searchsorted(s.open_time, first)), int(np.searchsorted(s.open_time, first)) + 6)
            for sym, s in series.items()}
    analyzer = MinuteAnalyzer(0, ["BTCUSDT", "ETHUSDT"])
    seen: list[FeatureBatch] = []
    analyzer.subscribe(seen.append)
    analyzer.on_candle(bars["BTCUSDT"][0], [])
    analyzer.on_candle(bars["ETHUSDT"][0], [])
    assert len(seen) == 1

    analyzer.follow(["BTCUSDT"])  # ETHUSDT settled: its minute is not awaited
    analyzer.on_candle(bars["BTCUSDT"][1], [])
    assert len(seen) == 2 and seen[1].symbols == ("BTCUSDT",)
    analyzer.follow(["BTCUSDT", "ETHUSDT"])  # listed again: awaited again
    analyzer.on_candle(bars["BTCUSDT"][2], [])
    assert len(seen) == 2
    analyzer.on_candle(bars["ETHUSDT"][2], [])  # (its gap would be backfilled by the feed first)
    assert len(seen) == 3

    assert analyzer.add(["SOLUSDT", "BTCUSDT"]) == ["SOLUSDT"]  # a new listing; a known symbol is not added twice
    reference = MinuteAnalyzer(1, ["SOLUSDT"])
    mine: list[FeatureBatch] = []
    reference.subscribe(mine.append)
    for k in range(3, 6):
        analyzer.on_candle(bars["BTCUSDT"][k], [])
        analyzer.on_candle(bars["ETHUSDT"][k], [])
        assert len(seen) == k  # SOLUSDT's candle is still to come
        analyzer.on_candle(bars["SOLUSDT"][k], [])
        reference.on_candle(bars["SOLUSDT"][k], [])
    assert [b.symbols for b in seen[3:]] == [("BTCUSDT", "ETHUSDT", "SOLUSDT")] * 3
    for got, want in zip(seen[3:], mine, strict=True):
        np.testing.assert_array_equal(got.features[2], want.features[0])  # the same engine state from bar one
