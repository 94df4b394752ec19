"""Classification and trading metrics of predicted P(win), in plain numpy (no scikit-learn).

Trading metrics describe the setups a threshold lets through: ``taken`` = P(win) ≥ threshold;
hit rate = share of taken setups with a positive net return; expectancy = their mean net % return
after fees; profit factor = sum of net gains / |sum of net losses| (inf when nothing lost).
A metric with no rows to measure is NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
EPS = 1e-15


def midranks(p: F64) -> F64:
    """1-based ranks of ``p`` with ties given their average rank."""
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    first = np.r_[True, sorted_p[1:] != sorted_p[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], p.shape[0]]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(p.shape[0])
    ranks[order] = avg[group]
    return ranks


def auc(y: I64, p: F64) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class."""
    pos = int(y.sum())
    neg = int(y.shape[0]) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    r = midranks(np.asarray(p, dtype=np.float64))
    return float((r[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(y: I64, p: F64) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-15, 1 − 1e-15]."""
    q = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1.0 - q)))


def brier(y: I64, p: F64) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((p - y) ** 2))


def calibration(y: I64, p: F64, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean P, observed win rate, count) per equal-width probability bin that has rows."""
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append((float(p[m].mean()), float(y[m].mean()), int(m.sum())))
    return out


def _mean(a: F64 | I64) -> float:
    return float(a.mean()) if a.shape[0] else float("nan")


def classification(y: I64, p: F64, threshold: float) -> dict[str, float]:
    """AUC, log loss, Brier, base rate and precision at ``threshold``."""
    taken = p >= threshold
    return {"auc": auc(y, p), "log_loss": log_loss(y, p), "brier": brier(y, p), "base_rate": _mean(y),
            "precision": _mean(y[taken]), "n": float(y.shape[0])}


def trading(ret_pct: F64, p: F64, threshold: float) -> dict[str, float]:
    """Hit rate, expectancy (mean net %), profit factor and count of the setups with P ≥ threshold."""
    r = ret_pct[p >= threshold]
    gains, losses = float(r[r > 0].sum()), float(-r[r < 0].sum())
    pf = gains / losses if losses > 0 else (float("inf") if gains > 0 else float("nan"))
    return {"taken": float(r.shape[0]), "hit_rate": _mean((r > 0).astype(np.float64)),
            "expectancy_pct": _mean(r), "profit_factor": pf, "all_expectancy_pct": _mean(ret_pct)}


def evaluate(y: I64, ret_pct: F64, p: F64, threshold: float) -> dict[str, float]:
    """:func:`classification` and :func:`trading` in one flat dictionary."""
    return {**classification(y, p, threshold), **trading(ret_pct, p, threshold)}


__all__ = ["auc", "brier", "calibration", "classification", "evaluate", "log_loss", "midranks", "trading"]
