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
from smc_quant.smc._pivot_simd import vector_scan

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]

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
def _side(x: npt.NDArray[np.float64], p: int, left: int, right: int, strict: bool, sgn: int) -> bool:
    v = x[p]
    for k in range(1, right + 1):
        if sgn * (x[p + k] - v) > 0:
            return False
    for k in range(1, left + 1):
        d = sgn * (x[p - k] - v)
        if (d > 0) | (strict & (d == 0)):
            return False
    return True


@hot_kernel
def _scan_exact(h: F64, low: F64, left: int, right: int, strict: bool, out: I8, p_lo: int,
                p_hi: int) -> None:
    """out[p] for p_lo ≤ p < p_hi, bar by bar with exactly :func:`pivot`'s comparisons (also for
    NaN inputs): the edges of :func:`batch`'s vector scan and its fallback."""
    n = h.shape[0]
    for p in range(p_lo, p_hi):
        if (p < left) | (p >= n - right):
            out[p] = 0
            continue
        hi = _side(h, p, left, right, strict, 1)
        lo = _side(low, p, left, right, strict, -1)
        out[p] = 2 if (hi & lo) else (1 if hi else (-1 if lo else 0))


def batch(h: F64, low: F64, left: int, right: int, strict: bool = True) -> I8:
    """Swing flags stamped on the pivot bar (+1 high, −1 low, 2 both, 0 none); known at p + right.

    A stand-alone scan with the same rule as :func:`pivot`, for per-detector use: the explicit-SIMD
    scan of :mod:`smc_quant.smc._pivot_simd` for the bulk, the exact scalar scan at both edges and
    for any series with a NaN high or low.
    """
    h = np.ascontiguousarray(h, dtype=np.float64)
    low = np.ascontiguousarray(low, dtype=np.float64)
    n = h.shape[0]
    out = np.empty(n, dtype=np.int8)
    if left < 1 or right < 1:
        _scan_exact(h, low, left, right, strict, out, 0, n)
        return out
    nan, p_lo, p_hi = vector_scan(int(left), int(right), bool(strict))(h, low, out, left, right, strict)
    if nan or p_hi <= p_lo:
        _scan_exact(h, low, left, right, strict, out, 0, n)
    else:
        _scan_exact(h, low, left, right, strict, out, 0, p_lo)
        _scan_exact(h, low, left, right, strict, out, p_hi, n)
    return out
