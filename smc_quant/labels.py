"""Triple-barrier labels for candidate setups: take-profit first, stop first, or the time barrier.

A setup at bar t enters at the close of t (the feature row after candle t is the signal). Its outcome
reads candles t+1 .. t+horizon only:

* long: take-profit when a high reaches ``entry · (1 + target%)``, stop when a low reaches
  ``entry · (1 − stop%)``; short mirrors this;
* a bar that touches both barriers counts as a stop (the order inside the bar is unknown; we assume the
  worse one);
* a bar that *opens* beyond the stop fills at its open (a gap is not forgiven); take-profit fills at the
  barrier price (never better);
* nothing hit by bar t+horizon: exit at that bar's close (the 2-hour time barrier with 1m candles).

Net % return = gross % move in the setup's direction − 2 · fee% (taker on entry and exit). The label is
1 when take-profit came first. ``end`` (= t + horizon) is the last bar the label reads; walk-forward
splits purge with it. Setups whose window would run past the data are not labelled.

Candidate setups, for now: every ``every``-th bar whose feature row is complete (all finite), with the
side taken from a structure feature (default ``trend_1m``: +1 → long, −1 → short). The strategy (issue 5)
will replace this rule; the labelling itself does not depend on it. Pure: numpy + numba, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smc_quant.domain.series import KlineSeries
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.smc._jit import kernel

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

TAKE_PROFIT, STOP, TIME = 1, -1, 0


@dataclass(frozen=True, slots=True)
class BarrierSpec:
    """Barriers of one setup, in percent of the entry price, and the horizon in base bars."""

    stop_pct: float = 0.5
    target_pct: float = 0.75
    horizon: int = 120
    fee_pct: float = 0.05

    def __post_init__(self) -> None:
        if not (self.stop_pct > 0 and self.target_pct > 0 and self.horizon >= 1 and self.fee_pct >= 0):
            raise ValueError(f"invalid barriers {self}")


@dataclass(frozen=True, slots=True)
class Labels:
    """One row per labelled setup; ``index``/``exit``/``end`` are bar indices of the labelled series."""

    index: I64
    side: I64
    win: I64
    ret_pct: F64
    outcome: I64
    exit: I64
    end: I64

    def __len__(self) -> int:
        return int(self.index.shape[0])


@kernel
def _barriers(o: F64, h: F64, low: F64, c: F64, idx: I64, side: I64, stop: float, target: float,
              horizon: int, out_ret: F64, out_outcome: I64, out_exit: I64) -> None:
    for k in range(idx.shape[0]):
        t = idx[k]
        entry = c[t]
        up = side[k] > 0
        tp = entry * (1.0 + target) if up else entry * (1.0 - target)
        sl = entry * (1.0 - stop) if up else entry * (1.0 + stop)
        j = t + horizon
        exit_px = c[j]
        outcome = 0
        for i in range(t + 1, t + horizon + 1):
            hit_sl = low[i] <= sl if up else h[i] >= sl
            if hit_sl:
                exit_px = min(o[i], sl) if up else max(o[i], sl)
                outcome, j = -1, i
                break
            if (h[i] >= tp) if up else (low[i] <= tp):
                exit_px, outcome, j = tp, 1, i
                break
        move = exit_px / entry - 1.0
        out_ret[k] = move if up else -move
        out_outcome[k] = outcome
        out_exit[k] = j


def triple_barrier(series: KlineSeries, index: I64, side: I64, spec: BarrierSpec | None = None) -> Labels:
    """Label the setups at bars ``index`` (entry at their close) with ``side`` ±1; drops unfinished ones."""
    spec = spec or BarrierSpec()
    index = np.asarray(index, dtype=np.int64)
    side = np.asarray(side, dtype=np.int64)
    if index.shape != side.shape or not np.isin(side, (-1, 1)).all():
        raise ValueError("index and side must have the same shape and side must be ±1")
    keep = (index >= 0) & (index + spec.horizon < len(series))
    index, side = index[keep], side[keep]
    ret = np.empty(index.shape[0])
    outcome = np.empty(index.shape[0], dtype=np.int64)
    exit_ = np.empty(index.shape[0], dtype=np.int64)
    _barriers(series.open, series.high, series.low, series.close, index, side, spec.stop_pct / 100.0,
              spec.target_pct / 100.0, spec.horizon, ret, outcome, exit_)
    net = 100.0 * ret - 2.0 * spec.fee_pct
    win = (outcome == TAKE_PROFIT).astype(np.int64)
    return Labels(index, side, win, net, outcome, exit_, index + spec.horizon)


def candidates(x: F64, every: int = 1, side_feature: str = "trend_1m") -> tuple[I64, I64]:
    """(bars, sides) of the candidate setups: complete feature rows, every ``every``-th bar, side ±1
    from ``side_feature`` (rows where it is 0 are skipped)."""
    col = FEATURE_SCHEMA.names.index(side_feature)
    bars = np.arange(x.shape[0], dtype=np.int64)
    mask = np.isfinite(x).all(axis=1) & (bars % every == 0)
    side = np.sign(np.nan_to_num(x[:, col])).astype(np.int64)
    mask &= side != 0
    return bars[mask], side[mask]


def label_setups(series: KlineSeries, x: F64, spec: BarrierSpec | None = None, every: int = 1,
                 side_feature: str = "trend_1m") -> Labels:
    """Candidate setups of one symbol's feature matrix ``x`` (``FeatureEngineer.batch``), labelled."""
    index, side = candidates(x, every, side_feature)
    return triple_barrier(series, index, side, spec)


__all__ = ["STOP", "TAKE_PROFIT", "TIME", "BarrierSpec", "Labels", "candidates", "label_setups",
           "triple_barrier"]
