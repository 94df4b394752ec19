"""Fair value gaps: three-candle gaps, stamped on the third candle.

At bar t: bullish when l_t > h_{t−2}, zone [h_{t−2}, l_t]; bearish when h_t < l_{t−2}, zone
[h_t, l_{t−2}]. With ``colour`` the middle candle must agree (c_{t−1} > o_{t−1} bullish, < bearish),
as the reference library does; with ``min_atr`` > 0 the gap must be ≥ min_atr·ATR_t (no gap while
the ATR is warming up). ``formed`` = t−1 (the middle candle, the reference library's row),
``confirmed`` = t. Follow-ups from bar t+1: ``fvg_touch`` (first l ≤ top, bullish; h ≥ bottom,
bearish: the library's MitigatedIndex) and ``fvg_fill`` (wick through the far edge; the gap leaves
the active list).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc import bars, zones
from smc_quant.smc._jit import jit, kernel
from smc_quant.smc.events import K_FVG, K_FVG_EXPIRE, K_FVG_FILL, K_FVG_TOUCH, emit

CAPACITY = 16
SIZE = zones.size(CAPACITY)


@jit
def detect(s: npt.NDArray[np.float64], r: int, colour: bool, min_atr: float,
           atr: float) -> tuple[int, float, float]:
    """(direction, top, bottom) of a gap completed by the ring's newest bar; direction 0 if none."""
    if bars.count(s, r) < 3:
        return 0, 0.0, 0.0
    h2 = bars.at(s, r, bars.B_H, 2)
    l2 = bars.at(s, r, bars.B_L, 2)
    body = bars.at(s, r, bars.B_C, 1) - bars.at(s, r, bars.B_O, 1)
    h0 = bars.at(s, r, bars.B_H, 0)
    l0 = bars.at(s, r, bars.B_L, 0)
    min_gap = min_atr * atr if min_atr > 0 else 0.0
    if (l0 > h2) & ((body > 0) | (not colour)) & (l0 - h2 >= min_gap):
        return 1, l0, h2
    if (h0 < l2) & ((body < 0) | (not colour)) & (l2 - h0 >= min_gap):
        return -1, l2, h0
    return 0, 0.0, 0.0


@jit
def step(s: npt.NDArray[np.float64], r: int, bull: int, bear: int, colour: bool, min_atr: float,
         atr: float, bar: float, ev: npt.NDArray[np.float64], n: int) -> int:
    """Detect a new gap at this bar and add it to its side's active list (at ``bull``/``bear``)."""
    d, top, bottom = detect(s, r, colour, min_atr, atr)
    if d == 0:
        return n
    n = emit(ev, n, K_FVG, d, bar - 1, bar, top, bottom)
    z = bull if d > 0 else bear
    return zones.add(s, z, CAPACITY, d, top, bottom, bar - 1, bar, K_FVG_EXPIRE, ev, n)


@jit
def update(s: npt.NDArray[np.float64], z: int, sgn: int, h: float, low: float, bar: float,
           ev: npt.NDArray[np.float64], n: int) -> int:
    """Touch / fill of the active gaps of one side (list at ``z``)."""
    return zones.update(s, z, sgn, h, low, 0.0, False, bar, K_FVG_TOUCH, K_FVG_FILL, ev, n)


@kernel
def batch(o: npt.NDArray[np.float64], h: npt.NDArray[np.float64], low: npt.NDArray[np.float64],
          c: npt.NDArray[np.float64], colour: bool) -> npt.NDArray[np.int8]:
    """Gap direction stamped on the third candle (no minimum size), for per-detector use.

    Allocating the output inside the kernel tells LLVM it aliases no input (4x faster than filling
    an output passed in)."""
    out = np.zeros(h.shape[0], dtype=np.int8)
    for t in range(2, h.shape[0]):
        body = c[t - 1] - o[t - 1]
        if low[t] > h[t - 2] and (body > 0 or not colour):
            out[t] = 1
        elif h[t] < low[t - 2] and (body < 0 or not colour):
            out[t] = -1
    return out
