"""Average true range, Wilder's smoothing.

TR_t = max(h_t − l_t, |h_t − c_{t−1}|, |l_t − c_{t−1}|) (TR_0 = h_0 − l_0). ATR is NaN for the first
``period − 1`` bars, the mean of the first ``period`` TRs at bar ``period − 1``, then
ATR_t = (ATR_{t−1}·(period − 1) + TR_t) / period.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc._jit import hot_kernel, jit

A_VAL = 0
A_SUM = 1
A_N = 2
A_PREV_C = 3
SIZE = 4


def init(s: npt.NDArray[np.float64]) -> None:
    """Fresh state: no bars, ATR unknown."""
    s[:] = 0.0
    s[A_VAL] = np.nan


@jit
def update(s: npt.NDArray[np.float64], a: int, h: float, low: float, c: float, period: int) -> float:
    """Feed one bar to the ATR block at offset ``a``; returns the ATR as of its close."""
    n = int(s[a + A_N])
    tr = h - low
    if n > 0:
        pc = s[a + A_PREV_C]
        tr = max(tr, abs(h - pc), abs(low - pc))
    n += 1
    if n < period:
        s[a + A_SUM] += tr
    elif n == period:
        s[a + A_SUM] += tr
        s[a + A_VAL] = s[a + A_SUM] / period
    else:
        s[a + A_VAL] = (s[a + A_VAL] * (period - 1) + tr) / period
    s[a + A_N] = n
    s[a + A_PREV_C] = c
    return float(s[a + A_VAL])


@hot_kernel
def _scan(h: npt.NDArray[np.float64], low: npt.NDArray[np.float64], c: npt.NDArray[np.float64],
          period: int, s: npt.NDArray[np.float64], out: npt.NDArray[np.float64]) -> None:
    for t in range(h.shape[0]):
        out[t] = update(s, 0, h[t], low[t], c[t], period)


def batch(h: npt.NDArray[np.float64], low: npt.NDArray[np.float64], c: npt.NDArray[np.float64],
          period: int) -> npt.NDArray[np.float64]:
    """ATR of every bar, by the same step as the incremental path."""
    s = np.zeros(SIZE)
    init(s)
    out = np.empty(h.shape[0])
    _scan(h, low, c, period, s, out)
    return out
