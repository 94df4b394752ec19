"""Per-timeframe ring buffer of the last ``RING`` bars (open, high, low, close, volume).

The block sits at offset ``r`` of a symbol's state vector.
Layout of the block: ``[count, opens…, highs…, lows…, closes…, volumes…]``; ``count`` is the number
of bars pushed so far, so the newest bar's index is ``count - 1``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc._jit import jit

RING = 64
B_N = 0
B_O = 1
B_H = 1 + RING
B_L = 1 + 2 * RING
B_C = 1 + 3 * RING
B_V = 1 + 4 * RING
SIZE = 1 + 5 * RING


@jit
def push(s: npt.NDArray[np.float64], r: int, o: float, h: float, low: float, c: float, v: float) -> int:
    """Append one bar to the ring at offset ``r``; returns its index."""
    n = int(s[r + B_N])
    k = r + n % RING
    s[k + B_O] = o
    s[k + B_H] = h
    s[k + B_L] = low
    s[k + B_C] = c
    s[k + B_V] = v
    s[r + B_N] = n + 1
    return n


@jit
def count(s: npt.NDArray[np.float64], r: int) -> int:
    """Bars pushed so far."""
    return int(s[r + B_N])


@jit
def at(s: npt.NDArray[np.float64], r: int, field: int, back: int) -> float:
    """Field (``B_O``…``B_V``) of the bar ``back`` bars before the newest (requires back < count)."""
    return float(s[r + field + (int(s[r + B_N]) - 1 - back) % RING])
