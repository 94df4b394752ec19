"""Multi-timeframe aggregation: UTC buckets, completed bars only, batch equal to incremental."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, read_klines
from smc_quant.domain.candle_store import BarAggregator
from smc_quant.features import FeatureEngineer
from smc_quant.smc import SMCParams, bars, detect, timeframes
from smc_quant.smc.events import E_BOTTOM, E_CONFIRMED, E_DIR, E_FORMED, E_KIND, E_TF, E_TOP
from smc_quant.smc.kernel import OFF_RING, TF_SIZE, new_state
from tests.builders import candles_of

GAPPY = ("klines/with-gaps/XRPETH_1m_binance-spot_2019-10.csv",
         "klines/with-gaps/ADABTC_1m_bittrex_2018-01.csv.gz")


def _agg(s: KlineSeries, tf: int, stream: bool) -> timeframes.Bars:
    fn = timeframes.aggregate_stream if stream else timeframes.aggregate
    return fn(s.open_time, s.open, s.high, s.low, s.close, s.volume, tf)


def _assert_bars_equal(a: timeframes.Bars, b: timeframes.Bars) -> None:
    for name in ("open_time", "open", "high", "low", "close", "volume", "known_at"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("path", [f"{KLINES_2023_1M}/BTCUSDT.csv.gz", *GAPPY])
def test_vectorised_aggregation_equals_incremental_steps(shared_data: Path, path: str) -> None:
    """On real candles (two files with real gaps), both aggregation paths give the same bars."""
    s = read_klines(shared_data / path)
    for tf in timeframes.TF_MS[1:]:
        batch, stream = _agg(s, int(tf), False), _agg(s, int(tf), True)
        assert batch.open_time.shape[0] > (10 if tf <= 3_600_000 else 0)
        _assert_bars_equal(batch, stream)
        assert (np.diff(batch.open_time) > 0).all()
        assert (batch.open_time % tf == 0).all()


def test_gap_closes_a_bucket_only_when_a_later_bucket_arrives(shared_data: Path) -> None:
    """A bucket whose last minute is missing is known at the next candle, never earlier."""
    s = read_klines(shared_data / GAPPY[0])
    bars = _agg(s, 3_600_000, False)
    known_close = s.open_time[bars.known_at] + 60_000
    bar_end = bars.open_time + 3_600_000
    early = known_close < bar_end
    assert not early.any()
    assert (known_close > bar_end).sum() > 0


@pytest.mark.parametrize(("folder", "tf"), [("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000)])
def test_aggregated_1m_equals_the_exchange_higher_timeframe_candles(shared_data: Path, folder: str,
                                                                    tf: int) -> None:
    """Aggregating real 1m BTCUSDT gives the exchange's own 5m/15m/1h OHLC where they overlap."""
    paths = sorted((shared_data / "klines/binance-usdm-2023" / folder).glob("BTCUSDT.csv*"))
    if not paths:
        pytest.skip(f"no {folder} BTCUSDT file")
    real = read_klines(paths[0])
    ours = _agg(read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz"), tf, False)
    common, i, j = np.intersect1d(ours.open_time[1:], real.open_time, return_indices=True)
    assert common.shape[0] > 100
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(ours, name)[1:][i], getattr(real, name)[j], err_msg=name)
    same_volume = np.isclose(ours.volume[1:][i], real.volume[j], rtol=1e-9, atol=0)
    assert same_volume.mean() > 0.99  # the two captures differ on a handful of bars' volume


def test_engine_higher_timeframe_events_equal_detection_on_aggregated_bars(shared_data: Path) -> None:
    """The engine's 15m events are exactly the base detectors run on the completed 15m bars."""
    s = read_klines(shared_data / KLINES_2023_1M / "ETHUSDT.csv.gz")
    bars = _agg(s, 900_000, False)
    htf = KlineSeries("ETHUSDT", bars.open_time, bars.open, bars.high, bars.low, bars.close, bars.volume)
    want = detect(htf, SMCParams(n_timeframes=1, base_ms=900_000))
    got = detect(s, SMCParams(n_timeframes=3))
    got = got[got[:, E_TF] == 2]
    cols = [E_KIND, E_DIR, E_FORMED, E_CONFIRMED, E_TOP, E_BOTTOM]
    assert want.shape[0] > 500
    np.testing.assert_array_equal(got[:, cols], want[:, cols])


def test_a_partial_bucket_is_never_a_bar(shared_data: Path) -> None:
    """A run that starts mid-bucket (a warm start from the store's ring) or re-enters after a gap over a bucket's
    start sees only part of that bucket: neither aggregation path nor the engine makes a bar of it, exactly as the
    candle store's BarAggregator, and every bar that is made is the same in all of them."""
    full = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz").slice(0, 6000)
    hours = np.flatnonzero(full.open_time % 3_600_000 == 0)
    first, later = int(hours[0]) + 13, int(hours[30])
    assert (np.diff(full.open_time) == 60_000).all()
    keep = np.zeros(len(full), dtype=bool)
    keep[first:] = True  # starts 13 minutes into an hour
    keep[later - 10:later + 7] = False  # missing from 10 minutes before an hour to 7 minutes into it
    s = KlineSeries("BTCUSDT", *(a[keep] for a in (full.open_time, full.open, full.high, full.low, full.close,
                                                    full.volume)))
    engine = new_state()
    FeatureEngineer().batch(s, state=engine)
    for k, (name, tf) in enumerate((("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000)), start=1):
        batch, stream = _agg(s, tf, False), _agg(s, tf, True)
        _assert_bars_equal(batch, stream)
        agg, made = BarAggregator("BTCUSDT", name), []
        for candle in candles_of(s):
            agg.add(candle, made)
        assert batch.open_time.tolist() == [bar.open_time for bar in made]
        for field in ("open", "high", "low", "close"):
            assert getattr(batch, field).tolist() == [getattr(bar, field) for bar in made], field
        assert batch.open_time[0] == full.open_time[first] - full.open_time[first] % tf + tf  # first whole bucket
        assert bars.count(engine, k * TF_SIZE + OFF_RING) == len(made)
    hour = _agg(s, 3_600_000, False)
    assert int(full.open_time[later]) not in hour.open_time.tolist()  # entered 7 minutes late: no bar
    assert int(full.open_time[later]) - 3_600_000 in hour.open_time.tolist()  # its last minutes missing: a bar
