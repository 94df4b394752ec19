"""Repaint tests: no reading is ever rewritten, and a prefix run equals the full run cut at its end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, read_klines
from smc_quant.features import N_FEATURES, FeatureEngineer
from smc_quant.smc import SymbolEngine, detect, timeframes
from smc_quant.smc.events import E_CONFIRMED, E_FORMED, E_KNOWN, E_TF

F64 = npt.NDArray[np.float64]
SYMBOLS = ("BTCUSDT", "DOGEUSDT", "XMRUSDT")


@pytest.fixture(scope="module")
def series(shared_data: Path) -> dict[str, KlineSeries]:
    """Three real 1m series of different price scales."""
    return {s: read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz") for s in SYMBOLS}


def test_bar_by_bar_readings_are_never_rewritten(series: dict[str, KlineSeries]) -> None:
    """Replaying BTCUSDT, everything published up to bar t equals a fresh batch run on candles[:t]."""
    s = series["BTCUSDT"]
    fe = FeatureEngineer()
    eng = SymbolEngine(fe.params)
    live_x = np.empty((len(s), N_FEATURES))
    live_ev: list[F64] = []
    checkpoints = set(np.linspace(50, len(s), 25).astype(int).tolist())
    rewrites = 0
    for i in range(len(s)):
        live_ev.append(eng.update(int(s.open_time[i]), s.open[i], s.high[i], s.low[i], s.close[i],
                                  s.volume[i]))
        live_x[i] = fe.row(eng.state)
        if i + 1 in checkpoints:
            px, pev = fe.batch(s.slice(0, i + 1))
            published = np.concatenate(live_ev)
            rewrites += int((~((px == live_x[:i + 1]) | (np.isnan(px) & np.isnan(live_x[:i + 1])))).sum())
            rewrites += 0 if np.array_equal(pev, published) else 1
    assert len(checkpoints) == 25
    assert rewrites == 0


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_batch_on_prefix_equals_full_run_known_by_then(series: dict[str, KlineSeries], symbol: str) -> None:
    """For 20 prefixes, detections on candles[:t] are exactly the full run's events known at bar < t."""
    s = series[symbol]
    full = detect(s)
    for t in np.linspace(100, len(s) - 1, 20).astype(int):
        part = detect(s.slice(0, int(t)))
        np.testing.assert_array_equal(part, full[full[:, E_KNOWN] < t])


def test_no_event_is_known_before_it_is_confirmed(series: dict[str, KlineSeries]) -> None:
    """Every event forms no later than it is confirmed, and a higher-timeframe event is known only
    at the base bar that completed its higher-timeframe bar."""
    s = series["DOGEUSDT"]
    ev = detect(s)
    assert (ev[:, E_FORMED] <= ev[:, E_CONFIRMED]).all()
    base = ev[ev[:, E_TF] == 0]
    np.testing.assert_array_equal(base[:, E_KNOWN], base[:, E_CONFIRMED])
    for k in range(1, 4):
        bars = timeframes.aggregate(s.open_time, s.open, s.high, s.low, s.close, s.volume,
                                    int(timeframes.TF_MS[k]))
        htf = ev[ev[:, E_TF] == k]
        assert htf.shape[0] > 50
        np.testing.assert_array_equal(htf[:, E_KNOWN], bars.known_at[htf[:, E_CONFIRMED].astype(int)])
        closes = s.open_time[htf[:, E_KNOWN].astype(int)] + 60_000
        ends = bars.open_time[htf[:, E_CONFIRMED].astype(int)] + timeframes.TF_MS[k]
        assert (closes >= ends).all()
