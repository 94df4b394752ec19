"""Walk-forward splits (purge, embargo, time order) and the out-of-sample metrics computed on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.metrics import auc, brier, calibration, log_loss, trading
from smc_quant.model.walkforward import walk_forward, windows_overlap

I64 = npt.NDArray[np.int64]
MIN = 60_000
HORIZON_MS = 120 * MIN


@pytest.fixture(scope="module")
def real(shared_data: Path) -> Dataset:
    """Labelled setups of 6,000 real 1m candles of two symbols (every 2nd bar)."""
    series = [read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz").slice(0, 6000) for s in ("ETHUSDT", "XRPUSDT")]
    return build_dataset(series, BarrierSpec(), every=2)


def _random_rows(n: int, seed: int) -> tuple[I64, I64]:
    """Unsorted signal times on a minute grid with label ends 1..180 minutes later."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 20_000, size=n) * MIN
    return start, start + rng.integers(1, 181, size=n) * MIN


def test_dataset_rows_are_in_time_order_with_label_end_after_start(real: Dataset) -> None:
    """The merged dataset is sorted by signal time and every label window is exactly the horizon."""
    assert len(real) > 1000 and set(real.symbol.tolist()) == {0, 1}
    assert (np.diff(real.start) >= 0).all()
    assert (real.end - real.start == HORIZON_MS).all()


@pytest.mark.parametrize("past_only", [True, False])
def test_no_train_label_window_overlaps_the_test_window(real: Dataset, past_only: bool) -> None:
    """For every fold, no training row's label window overlaps any test row's label window."""
    folds = walk_forward(real.start, real.end, 5, embargo_ms=30 * MIN, past_only=past_only)
    assert len(folds) == 5
    for fold in folds:
        assert len(fold.train) > 0 and len(fold.test) > 0
        assert not windows_overlap(fold, real.start, real.end)
        assert np.intersect1d(fold.train, fold.test).size == 0


def test_purge_drops_exactly_the_rows_whose_labels_reach_into_the_test_window(real: Dataset) -> None:
    """Past-only training keeps every earlier row whose label ends before the test starts, and no other."""
    for fold in walk_forward(real.start, real.end, 3):
        expected = np.flatnonzero(real.end < fold.test_start)
        np.testing.assert_array_equal(np.sort(fold.train), expected)
        assert (real.start[fold.train] < fold.test_start).all()


def test_order_is_preserved_and_test_blocks_tile_the_later_rows() -> None:
    """Indices come back in time order, test blocks follow each other and cover all rows after the first block."""
    start, end = _random_rows(3000, seed=1)
    folds = walk_forward(start, end, 4, embargo_ms=60 * MIN)
    for fold in folds:
        assert (np.diff(start[fold.train]) >= 0).all()
        assert (np.diff(start[fold.test]) >= 0).all()
        assert not windows_overlap(fold, start, end)
    tested = np.concatenate([f.test for f in folds])
    assert (np.diff(start[tested]) >= 0).all()
    assert len(np.unique(tested)) == len(tested) == 3000 - 3000 // 5
    assert [f.test_start for f in folds] == sorted(f.test_start for f in folds)


def test_embargo_removes_rows_just_after_the_test_window() -> None:
    """With training on both sides, no training row starts within the embargo after the test labels end."""
    start, end = _random_rows(2000, seed=2)
    embargo = 90 * MIN
    later = 0
    for fold in walk_forward(start, end, 4, embargo_ms=embargo, past_only=False):
        after = start[fold.train][start[fold.train] > fold.test_end]
        assert (after > fold.label_end + embargo).all()
        later += after.size
    assert later > 0


def test_bad_inputs_are_refused() -> None:
    """Label ends before their start, mismatched shapes and too few rows raise ValueError."""
    with pytest.raises(ValueError, match="end >= start"):
        walk_forward(np.array([5, 6]), np.array([4, 7]), 1)
    with pytest.raises(ValueError, match="at least"):
        walk_forward(np.array([1, 2]), np.array([3, 4]), 2)


def test_auc_matches_pairwise_counting_with_ties() -> None:
    """AUC equals the share of (positive, negative) pairs ranked right, ties counting one half."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=300)
    p = np.round(rng.random(300), 1)  # many ties
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(y, p) == pytest.approx(pairs, abs=1e-12)
    assert auc(y, y.astype(np.float64)) == 1.0
    assert np.isnan(auc(np.ones(3, dtype=np.int64), np.ones(3)))


def test_probability_and_trading_metrics_on_a_small_case() -> None:
    """Log loss, Brier, calibration and the filtered-setup trading metrics equal their hand values."""
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1])
    ret = np.array([0.65, -0.6, 0.65, -0.6])
    assert brier(y, p) == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
    assert calibration(y, p, bins=2) == [(0.25, 0.5, 2), (0.75, 0.5, 2)]
    m = trading(ret, p, threshold=0.55)
    assert (m["taken"], m["hit_rate"]) == (2.0, 0.5)
    assert m["expectancy_pct"] == pytest.approx(0.025)
    assert m["profit_factor"] == pytest.approx(0.65 / 0.6)
    assert np.isnan(trading(ret, p, threshold=0.95)["expectancy_pct"])


def test_rows_with_less_history_than_min_history_only_warm_the_features_up(shared_data: Path,
                                                                          real: Dataset) -> None:
    """``min_history``: the first candles of each series are not labelled, and every other row — its features
    computed over the whole series — is the row labelled without the warm-up."""
    series = [read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz").slice(0, 6000) for s in ("ETHUSDT", "XRPUSDT")]
    warm = build_dataset(series, BarrierSpec(), every=2, min_history=2000)
    first = np.array([int(s.open_time[2000]) for s in series])
    keep = real.start >= first[real.symbol]
    assert int((~keep).sum()) > 300 and len(warm) == int(keep.sum())
    np.testing.assert_array_equal(warm.x, real.x[keep])
    np.testing.assert_array_equal(warm.start, real.start[keep])
    np.testing.assert_array_equal(warm.win, real.win[keep])
    np.testing.assert_array_equal(warm.is_setup, real.is_setup[keep])
