"""Ring buffers and local higher-timeframe aggregation, checked against real Binance bars."""

from __future__ import annotations

import numpy as np

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.candle_store import CandleStore, Ring
from tests.builders import candles_of


def test_ring_keeps_latest_in_order(shared_data) -> None:  # type: ignore[no-untyped-def]
    """A ring of 100 holds the last 100 candles, oldest first."""
    series = read_klines(shared_data / KLINES_2023_1M / "ETHUSDT.csv.gz")
    ring = Ring(100)
    for c in candles_of(series, 0, 250):
        ring.append(c)
    times, values = ring.arrays()
    assert len(ring) == 100
    np.testing.assert_array_equal(times, series.open_time[150:250])
    np.testing.assert_array_equal(values[:, 3], series.close[150:250])


def test_aggregated_5m_and_1h_equal_binance_bars(shared_data) -> None:  # type: ignore[no-untyped-def]
    """5m and 1h bars built from real 1m candles equal Binance's own 5m/1h candles (OHLC and volume)."""
    m1 = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz")
    store = CandleStore(["BTCUSDT"], capacity=10_000)
    for c in candles_of(m1, 0, 6000):
        store.add(c)
    for tf, folder in (("5m", "klines/binance-usdm-2023/5m/BTCUSDT.csv.gz"),
                       ("1h", "klines/binance-usdm-2023/1h/BTCUSDT.csv")):
        ref = read_klines(shared_data / folder)
        times, values = store.ring("BTCUSDT", tf).arrays()
        assert len(times) > 50
        idx = np.searchsorted(ref.open_time, times)
        assert (ref.open_time[idx] == times).all()
        np.testing.assert_allclose(values[:, 0], ref.open[idx])
        np.testing.assert_allclose(values[:, 1], ref.high[idx])
        np.testing.assert_allclose(values[:, 2], ref.low[idx])
        np.testing.assert_allclose(values[:, 3], ref.close[idx])
        np.testing.assert_allclose(values[:, 4], ref.volume[idx], rtol=1e-9)


def test_partial_first_bucket_is_not_emitted(shared_data) -> None:  # type: ignore[no-untyped-def]
    """Starting mid-bucket never produces a partial higher-timeframe bar."""
    m1 = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz")
    first = next(i for i in range(len(m1)) if m1.open_time[i] % 300_000 == 120_000)
    store = CandleStore(["BTCUSDT"], capacity=100)
    completed = [bar for c in candles_of(m1, first, first + 8) for bar in store.add(c)]
    assert [b.interval for b in completed] == ["5m"]
    assert completed[0].open_time == m1.open_time[first + 3]
