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

Barriers are either one :class:`BarrierSpec` for every setup or per-setup arrays (``stop_pct`` /
``target_pct``, in %): the strategy sizes each setup's exits from its ATR, and its labels use them.

Which setups (``source``):

* ``"strategy"``: the rows where the strategy's entry rules hold (``smc_quant.strategy.find_setups``),
  each with its side and its own stop/target %; every such row is labelled (a setup stays eligible for
  several bars, and the live model is asked on each of them). Few: 1,229 on the 861k candles of the
  18-symbol 2023 set;
* ``"broad"``: the strategy's rows plus every ``every``-th complete trend-side bar (the candidates
  below), all labelled with the strategy's exit geometry — ``stop = clamp(stop_atr_mult · atr_pct,
  min_stop_pct, max_stop_pct)``, ``target = reward_risk · stop`` — so the labels mean what the strategy's
  trades mean while the model sees ~100× more rows (measured better on the strategy's own setups out of
  sample than a model trained on them alone; ``docs/learning.md``);
* ``"candidates"``: the earlier placeholder kept for comparison: every ``every``-th bar whose feature
  row is complete (all finite), side from a structure feature (default ``trend_1m``), the spec's fixed
  barriers.

Pure: numpy + numba, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from smc_quant.domain.series import KlineSeries
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.smc._jit import kernel
from smc_quant.strategy import ScalperConfig, find_setups

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

TAKE_PROFIT, STOP, TIME = 1, -1, 0
SetupSource = Literal["strategy", "broad", "candidates"]
SETUP_SOURCES: tuple[SetupSource, ...] = ("strategy", "broad", "candidates")
_ATR_PCT = FEATURE_SCHEMA.names.index("atr_pct")


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

    @classmethod
    def for_hold(cls, max_hold_s: float) -> BarrierSpec:
        """The default barriers with the horizon of a ``max_hold_s`` forced exit (in 1m bars): the learner labels
        by the exit rule that is traded (it kept 120 bars whatever ``trading.max_hold_s`` said)."""
        return cls(horizon=max(1, math.ceil(max_hold_s / 60)))


@dataclass(frozen=True, slots=True)
class Labels:
    """One row per labelled setup; ``index``/``exit``/``end`` are bar indices of the labelled series,
    ``stop_pct``/``target_pct`` the barriers (in %) each setup was labelled with."""

    index: I64
    side: I64
    win: I64
    ret_pct: F64
    outcome: I64
    exit: I64
    end: I64
    stop_pct: F64
    target_pct: F64

    def __len__(self) -> int:
        return int(self.index.shape[0])


@kernel
def _barriers(o: F64, h: F64, low: F64, c: F64, idx: I64, side: I64, stop: F64, target: F64,
              horizon: int, out_ret: F64, out_outcome: I64, out_exit: I64) -> None:
    for k in range(idx.shape[0]):
        t = idx[k]
        entry = c[t]
        up = side[k] > 0
        tp = entry * (1.0 + target[k]) if up else entry * (1.0 - target[k])
        sl = entry * (1.0 - stop[k]) if up else entry * (1.0 + stop[k])
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


def triple_barrier(series: KlineSeries, index: I64, side: I64, spec: BarrierSpec | None = None,
                   stop_pct: F64 | None = None, target_pct: F64 | None = None) -> Labels:
    """Label the setups at bars ``index`` (entry at their close) with ``side`` ±1; drops unfinished ones.

    ``stop_pct`` / ``target_pct`` (%, one per setup) override the spec's fixed barriers; the spec still
    gives the horizon and the fee."""
    spec = spec or BarrierSpec()
    index = np.asarray(index, dtype=np.int64)
    side = np.asarray(side, dtype=np.int64)
    if index.shape != side.shape or not np.isin(side, (-1, 1)).all():
        raise ValueError("index and side must have the same shape and side must be ±1")
    stop = np.full(index.shape, spec.stop_pct) if stop_pct is None else np.asarray(stop_pct, dtype=np.float64)
    target = np.full(index.shape, spec.target_pct) if target_pct is None else np.asarray(target_pct, np.float64)
    if stop.shape != index.shape or target.shape != index.shape:
        raise ValueError("stop_pct and target_pct need one value per setup")
    if not (np.isfinite(stop).all() and np.isfinite(target).all() and (stop > 0).all() and (target > 0).all()
            and (stop < 100).all()):
        raise ValueError("stop_pct must be in (0, 100) and target_pct > 0 (finite) for every setup")
    keep = (index >= 0) & (index + spec.horizon < len(series))
    index, side, stop, target = index[keep], side[keep], stop[keep], target[keep]
    ret = np.empty(index.shape[0])
    outcome = np.empty(index.shape[0], dtype=np.int64)
    exit_ = np.empty(index.shape[0], dtype=np.int64)
    _barriers(series.open, series.high, series.low, series.close, index, side, stop / 100.0, target / 100.0,
              spec.horizon, ret, outcome, exit_)
    net = 100.0 * ret - 2.0 * spec.fee_pct
    win = (outcome == TAKE_PROFIT).astype(np.int64)
    return Labels(index, side, win, net, outcome, exit_, index + spec.horizon, stop, target)


