"""Time-ordered walk-forward splits with purge and embargo (pure).

Rows are labelled setups with a signal time ``start`` and a label window end ``end`` (the last candle
the label reads, ``start ≤ end``), both in epoch ms. The rows, sorted by ``start``, are cut into
``n_folds + 1`` consecutive blocks of equal row count; fold k tests block k + 1 and trains on

* rows before the test window only (``past_only=True``, the default: anchored walk-forward), or on
  every row outside it (``past_only=False``: purged k-fold, for ensembles and diagnostics);
* **purge**: minus every row whose label window ``[start, end]`` overlaps the test window
  ``[test_start, test_end_label]`` (``test_end_label`` = the last label end of a test row), so no
  training label reads a candle that a test label reads;
* **embargo**: minus rows starting within ``embargo_ms`` after the test window's label end (rows
  whose features still echo the test period; only matters with ``past_only=False``).

All indices are positions into the caller's arrays, in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Fold:
    """One split: ``train`` and ``test`` are row positions in time order; times are epoch ms."""

    train: I64
    test: I64
    test_start: int
    test_end: int
    label_end: int


def walk_forward(start: I64, end: I64, n_folds: int, *, embargo_ms: int = 0,
                 past_only: bool = True) -> list[Fold]:
    """``n_folds`` purged, embargoed splits of the rows (signal times ``start``, label ends ``end``)."""
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    if start.shape != end.shape or (end < start).any():
        raise ValueError("start and end must have the same shape with end >= start")
    if n_folds < 1 or start.shape[0] < n_folds + 1:
        raise ValueError(f"need at least {n_folds + 1} rows for {n_folds} folds")
    order = np.argsort(start, kind="stable")
    bounds = np.linspace(0, order.shape[0], n_folds + 2).astype(np.int64)
    folds = []
    for k in range(1, n_folds + 1):
        test = order[bounds[k]:bounds[k + 1]]
        folds.append(_fold(order, start, end, test, embargo_ms, past_only))
    return folds


def _fold(order: I64, start: I64, end: I64, test: I64, embargo_ms: int, past_only: bool) -> Fold:
    t0 = int(start[test].min())
    t1 = int(start[test].max())
    label_end = int(end[test].max())
    s, e = start[order], end[order]
    outside = (s < t0) | (s > t1)
    overlaps = (s <= label_end) & (e >= t0)
    embargoed = (s > label_end) & (s <= label_end + embargo_ms)
    keep = outside & ~overlaps & ~embargoed
    if past_only:
        keep &= s < t0
    return Fold(order[keep], test, t0, t1, label_end)


def windows_overlap(fold: Fold, start: I64, end: I64) -> bool:
    """Whether any training label window of ``fold`` overlaps any test label window."""
    train_s, train_e = start[fold.train], end[fold.train]
    test_lo, test_hi = int(start[fold.test].min()), int(end[fold.test].max())
    return bool(((train_s <= test_hi) & (train_e >= test_lo)).any())


__all__ = ["Fold", "walk_forward", "windows_overlap"]
