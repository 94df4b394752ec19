"""Stand-alone batch kernels for the detectors that consume swings (structure with its order blocks,
liquidity), given the swing flags of :func:`smc_quant.smc.swings.batch` — the shape in which the
reference library takes them, for per-detector comparison and benchmarking.

They call the same step functions as the engine, in the same order, so their events equal the
engine's events of those kinds (a test checks it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc import liquidity, order_blocks, structure
from smc_quant.smc._jit import jit, kernel
from smc_quant.smc.events import EV_COLS

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]


@jit
def _room(ev: F64, n: int, need: int) -> F64:
    """``ev`` itself, or a copy twice as long when fewer than ``need`` rows are left."""
    if n + need <= ev.shape[0]:
        return ev
    out = np.zeros((2 * ev.shape[0] + need, EV_COLS))
    out[:n] = ev[:n]
    return out


@kernel
def structure_batch(h: F64, low: F64, c: F64, flags: I8, right: int, close_break: bool,
                    with_obs: bool) -> F64:
    """BOS/CHoCH (and order-block) events of a history, given swing flags stamped on the pivot bar."""
    ob_bull = structure.SIZE
    ob_bear = ob_bull + order_blocks.SIZE
    s = np.zeros(ob_bear + order_blocks.SIZE)
    s[structure.ST_LAST_BOS] = np.nan
    s[structure.ST_LAST_CHOCH] = np.nan
    ev = np.zeros((1024, EV_COLS))
    n = 0
    for t in range(h.shape[0]):
        ev = _room(ev, n, 64)
        n = order_blocks.update(s, ob_bull, 1, h[t], low[t], c[t], t, ev, n)
        n = order_blocks.update(s, ob_bear, -1, h[t], low[t], c[t], t, ev, n)
        for sgn in (1, -1):
            src = c[t] if close_break else (h[t] if sgn > 0 else low[t])
            n, hit = structure.check_break(s, 0, sgn, src, t, ev, n)
            if hit and with_obs:
                n = order_blocks.on_break(s, ob_bull if sgn > 0 else ob_bear, 0, sgn, t, ev, n)
        structure.track(s, 0, h[t], low[t], t)
        p = t - right
        for sgn in (1, -1):
            if p >= 0 and (flags[p] == sgn or flags[p] == 2):
                structure.on_level(s, 0, sgn, h[p] if sgn > 0 else low[p], p)
                for q in range(p, t + 1):
                    structure.extend(s, 0, sgn, low[q] if sgn > 0 else h[q], h[q] if sgn > 0 else low[q], q)
    return ev[:n].copy()


@kernel
def liquidity_batch(h: F64, low: F64, c: F64, flags: I8, right: int, atr: F64, tol_atr: float) -> F64:
    """Equal-high/low pool, sweep and break events of a history, given swing flags and the ATR."""
    s = np.zeros(liquidity.SIZE)
    s[liquidity.LAST_SWEEP] = np.nan
    s[liquidity.SIDE + liquidity.LAST_SWEEP] = np.nan
    ev = np.zeros((1024, EV_COLS))
    n = 0
    for t in range(h.shape[0]):
        ev = _room(ev, n, 64)
        n = liquidity.update(s, 0, 1, h[t], low[t], c[t], t, ev, n)
        n = liquidity.update(s, liquidity.SIDE, -1, h[t], low[t], c[t], t, ev, n)
        p = t - right
        for sgn in (1, -1):
            if p >= 0 and (flags[p] == sgn or flags[p] == 2):
                side = 0 if sgn > 0 else liquidity.SIDE
                level = h[p] if sgn > 0 else low[p]
                n = liquidity.on_swing(s, side, sgn, level, p, t, tol_atr * atr[t], ev, n)
    return ev[:n].copy()