def candidates(x: F64, every: int = 1, side_feature: str = "trend_1m") -> tuple[I64, I64]:
    """(bars, sides) of the candidate setups: complete feature rows, every ``every``-th bar, side ±1
    from ``side_feature`` (rows where it is 0 are skipped)."""
    col = FEATURE_SCHEMA.names.index(side_feature)
    bars = np.arange(x.shape[0], dtype=np.int64)
    mask = np.isfinite(x).all(axis=1) & (bars % every == 0)
    side = np.sign(np.nan_to_num(x[:, col])).astype(np.int64)
    mask &= side != 0
    return bars[mask], side[mask]


def strategy_setups(x: F64, config: ScalperConfig | None = None) -> tuple[I64, I64, F64, F64]:
    """(bars, sides, stop %, target %) of the strategy's setups in one symbol's feature matrix ``x``."""
    found = find_setups(x, config)
    return found.rows, found.sides, found.stop_pct, found.target_pct


def strategy_exits(x: F64, rows: I64, config: ScalperConfig | None = None) -> tuple[F64, F64]:
    """(stop %, target %) the strategy would use at ``rows``: ``clamp(mult · atr_pct, min, max)`` and
    ``reward_risk ×`` that (NaN where ``atr_pct`` is not finite and positive)."""
    cfg = config or ScalperConfig()
    atr = x[rows, _ATR_PCT]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(atr) & (atr > 0)
    stop = np.where(ok, np.clip(cfg.stop_atr_mult * np.where(ok, atr, 0.0), cfg.min_stop_pct, cfg.max_stop_pct),
                    np.nan)
    return stop, cfg.reward_risk * stop


@dataclass(frozen=True, slots=True)
class SetupRows:
    """Setups of one symbol before labelling: bar, side, barriers (%) and whether the strategy fires there."""

    index: I64
    side: I64
    stop_pct: F64
    target_pct: F64
    is_setup: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def take(self, rows: npt.NDArray[np.bool_]) -> SetupRows:
        """The rows a mask selects."""
        return SetupRows(self.index[rows], self.side[rows], self.stop_pct[rows], self.target_pct[rows],
                         self.is_setup[rows])


def select_setups(x: F64, source: SetupSource = "strategy", every: int = 1, side_feature: str = "trend_1m",
                  spec: BarrierSpec | None = None, scalper: ScalperConfig | None = None) -> SetupRows:
    """The rows of one symbol's feature matrix ``x`` to label, by ``source`` (see the module docstring)."""
    spec = spec or BarrierSpec()
    if source not in SETUP_SOURCES:
        raise ValueError(f"unknown setup source {source!r} (one of {', '.join(SETUP_SOURCES)})")
    if source == "candidates":
        index, side = candidates(x, every, side_feature)
        n = index.shape[0]
        return SetupRows(index, side, np.full(n, spec.stop_pct), np.full(n, spec.target_pct),
                         np.zeros(n, dtype=np.bool_))
    found = find_setups(x, scalper)
    if source == "strategy":
        return SetupRows(found.rows, found.sides, found.stop_pct, found.target_pct,
                         np.ones(len(found), dtype=np.bool_))
    bars, sides = candidates(x, every, side_feature)
    extra = ~np.isin(bars, found.rows)
    index = np.concatenate([found.rows, bars[extra]])
    side = np.concatenate([found.sides, sides[extra]])
    is_setup = np.concatenate([np.ones(len(found), dtype=np.bool_), np.zeros(int(extra.sum()), dtype=np.bool_)])
    stop, target = strategy_exits(x, index, scalper)
    keep = np.isfinite(stop)
    order = np.argsort(index[keep], kind="stable")
    return SetupRows(index[keep][order], side[keep][order], stop[keep][order], target[keep][order],
                     is_setup[keep][order])


def label_setups(series: KlineSeries, x: F64, spec: BarrierSpec | None = None, every: int = 1,
                 side_feature: str = "trend_1m", source: SetupSource = "candidates",
                 scalper: ScalperConfig | None = None) -> Labels:
    """The setups of one symbol's feature matrix ``x`` (``FeatureEngineer.batch``) chosen by ``source``
    (:func:`select_setups`), labelled with their own barriers."""
    rows = select_setups(x, source, every, side_feature, spec, scalper)
    return triple_barrier(series, rows.index, rows.side, spec, rows.stop_pct, rows.target_pct)


__all__ = ["SETUP_SOURCES", "STOP", "TAKE_PROFIT", "TIME", "BarrierSpec", "Labels", "SetupRows", "SetupSource",
           "candidates", "label_setups", "select_setups", "strategy_exits", "triple_barrier"]
