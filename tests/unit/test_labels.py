"""Triple-barrier labels: the barrier rules on hand-made candles, a reference check and no look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, read_klines
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer
from smc_quant.labels import (
    STOP,
    TAKE_PROFIT,
    TIME,
    BarrierSpec,
    candidates,
    label_setups,
    select_setups,
    strategy_exits,
    triple_barrier,
)
from smc_quant.strategy import ScalperConfig, find_setups

F64 = npt.NDArray[np.float64]
SPEC = BarrierSpec(stop_pct=1.0, target_pct=2.0, horizon=3, fee_pct=0.05)


def _series(bars: list[tuple[float, float, float, float]]) -> KlineSeries:
    """Candles from (open, high, low, close) rows, one minute apart."""
    o, h, low, c = (np.array(col, dtype=np.float64) for col in zip(*bars, strict=True))
    return KlineSeries("TEST", np.arange(len(bars), dtype=np.int64) * 60_000, o, h, low, c, np.ones(len(bars)))


def _one(bars: list[tuple[float, float, float, float]], side: int) -> tuple[int, float, int, int]:
    lab = triple_barrier(_series(bars), np.array([0]), np.array([side]), SPEC)
    return int(lab.outcome[0]), float(lab.ret_pct[0]), int(lab.exit[0]), int(lab.win[0])


@pytest.fixture(scope="module")
def real(shared_data: Path) -> tuple[KlineSeries, F64]:
    """30,000 real SOLUSDT 1m candles and their feature rows (enough for ≥ 10 strategy setups once the
    first hours, whose 1h trend is still unknown, can hold none)."""
    s = read_klines(shared_data / KLINES_2023_1M / "SOLUSDT.csv.gz").slice(0, 30_000)
    return s, FeatureEngineer().batch(s)[0]


def test_long_take_profit_first_nets_target_minus_two_fees() -> None:
    """A long whose high reaches +2% before any low reaches −1% wins with 2% − 2·0.05%."""
    outcome, ret, exit_, win = _one([(100, 100, 100, 100), (100, 101, 99.5, 100.5), (100.5, 102.5, 100, 102),
                                     (102, 102, 90, 91)], side=1)
    assert (outcome, exit_, win) == (TAKE_PROFIT, 2, 1)
    assert ret == pytest.approx(2.0 - 0.1)


def test_bar_touching_both_barriers_counts_as_stop() -> None:
    """When one candle spans both the stop and the target, the label is the stop (conservative)."""
    outcome, ret, exit_, win = _one([(100, 100, 100, 100), (100, 103, 98, 100), (100, 100, 100, 100),
                                     (100, 100, 100, 100)], side=1)
    assert (outcome, exit_, win) == (STOP, 1, 0)
    assert ret == pytest.approx(-1.0 - 0.1)


def test_gap_through_the_stop_fills_at_the_open() -> None:
    """A short whose next candle opens 3% above entry loses 3% (the gap), not the 1% stop distance."""
    outcome, ret, _, _ = _one([(100, 100, 100, 100), (103, 104, 102.5, 103.5), (100, 100, 100, 100),
                               (100, 100, 100, 100)], side=-1)
    assert outcome == STOP
    assert ret == pytest.approx(-3.0 - 0.1)


def test_time_barrier_exits_at_the_last_close() -> None:
    """With neither barrier hit, a short exits at the close of bar t + horizon."""
    outcome, ret, exit_, win = _one([(100, 100, 100, 100), (100, 100.5, 99.5, 99.8), (99.8, 100.2, 99.2, 99.5),
                                     (99.5, 99.9, 99.1, 99.4), (50, 50, 50, 50)], side=-1)
    assert (outcome, exit_, win) == (TIME, 3, 0)
    assert ret == pytest.approx(0.6 - 0.1)


def test_setups_without_a_full_window_are_dropped() -> None:
    """Setups whose horizon runs past the data get no label, and bad sides are refused."""
    s = _series([(100, 100, 100, 100)] * 5)
    lab = triple_barrier(s, np.array([0, 1, 2, 3]), np.array([1, -1, 1, 1]), SPEC)
    assert lab.index.tolist() == [0, 1]
    assert lab.end.tolist() == [3, 4]
    with pytest.raises(ValueError, match="side"):
        triple_barrier(s, np.array([0]), np.array([0]), SPEC)
    with pytest.raises(ValueError, match="invalid"):
        BarrierSpec(stop_pct=0)


def _reference(s: KlineSeries, t: int, side: int, spec: BarrierSpec) -> tuple[int, float, int]:
    """The labelling rules written out plainly, one setup at a time."""
    entry = s.close[t]
    tp = entry * (1 + side * spec.target_pct / 100)
    sl = entry * (1 - side * spec.stop_pct / 100)
    for i in range(t + 1, t + spec.horizon + 1):
        worst, best = (s.low[i], s.high[i]) if side > 0 else (s.high[i], s.low[i])
        if side * (worst - sl) <= 0:
            fill = s.open[i] if side * (s.open[i] - sl) < 0 else sl
            return STOP, side * (fill / entry - 1) * 100 - 2 * spec.fee_pct, i
        if side * (best - tp) >= 0:
            return TAKE_PROFIT, side * (tp / entry - 1) * 100 - 2 * spec.fee_pct, i
    j = t + spec.horizon
    return TIME, side * (s.close[j] / entry - 1) * 100 - 2 * spec.fee_pct, j


def test_kernel_matches_the_plain_rules_on_real_candles(real: tuple[KlineSeries, F64]) -> None:
    """On real SOLUSDT setups the numba labels equal a plain-Python reading of the rules."""
    s, x = real
    spec = BarrierSpec(stop_pct=0.3, target_pct=0.45)
    lab = label_setups(s, x, spec, every=7)
    assert len(lab) > 200
    assert set(np.unique(lab.outcome)) == {STOP, TIME, TAKE_PROFIT}
    for k in range(len(lab)):
        outcome, ret, exit_ = _reference(s, int(lab.index[k]), int(lab.side[k]), spec)
        assert (int(lab.outcome[k]), int(lab.exit[k])) == (outcome, exit_)
        assert lab.ret_pct[k] == pytest.approx(ret, abs=1e-9)


def test_candidates_are_complete_rows_with_side_from_trend(real: tuple[KlineSeries, F64]) -> None:
    """Candidates are complete feature rows on the sampling grid, long in an up-trend, short in a down-trend."""
    _, x = real
    bars, side = candidates(x, every=3)
    trend = x[bars, FEATURE_SCHEMA.names.index("trend_1m")]
    assert len(bars) > 500
    assert np.isfinite(x[bars]).all()
    assert (bars % 3 == 0).all()
    np.testing.assert_array_equal(side, np.sign(trend).astype(np.int64))
    assert {-1, 1} == set(side.tolist())


def test_no_look_ahead_features_use_the_past_labels_only_the_window(real: tuple[KlineSeries, F64]) -> None:
    """Features at t equal a run on candles[:t+1]; labels change with candles t+1..t+horizon only."""
    s, x = real
    spec = BarrierSpec(stop_pct=0.3, target_pct=0.45, horizon=120)
    lab = label_setups(s, x, spec, every=11)
    rng = np.random.default_rng(4)
    for k in rng.choice(len(lab), size=10, replace=False):
        t = int(lab.index[k])
        np.testing.assert_array_equal(FeatureEngineer().batch(s.slice(0, t + 1))[0][t], x[t])
        assert t < lab.exit[k] <= lab.end[k] == t + spec.horizon
        scrambled = _scramble_outside(s, t, t + spec.horizon, rng)
        again = triple_barrier(scrambled, lab.index[k:k + 1], lab.side[k:k + 1], spec)
        assert (again.outcome[0], again.ret_pct[0], again.exit[0]) == (lab.outcome[k], lab.ret_pct[k], lab.exit[k])


def _scramble_outside(s: KlineSeries, t: int, end: int, rng: np.random.Generator) -> KlineSeries:
    """A copy with random prices on every candle before t and after ``end`` (close of t kept: the entry)."""
    cols = [a.copy() for a in (s.open, s.high, s.low, s.close)]
    outside = np.ones(len(s), dtype=bool)
    outside[t + 1:end + 1] = False
    noise = rng.uniform(0.5, 2.0, size=len(s))
    for a in cols:
        keep_entry = a[t]
        a[outside] *= noise[outside]
        if a is cols[3]:
            a[t] = keep_entry
    return KlineSeries(s.symbol, s.open_time, cols[0], cols[1], cols[2], cols[3], s.volume)


def test_per_setup_barriers_follow_each_setups_own_stop_and_target() -> None:
    """The same entry with a tight and a wide stop: the tight one is stopped, the wide one reaches its target;
    arrays of the wrong length or with non-positive barriers are refused."""
    s = _series([(100, 100, 100, 100), (100, 100.2, 99.4, 100), (100, 101.6, 99.8, 101.5), (101.5, 101.5, 101, 101)])
    lab = triple_barrier(s, np.array([0, 0]), np.array([1, 1]), SPEC, np.array([0.5, 1.0]), np.array([1.0, 1.5]))
    assert lab.outcome.tolist() == [STOP, TAKE_PROFIT] and lab.exit.tolist() == [1, 2]
    assert lab.ret_pct[0] == pytest.approx(-0.5 - 0.1) and lab.ret_pct[1] == pytest.approx(1.5 - 0.1)
    assert lab.stop_pct.tolist() == [0.5, 1.0] and lab.target_pct.tolist() == [1.0, 1.5]
    with pytest.raises(ValueError, match="one value per setup"):
        triple_barrier(s, np.array([0, 0]), np.array([1, 1]), SPEC, np.array([0.5]), np.array([1.0]))
    with pytest.raises(ValueError, match="stop_pct must be"):
        triple_barrier(s, np.array([0]), np.array([1]), SPEC, np.array([0.0]), np.array([1.0]))


def test_strategy_setups_are_labelled_with_their_own_exits(real: tuple[KlineSeries, F64]) -> None:
    """source="strategy": exactly the strategy's rows, sides and stop/target %, and the kernel agrees with the
    plain rules on each of them; "broad" adds trend-side bars, all with the strategy's exit formula."""
    s, x = real
    found = find_setups(x)
    lab = label_setups(s, x, BarrierSpec(), source="strategy")
    assert len(found) >= 10
    assert lab.index.tolist() == found.rows.tolist()  # none is within 2 h of the slice's end
    np.testing.assert_array_equal(lab.side, found.sides)
    np.testing.assert_array_equal(lab.stop_pct, found.stop_pct)
    np.testing.assert_array_equal(lab.target_pct, found.target_pct)
    for k in range(len(lab)):
        spec = BarrierSpec(stop_pct=float(lab.stop_pct[k]), target_pct=float(lab.target_pct[k]))
        outcome, ret, exit_ = _reference(s, int(lab.index[k]), int(lab.side[k]), spec)
        assert (int(lab.outcome[k]), int(lab.exit[k])) == (outcome, exit_)
        assert lab.ret_pct[k] == pytest.approx(ret, abs=1e-9)
    broad = select_setups(x, "broad", every=5)
    assert set(found.rows.tolist()) <= set(broad.index.tolist())
    assert int(broad.is_setup.sum()) == len(found) and len(broad) > 10 * len(found)
    assert (np.diff(broad.index) > 0).all()
    stop, target = strategy_exits(x, broad.index)
    np.testing.assert_array_equal(broad.stop_pct, stop)
    np.testing.assert_array_equal(broad.target_pct, target)
    atr = x[broad.index, FEATURE_SCHEMA.names.index("atr_pct")]
    cfg = ScalperConfig()
    np.testing.assert_allclose(stop, np.clip(cfg.stop_atr_mult * atr, cfg.min_stop_pct, cfg.max_stop_pct))
    np.testing.assert_allclose(target, cfg.reward_risk * stop)
    with pytest.raises(ValueError, match="unknown setup source"):
        select_setups(x, "everything")  # type: ignore[arg-type]


