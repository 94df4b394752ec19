"""The per-shard minute analyzer: one batch per complete minute, counted rejection of impossible candles."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import numpy as np
from structlog.testing import capture_logs

from shards.analysis import FeatureBatch, MinuteAnalyzer
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.features import FEATURE_SCHEMA
from tests.builders import candles_of


def test_one_batch_per_complete_minute_and_an_impossible_candle_costs_only_its_own_row(shared_data: Path) -> None:
    """Two symbols closing a minute give one batch; an impossible candle is dropped, counted and logged, not raised,
    and the other symbol's row of that minute still comes out (the same row as without the bad neighbour)."""
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
    with capture_logs() as logs:
        analyzer.on_candle(bad, [])
        analyzer.on_candle(eth[1], [])
    assert len(seen) == 2 and analyzer.stats.rejected_candles == 1
    assert seen[1].symbols == ("ETHUSDT",) and seen[1].open_time == eth[1].open_time
    [said] = [e for e in logs if e["event"] == "analysis_candles_rejected"]
    assert (said["log_level"], said["symbols"], said["open_times"]) == ("error", ["BTCUSDT"], [btc[1].open_time])
    alone = MinuteAnalyzer(1, ["ETHUSDT"])
    mine: list[FeatureBatch] = []
    alone.subscribe(mine.append)
    for candle in eth[:2]:
        alone.on_candle(candle, [])
    np.testing.assert_array_equal(seen[1].features[0], mine[1].features[0])
    analyzer.on_candle(btc[2], [])
    analyzer.on_candle(eth[2], [])
    assert len(seen) == 3 and seen[2].open_time == eth[2].open_time and seen[2].symbols == ("BTCUSDT", "ETHUSDT")


def test_a_failing_sink_is_logged_and_counted_and_the_others_still_get_the_batch(shared_data: Path) -> None:
    """The first subscriber raises on every batch: each failure is an error line naming it, counted, and the
    next subscriber still receives every minute's batch."""
    btc = candles_of(read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz"), 0, 2)
    analyzer = MinuteAnalyzer(0, ["BTCUSDT"])

    def broken(batch: FeatureBatch) -> None:
        raise KeyError(batch.symbols[0])

    seen: list[FeatureBatch] = []
    analyzer.subscribe(broken)
    analyzer.subscribe(seen.append)
    with capture_logs() as logs:
        for candle in btc:
            analyzer.on_candle(candle, [])
    assert [b.open_time for b in seen] == [c.open_time for c in btc]
    assert analyzer.stats.sink_errors == 2
    failed = [e for e in logs if e["event"] == "batch_sink_failed"]
    assert [(e["log_level"], e["error"]) for e in failed] == [("error", "KeyError: 'BTCUSDT'")] * 2
    assert failed[0]["sink"].endswith("broken")


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


def test_each_row_carries_its_break_candles_open_time(shared_data: Path) -> None:
    """FeatureBatch.break_times (the setup identity the strategy keys on) is the open time of each row's latest 1m
    break candle, also across a missing candle; NaN before the first break."""
    s = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz").slice(0, 600)
    candles = [c for i, c in enumerate(candles_of(s)) if i != 300]
    times = np.array([c.open_time for c in candles])
    analyzer = MinuteAnalyzer(0, ["BTCUSDT"])
    seen: list[FeatureBatch] = []
    analyzer.subscribe(seen.append)
    for candle in candles:
        analyzer.on_candle(candle, [])
    assert len(seen) == len(candles)
    names = FEATURE_SCHEMA.names
    b = np.array([np.fmin(x.features[0, names.index("bars_since_bos")], x.features[0, names.index("bars_since_choch")])
                  for x in seen])
    got = np.array([x.break_times[0] for x in seen if x.break_times is not None])
    t = np.flatnonzero(~np.isnan(b))
    assert len(t) > 400 and np.isnan(got[np.isnan(b)]).all()
    np.testing.assert_array_equal(got[t], times[t - b[t].astype(np.int64)])


async def test_a_candle_late_for_its_minute_is_analysed_within_the_grace(shared_data: Path) -> None:
    """BTC, ETH and SOL close a minute; at the next one only BTC does: the grace flush sends BTC's row. ETH's candle
    of that minute then comes late (a backfill) while SOL stays silent: it is analysed one grace later. It used to
    wait for the next minute's first close, a minute late — inside the executor's 120 s signal age, so a
    minute-old setup could still be entered."""
    names = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    series = {s: read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz") for s in names}
    t0 = max(int(v.open_time[0]) for v in series.values())
    bars = {s: candles_of(v, int(np.searchsorted(v.open_time, t0)), int(np.searchsorted(v.open_time, t0)) + 2)
            for s, v in series.items()}
    analyzer = MinuteAnalyzer(0, list(names), grace_s=0.05)
    seen: list[FeatureBatch] = []
    arrived = asyncio.Event()

    def got(batch: FeatureBatch) -> None:
        seen.append(batch)
        arrived.set()

    analyzer.subscribe(got)
    for s in names:
        analyzer.on_candle(bars[s][0], [])
    assert len(seen) == 1
    arrived.clear()
    analyzer.on_candle(bars["BTCUSDT"][1], [])
    await asyncio.wait_for(arrived.wait(), 5)  # the grace flush: BTC alone
    assert seen[-1].symbols == ("BTCUSDT",)
    arrived.clear()
    analyzer.on_candle(bars["ETHUSDT"][1], [])
    await asyncio.wait_for(arrived.wait(), 5)
    assert seen[-1].symbols == ("ETHUSDT",) and seen[-1].open_time == bars["ETHUSDT"][1].open_time
    assert analyzer.stats.late_flushes == 2
