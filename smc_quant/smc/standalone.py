"""Stand-alone batch kernels for the detectors that consume swings (structure with its order blocks,
liquidity), given the swing flags of :func:`smc_quant.smc.swings.batch` — the shape in which the
reference library takes them, for per-detector comparison and benchmarking.

They call the same step functions as the engine, in the same order, so their events equal the
engine's events of those kinds (a test checks it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc import liquidity, order_blocks, structure, zones
from smc_quant.smc._jit import hot_kernel
from smc_quant.smc.kernel import collect_events

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
_OB_BULL = structure.SIZE
_OB_BEAR = _OB_BULL + order_blocks.SIZE
_STRUCT_SIZE = _OB_BEAR + order_blocks.SIZE


@hot_kernel
def _structure(h: F64, low: F64, c: F64, flags: I8, right: int, close_break: bool, with_obs: bool,
               s: F64, start: int, ev: F64, n: int) -> tuple[int, int]:
    t = start
    while (t < h.shape[0]) & (n < ev.shape[0] - 64):
        n = order_blocks.update(s, _OB_BULL, 1, h[t], low[t], c[t], t, ev, n)
        n = order_blocks.update(s, _OB_BEAR, -1, h[t], low[t], c[t], t, ev, n)
        for sgn in (1, -1):
            src = c[t] if close_break else (h[t] if sgn > 0 else low[t])
            n, hit = structure.check_break(s, 0, sgn, src, t, ev, n)
            if hit & with_obs:
                n = order_blocks.on_break(s, _OB_BULL if sgn > 0 else _OB_BEAR, 0, sgn, t, ev, n)
        structure.track(s, 0, h[t], low[t], t)
        p = t - right
        for sgn in (1, -1):
            if (p >= 0) and ((flags[p] == sgn) | (flags[p] == 2)):
                structure.on_level(s, 0, sgn, h[p] if sgn > 0 else low[p], p)
                for q in range(p, t + 1):
                    structure.extend(s, 0, sgn, low[q] if sgn > 0 else h[q], h[q] if sgn > 0 else low[q], q)
        t += 1
    return t, n


@hot_kernel
def _liquidity(h: F64, low: F64, c: F64, flags: I8, right: int, atr: F64, tol_atr: float, s: F64,
               start: int, ev: F64, n: int) -> tuple[int, int]:
    t = start
    while (t < h.shape[0]) & (n < ev.shape[0] - 64):
        # liquidity.update returns at once for a bar below the side's reach; test it here first
        if h[t] > s[liquidity.REACH]:
            n = liquidity.update(s, 0, 1, h[t], low[t], c[t], t, ev, n)
        if -low[t] > s[liquidity.SIDE + liquidity.REACH]:
            n = liquidity.update(s, liquidity.SIDE, -1, h[t], low[t], c[t], t, ev, n)
        p = t - right
        f = flags[p] if p >= 0 else 0
        if f != 0:
            tol = tol_atr * atr[t]
            if (f == 1) | (f == 2):
                n = liquidity.on_swing(s, 0, 1, h[p], p, t, tol, ev, n)
            if (f == -1) | (f == 2):
                n = liquidity.on_swing(s, liquidity.SIDE, -1, low[p], p, t, tol, ev, n)
        t += 1
    return t, n


def _expected(candles: int) -> int:
    """Rows to reserve: these detectors make ~0.1–0.2 events per candle on real series (swing length 10)."""
    return candles // 4 + 1024


def structure_batch(h: F64, low: F64, c: F64, flags: I8, right: int, close_break: bool,
                    with_obs: bool) -> F64:
    """BOS/CHoCH (and order-block) events of a history, given swing flags stamped on the pivot bar."""
    s = np.zeros(_STRUCT_SIZE)
    structure.init(s[:structure.SIZE])
    zones.init(s[_OB_BULL:_OB_BEAR], 1)
    zones.init(s[_OB_BEAR:], -1)

    def feed(t: int, ev: F64, n: int) -> tuple[int, int]:
        return _structure(h, low, c, flags, right, close_break, with_obs, s, t, ev, n)

    return collect_events(feed, h.shape[0], _expected(h.shape[0]))


def liquidity_batch(h: F64, low: F64, c: F64, flags: I8, right: int, atr: F64, tol_atr: float) -> F64:
    """Equal-high/low pool, sweep and break events of a history, given swing flags and the ATR."""
    s = np.zeros(liquidity.SIZE)
    liquidity.init(s)

    def feed(t: int, ev: F64, n: int) -> tuple[int, int]:
        return _liquidity(h, low, c, flags, right, atr, tol_atr, s, t, ev, n)

    return collect_events(feed, h.shape[0], _expected(h.shape[0]))