def test_no_look_ahead_on_the_strategy_path(real: tuple[KlineSeries, F64]) -> None:
    """A strategy setup at t is found from candles ≤ t alone (same side and exits on the prefix), and its
    label, with its own barriers, changes with candles t+1..t+horizon only."""
    s, x = real
    lab = label_setups(s, x, BarrierSpec(), source="strategy")
    rng = np.random.default_rng(8)
    for k in rng.choice(len(lab), size=min(6, len(lab)), replace=False):
        t = int(lab.index[k])
        prefix = FeatureEngineer().batch(s.slice(0, t + 1))[0]
        again_rows = select_setups(prefix, "strategy")
        assert again_rows.index[-1] == t and again_rows.side[-1] == lab.side[k]
        assert (again_rows.stop_pct[-1], again_rows.target_pct[-1]) == (lab.stop_pct[k], lab.target_pct[k])
        scrambled = _scramble_outside(s, t, t + 120, rng)
        again = triple_barrier(scrambled, lab.index[k:k + 1], lab.side[k:k + 1], BarrierSpec(),
                               lab.stop_pct[k:k + 1], lab.target_pct[k:k + 1])
        assert (again.outcome[0], again.ret_pct[0], again.exit[0]) == (lab.outcome[k], lab.ret_pct[k], lab.exit[k])
