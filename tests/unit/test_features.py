"""FeatureEngineer: the declared schema, explicit warm-up, and each formula against numpy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, load_klines, read_klines
from smc_quant.features import FEATURE_SCHEMA, N_FEATURES, FeatureEngineer, warm_up
from smc_quant.smc import EngineBank, SymbolEngine, atr
from smc_quant.smc.events import (
    E_BOTTOM,
    E_CONFIRMED,
    E_DIR,
    E_FORMED,
    E_KIND,
    E_KNOWN,
    E_TF,
    E_TOP,
    K_BOS,
    K_CHOCH,
    K_FVG,
    K_FVG_EXPIRE,
    K_FVG_FILL,
    K_SWEEP,
    K_SWING,
)
from smc_quant.smc.params import SMCParams

F64 = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def sol(shared_data: Path) -> KlineSeries:
    """Real SOLUSDT 1m candles."""
    return read_klines(shared_data / KLINES_2023_1M / "SOLUSDT.csv.gz")


@pytest.fixture(scope="module")
def batch(sol: KlineSeries) -> tuple[F64, F64]:
    """(features, events) of SOLUSDT by the batch path."""
    return FeatureEngineer().batch(sol)


def _col(name: str) -> int:
    return FEATURE_SCHEMA.names.index(name)


SCHEMA_DIGESTS = {"smc-features/1": "54650cce245eb6f3"}
"""Per schema version: the digest of its columns (name:dtype, in order) and of the default SMC parameters."""


def test_a_change_of_the_columns_or_parameters_comes_with_a_new_schema_version() -> None:
    """Stored experience rows are bare vectors read by position, accepted on their schema version alone: a column
    renamed, moved or added, or a detector parameter changed, under the same version would train the next
    models on misaligned or differently computed rows (models are checked by name at load; rows cannot be).
    Changed on purpose: bump ``FEATURE_SCHEMA.version`` and add its digest here."""
    text = "\n".join(f"{f.name}:{f.dtype}" for f in FEATURE_SCHEMA.features) + "\n" + repr(SMCParams())
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    assert SCHEMA_DIGESTS.get(FEATURE_SCHEMA.version) == digest, (
        f"the feature columns or SMC parameters changed under {FEATURE_SCHEMA.version!r} (digest {digest}): "
        "bump FEATURE_SCHEMA.version so stored experience rows of the old layout are refused")


def test_schema_is_declared_once_with_version_names_and_dtypes(batch: tuple[F64, F64]) -> None:
    """The schema names at least 12 unique float64 features, versioned, matching the matrix width."""
    assert FEATURE_SCHEMA.version.startswith("smc-features/")
    assert len(FEATURE_SCHEMA) == N_FEATURES >= 12
    assert len(set(FEATURE_SCHEMA.names)) == N_FEATURES
    assert {f.dtype for f in FEATURE_SCHEMA.features} == {"float64"}
    assert all(len(f.formula) > 10 for f in FEATURE_SCHEMA.features)
    assert batch[0].shape[1] == N_FEATURES
    assert batch[0].dtype == np.float64


def test_warm_up_is_nan_not_zero(batch: tuple[F64, F64]) -> None:
    """Before their inputs exist the features are NaN, and they become finite once they do."""
    x = batch[0]
    assert np.isnan(x[0]).all()
    for name, first in (("ret_1", 1), ("ret_5", 5), ("ret_15", 15), ("atr_pct", 13), ("volume_z", 63),
                        ("range_pos", 63)):
        col = x[:, _col(name)]
        assert np.isnan(col[:first]).all(), name
        assert np.isfinite(col[first:first + 1000]).mean() > 0.99, name
    assert (np.isnan(x).mean(axis=0) < 0.2).all()


def test_returns_range_volume_and_atr_formulas(sol: KlineSeries, batch: tuple[F64, F64]) -> None:
    """ret_k, range_pos, volume_z and atr_pct equal their formulas computed with numpy."""
    x, c = batch[0], sol.close
    for k in (1, 5, 15):
        np.testing.assert_allclose(x[k:, _col(f"ret_{k}")], np.log(c[k:] / c[:-k]), rtol=1e-12)
    hi = sliding_window_view(sol.high, 64).max(axis=1)
    lo = sliding_window_view(sol.low, 64).min(axis=1)
    np.testing.assert_allclose(x[63:, _col("range_pos")], (c[63:] - lo) / (hi - lo), rtol=1e-12)
    w = sliding_window_view(sol.volume, 64)
    z = (sol.volume[63:] - w.mean(axis=1)) / w.std(axis=1)
    np.testing.assert_allclose(x[63:, _col("volume_z")], z, rtol=1e-9)
    a = atr.batch(sol.high, sol.low, c, 14)
    np.testing.assert_allclose(x[:, _col("atr_pct")], 100 * a / c, rtol=1e-12)


def _last_at(n: int, bars: F64) -> F64:
    """For every bar t, the latest value of ``bars`` that is ≤ t (NaN before the first)."""
    out = np.full(n, np.nan)
    out[bars.astype(int)] = bars
    idx = np.maximum.accumulate(np.where(np.isnan(out), -1, np.arange(n)))
    return np.where(idx >= 0, out[np.maximum(idx, 0)], np.nan)


def test_event_based_features_follow_the_events(sol: KlineSeries, batch: tuple[F64, F64]) -> None:
    """trend, bars-since-BOS/CHoCH/sweep and swing position are read off the 1m events."""
    x, ev = batch
    ev = ev[ev[:, E_TF] == 0]
    n, t = len(sol), np.arange(len(sol))
    brk = ev[np.isin(ev[:, E_KIND], [K_BOS, K_CHOCH])]
    trend = np.full(n, np.nan)
    trend[brk[:, E_CONFIRMED].astype(int)] = brk[:, E_DIR]
    last = _last_at(n, brk[:, E_CONFIRMED])
    np.testing.assert_array_equal(x[:, _col("trend_1m")], np.where(np.isnan(last), np.nan,
                                                                     trend[np.nan_to_num(last).astype(int)]))
    for name, kind, side in (("bars_since_bos", K_BOS, None), ("bars_since_choch", K_CHOCH, None),
                             ("bars_since_sweep_high", K_SWEEP, 1), ("bars_since_sweep_low", K_SWEEP, -1)):
        sel = ev[(ev[:, E_KIND] == kind) & ((ev[:, E_DIR] == side) if side else True)]
        np.testing.assert_array_equal(x[:, _col(name)], t - _last_at(n, sel[:, E_CONFIRMED]), err_msg=name)
    sw = ev[ev[:, E_KIND] == K_SWING]
    levels = {}
    for sgn in (1, -1):
        s = sw[sw[:, E_DIR] == sgn]
        lvl = np.full(n, np.nan)
        lvl[s[:, E_CONFIRMED].astype(int)] = s[:, E_TOP]
        idx = _last_at(n, s[:, E_CONFIRMED])
        levels[sgn] = np.where(np.isnan(idx), np.nan, lvl[np.nan_to_num(idx).astype(int)])
    den = levels[1] - levels[-1]
    want = (sol.close - levels[-1]) / np.where(den == 0, np.nan, den)
    np.testing.assert_allclose(x[:, _col("swing_pos")], want, rtol=1e-12)


def test_zone_distances_are_signed_and_zero_inside(batch: tuple[F64, F64]) -> None:
    """Distances to bullish zones are mostly ≥ 0 (support below), bearish ≤ 0, and 0 occurs inside."""
    x = batch[0]
    for name, sign in (("bull_fvg_dist_atr", 1), ("bear_fvg_dist_atr", -1), ("bull_ob_dist_atr", 1),
                       ("bear_ob_dist_atr", -1)):
        col = x[:, _col(name)]
        col = col[np.isfinite(col)]
        assert col.shape[0] > len(x) // 2, name
        assert (sign * col >= 0).mean() > 0.9, name


def test_three_hundred_symbols_minute_close_rows_equal_single_engines(shared_data: Path) -> None:
    """One on_close call for 300 symbols gives each symbol the row its own engine would give."""
    real = list(load_klines(root=shared_data).values())
    series = [real[i % len(real)].slice(i, i + 400) for i in range(300)]
    fe = FeatureEngineer()
    bank = EngineBank([f"S{i}" for i in range(300)], fe.params)
    singles = [SymbolEngine(fe.params) for _ in range(300)]
    rows = np.arange(300, dtype=np.int64)
    for m in range(400):
        col = np.array([[s.open_time[m], s.open[m], s.high[m], s.low[m], s.close[m], s.volume[m]]
                        for s in series])
        _, x = fe.on_close(bank, rows, col[:, 0].astype(np.int64), col[:, 1], col[:, 2], col[:, 3],
                           col[:, 4], col[:, 5])
        for e, c in zip(singles, col, strict=True):
            e.update(int(c[0]), c[1], c[2], c[3], c[4], c[5])
    want = np.array([fe.row(e.state) for e in singles])
    assert x.shape == (300, N_FEATURES)
    np.testing.assert_array_equal(x, want)
    assert np.isfinite(x).mean() > 0.6  # 400 bars: 1h trend and some sweeps still warming up


def test_fvg_distance_equals_brute_force_over_active_gaps(sol: KlineSeries, batch: tuple[F64, F64]) -> None:
    """The FVG distance features equal a brute-force search over the gaps active at that bar."""
    x, ev = batch
    ev = ev[ev[:, E_TF] == 0]
    a = atr.batch(sol.high, sol.low, sol.close, 14)
    ends = {(int(e[E_DIR]), int(e[E_FORMED])): int(e[E_CONFIRMED])
            for e in ev[np.isin(ev[:, E_KIND], [K_FVG_FILL, K_FVG_EXPIRE])]}
    for sgn, name in ((1, "bull_fvg_dist_atr"), (-1, "bear_fvg_dist_atr")):
        gaps = ev[(ev[:, E_KIND] == K_FVG) & (ev[:, E_DIR] == sgn)]
        start = gaps[:, E_CONFIRMED].astype(int)
        stop = np.array([ends.get((sgn, int(f)), len(sol)) for f in gaps[:, E_FORMED]])
        for t in range(100, len(sol), 97):
            live = gaps[(start <= t) & (stop > t)]
            c = sol.close[t]
            d = np.where(c > live[:, E_TOP], c - live[:, E_TOP],
                         np.where(c < live[:, E_BOTTOM], c - live[:, E_BOTTOM], 0.0))
            want = d[np.argmin(np.abs(d))] / a[t] if d.shape[0] else np.nan
            np.testing.assert_array_equal(x[t, _col(name)], want, err_msg=f"{name} at {t}")


def test_warm_up_compiles_without_touching_later_engines(sol: KlineSeries, batch: tuple[F64, F64]) -> None:
    """warm_up runs every kernel once and leaves fresh engines and batches unchanged."""
    warm_up()
    x, ev = FeatureEngineer().batch(sol.slice(0, 500))
    np.testing.assert_array_equal(x, batch[0][:500])
    np.testing.assert_array_equal(ev, batch[1][batch[1][:, E_KNOWN] < 500])


def test_break_times_are_the_break_candles_open_times_across_missing_candles(sol: KlineSeries) -> None:
    """Fed live with candles missing, each row's break time is the open time of the candle that
    ``min(bars_since_bos, bars_since_choch)`` counts from — not ``open_time − bars × 1 min``, which gaps shift."""
    s = sol.slice(0, 4000)
    keep = np.ones(len(s), dtype=bool)
    keep[[700, 1500, 1501, 1502, 2600]] = False
    gap = KlineSeries(s.symbol, s.open_time[keep], s.open[keep], s.high[keep], s.low[keep], s.close[keep],
                      s.volume[keep])
    fe = FeatureEngineer()
    bank = EngineBank([s.symbol], fe.params)
    one = np.zeros(1, dtype=np.int64)
    x = np.empty((len(gap), N_FEATURES))
    brk = np.empty(len(gap))
    for i in range(len(gap)):
        cut = slice(i, i + 1)
        _, x[cut] = fe.on_close(bank, one, gap.open_time[cut], gap.open[cut], gap.high[cut], gap.low[cut],
                                gap.close[cut], gap.volume[cut])
        brk[i] = fe.break_times(bank.states, one)[0]
    b = np.fmin(x[:, _col("bars_since_bos")], x[:, _col("bars_since_choch")])
    known = ~np.isnan(b)
    assert known.mean() > 0.9 and np.array_equal(np.isnan(brk), ~known)
    t = np.flatnonzero(known)
    np.testing.assert_array_equal(brk[t], gap.open_time[t - b[t].astype(np.int64)])
    shifted = gap.open_time[t] - b[t].astype(np.int64) * 60_000 != brk[t]
    assert shifted.sum() > 10  # rows whose break lies before a gap: the minute arithmetic would be wrong there
    np.testing.assert_array_equal(x, fe.batch(gap)[0])
