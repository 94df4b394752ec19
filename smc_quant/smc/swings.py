"""Swing highs and lows (pivots), confirmed ``right`` bars after the pivot.

Pivot high at p: h_p > max(h_{p−left} … h_{p−1}) (strict) and h_p ≥ max(h_{p+1} … h_{p+right})
(non-strict), so exactly one bar of a run of equal highs qualifies (the first). Lows mirror this.
With ``strict`` off the left side is non-strict too (every equal high qualifies, as the reference
library's raw candidates).
Known at the close of bar p + right (``confirmed``); no alternation clean-up, no deleted swings.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc import bars
from smc_quant.smc._jit import hot_kernel, jit

SW_HI_LVL = 0
SW_HI_IDX = 1
SW_LO_LVL = 2
SW_LO_IDX = 3
SIZE = 4


def init(s: npt.NDArray[np.float64]) -> None:
    """No swing known yet."""
    s[:] = np.nan


@jit
def pivot(s: npt.NDArray[np.float64], r: int, left: int, right: int, sgn: int, strict: bool) -> bool:
    """Whether the bar ``right`` bars back in the ring at ``r`` is a pivot high (+1) or low (−1);
    ``strict``: strictly beyond the left bars (else equal left bars are allowed)."""
    if bars.count(s, r) < left + right + 1:
        return False
    field = bars.B_H if sgn > 0 else bars.B_L
    x = bars.at(s, r, field, right)
    for k in range(right):
        if sgn * (bars.at(s, r, field, k) - x) > 0:
            return False
    for k in range(1, left + 1):
        d = sgn * (bars.at(s, r, field, right + k) - x)
        if (d > 0) | (strict & (d == 0)):
            return False
    return True


@jit
def remember(s: npt.NDArray[np.float64], w: int, sgn: int, level: float, idx: float) -> None:
    """Record the latest confirmed swing of one side in the block at ``w``."""
    k = w + (SW_HI_LVL if sgn > 0 else SW_LO_LVL)
    s[k] = level
    s[k + 1] = idx


@jit
def _side(x: npt.NDArray[np.float64], p: int, left: int, right: int, strict: bool) -> bool:
    v = x[p]
    for k in range(1, right + 1):
        if x[p + k] > v:
            return False
    for k in range(1, left + 1):
        y = x[p - k]
        if (y > v) | (strict & (y == v)):
            return False
    return True


@hot_kernel
def _scan(h: npt.NDArray[np.float64], neg_low: npt.NDArray[np.float64], left: int, right: int,
          strict: bool, out: npt.NDArray[np.int8]) -> None:
    for p in range(left, h.shape[0] - right):
        hi = _side(h, p, left, right, strict)
        lo = _side(neg_low, p, left, right, strict)
        out[p] = 2 if (hi & lo) else (1 if hi else (-1 if lo else 0))


def batch(h: npt.NDArray[np.float64], low: npt.NDArray[np.float64], left: int, right: int,
          strict: bool = True) -> npt.NDArray[np.int8]:
    """Swing flags stamped on the pivot bar (+1 high, −1 low, 2 both, 0 none); known at p + right.

    A stand-alone scan with the same rule as :func:`pivot`, for per-detector use.
    """
    out = np.zeros(h.shape[0], dtype=np.int8)
    _scan(h, -low, left, right, strict, out)
    return out
