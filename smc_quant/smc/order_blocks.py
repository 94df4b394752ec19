"""Order blocks: the last opposite extreme candle before a displacement that breaks structure.

For a bullish break (BOS+/CHoCH+) at bar j of the swing high pivoted at p, the OB candle is the bar
in [p, j−1] with the lowest low (ties: the later bar); zone = [low, high] of that candle. Bearish
mirrors this with the highest high. Stamped at j (``confirmed``), ``formed`` = the OB candle.
Follow-ups from bar j+1: ``ob_touch`` (first l ≤ top, bullish), ``ob_invalid`` (close < bottom;
the OB leaves the active list). OBs are never deleted retroactively.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc import zones
from smc_quant.smc._jit import jit
from smc_quant.smc.events import K_OB, K_OB_EXPIRE, K_OB_INVALID, K_OB_TOUCH, emit
from smc_quant.smc.structure import S_EXT, S_EXT_IDX, S_EXT_OTHER, ST_HI, ST_LO

CAPACITY = 8
SIZE = zones.size(CAPACITY)


@jit
def on_break(s: npt.NDArray[np.float64], obs: int, st: int, sgn: int, bar: float,
             ev: npt.NDArray[np.float64], n: int) -> int:
    """Create the OB of a break that just happened (structure at ``st`` still holds the extreme)."""
    b = st + (ST_HI if sgn > 0 else ST_LO)
    ext = s[b + S_EXT]
    other = s[b + S_EXT_OTHER]
    top = other if sgn > 0 else ext
    bottom = ext if sgn > 0 else other
    n = emit(ev, n, K_OB, sgn, s[b + S_EXT_IDX], bar, top, bottom)
    return zones.add(s, obs, CAPACITY, sgn, top, bottom, s[b + S_EXT_IDX], bar, K_OB_EXPIRE, ev, n)


@jit
def update(s: npt.NDArray[np.float64], obs: int, sgn: int, h: float, low: float, c: float, bar: float,
           ev: npt.NDArray[np.float64], n: int) -> int:
    """Touch / invalidation of the active OBs of one side (list at ``obs``)."""
    return zones.update(s, obs, sgn, h, low, c, True, bar, K_OB_TOUCH, K_OB_INVALID, ev, n)
