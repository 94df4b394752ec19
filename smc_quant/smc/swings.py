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
def _scan_exact(h: F64, neg_low: F64, left: int, right: int, strict: bool, out: I8) -> None:
    """Bar by bar, exactly :func:`pivot`'s comparisons (also for NaN inputs); the fallback of
    :func:`batch`."""
    for p in range(left, h.shape[0] - right):
        hi = _side(h, p, left, right, strict)
        lo = _side(neg_low, p, left, right, strict)
        out[p] = 2 if (hi & lo) else (1 if hi else (-1 if lo else 0))


# The fast scan of :func:`batch`. Branch-free and vectorised by LLVM: per chunk of CHUNK pivots a table
# of window extremes over ``p`` bars (p a power of two), then each pivot's left and right windows are
# covered by three (overlapping) table entries, since max is idempotent. On finite prices it gives
# the same flags as the comparisons of :func:`pivot` (a NaN anywhere sends the whole series to
# :func:`_scan_exact`). Array offsets are taken as views so that every index is the loop counter
# plus a literal: numba then emits no negative-index wrap-around and LLVM vectorises every loop.
CHUNK = 1024


@jit
def _hi(a: float, b: float) -> float:
    return a if a > b else b


@jit
def _lo(a: float, b: float) -> float:
    return a if a < b else b


@jit
def _piece(k: int) -> int:
    """The table width for a window of ``k`` bars: the least power of two ``p`` with 3p ≥ k."""
    p = 1
    while 3 * p < k:
        p *= 2
    return p


@jit
def _table(th: F64, tl: F64, h: F64, low: F64, p: int, m: int) -> None:
    """th[j] = max(h[j … j+p−1]), tl[j] = min(low[j … j+p−1]) for j ≤ m − p (p a power of two ≥ 2)."""
    cnt = m - p + 1
    if p == 2:
        for j in range(cnt):
            th[j] = _hi(h[j], h[j + 1])
            tl[j] = _lo(low[j], low[j + 1])
    elif p == 4:
        for j in range(cnt):
            th[j] = _hi(_hi(h[j], h[j + 1]), _hi(h[j + 2], h[j + 3]))
            tl[j] = _lo(_lo(low[j], low[j + 1]), _lo(low[j + 2], low[j + 3]))
    else:
        for j in range(cnt + p - 8):
            th[j] = _hi(_hi(_hi(h[j], h[j + 1]), _hi(h[j + 2], h[j + 3])),
                        _hi(_hi(h[j + 4], h[j + 5]), _hi(h[j + 6], h[j + 7])))
            tl[j] = _lo(_lo(_lo(low[j], low[j + 1]), _lo(low[j + 2], low[j + 3])),
                        _lo(_lo(low[j + 4], low[j + 5]), _lo(low[j + 6], low[j + 7])))
        q = 8
        while q < p:
            ah, al = th[q:], tl[q:]
            for j in range(cnt + p - 2 * q):
                th[j] = _hi(th[j], ah[j])
                tl[j] = _lo(tl[j], al[j])
            q *= 2


@jit
def _flags(out: I8, h: F64, low: F64, lh0: F64, lh1: F64, lh2: F64, ll0: F64, ll1: F64, ll2: F64,
           rh0: F64, rh1: F64, rh2: F64, rl0: F64, rl1: F64, rl2: F64, strict: bool, cnt: int) -> bool:
    """Flags of ``cnt`` pivots from the three table entries covering each one's left (l…) and right
    (r…) window; whether any of their highs or lows is NaN."""
    loose = not strict
    nan = False
    for j in range(cnt):
        v = h[j]
        lmax = _hi(_hi(lh0[j], lh1[j]), lh2[j])
        rmax = _hi(_hi(rh0[j], rh1[j]), rh2[j])
        hi = (v >= rmax) & ((v > lmax) | (loose & (v == lmax)))
        w = low[j]
        lmin = _lo(_lo(ll0[j], ll1[j]), ll2[j])
        rmin = _lo(_lo(rl0[j], rl1[j]), rl2[j])
        lo = (w <= rmin) & ((w < lmin) | (loose & (w == lmin)))
        out[j] = np.int8(hi) - np.int8(lo) + 2 * np.int8(hi & lo)
        nan |= (v != v) | (w != w)
    return nan


@hot_kernel
def _scan(h: F64, low: F64, left: int, right: int, strict: bool, out: I8, buf: F64) -> bool:
    """Fill ``out`` (every bar); False if a high or low is NaN (then ``out`` is not valid)."""
    n = h.shape[0]
    chunk = buf.shape[1] - left - right
    pl = _piece(left)
    pr = _piece(right)
    nan = False
    for i in range(min(left, n)):
        out[i] = 0
        nan |= (h[i] != h[i]) | (low[i] != low[i])
    for i in range(max(n - right, left), n):
        out[i] = 0
        nan |= (h[i] != h[i]) | (low[i] != low[i])
    p0 = left
    while p0 < n - right:
        cnt = min(chunk, n - right - p0)
        m = cnt + left + right  # bars p0 − left … p0 + cnt − 1 + right
        hh = h[p0 - left:]
        ll = low[p0 - left:]
        lth, ltl = hh, ll
        if pl > 1:
            _table(buf[0], buf[1], hh, ll, pl, m)
            lth, ltl = buf[0], buf[1]
        rth, rtl = hh, ll
        if pr == pl:
            rth, rtl = lth, ltl
        elif pr > 1:
            _table(buf[2], buf[3], hh, ll, pr, m)
            rth, rtl = buf[2], buf[3]
        # left window of pivot j: table entries j, j + lb, j + lc; right window: j + r0, j + rb, j + rc
        lb, lc = min(pl, left - pl), left - pl
        r0 = left + 1
        rb, rc = r0 + min(pr, right - pr), r0 + right - pr
        nan |= _flags(out[p0:], hh[left:], ll[left:], lth, lth[lb:], lth[lc:], ltl, ltl[lb:], ltl[lc:],
                      rth[r0:], rth[rb:], rth[rc:], rtl[r0:], rtl[rb:], rtl[rc:], strict, cnt)
        p0 += cnt
    return not nan


def batch(h: F64, low: F64, left: int, right: int, strict: bool = True) -> I8:
    """Swing flags stamped on the pivot bar (+1 high, −1 low, 2 both, 0 none); known at p + right.

    A stand-alone scan with the same rule as :func:`pivot`, for per-detector use.
    """
    h = np.ascontiguousarray(h, dtype=np.float64)
    low = np.ascontiguousarray(low, dtype=np.float64)
    out = np.empty(h.shape[0], dtype=np.int8)
    if left < 1 or right < 1:
        out[:] = 0
        _scan_exact(h, -low, left, right, strict, out)
        return out
    buf = np.empty((4, CHUNK + left + right))
    if not _scan(h, low, left, right, strict, out, buf):
        out[:] = 0
        _scan_exact(h, -low, left, right, strict, out)
    return out
