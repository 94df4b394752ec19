"""The per-bar state machine shared by the batch and the incremental paths.

A symbol's whole state is one float64 vector: one block per timeframe (ring of recent bars, ATR,
swings, structure, FVG lists, OB lists, liquidity) followed by one aggregation block per higher
timeframe and a small metadata block (``OFF_META``: open times of the latest base-timeframe BOS and
CHoCH bars, for setup identity — not model features). :func:`symbol_step` feeds one closed base
candle: it runs the base timeframe's :func:`tf_step`, aggregates, and runs ``tf_step`` on every
higher-timeframe bar completed by that candle (a partial bucket — first candle not at its start —
is dropped, see :mod:`~smc_quant.smc.timeframes`). Batch loops and live updates call this same
function, so they agree bar for bar.

Order inside ``tf_step`` for bar t: push the bar and update the ATR; touch/fill/invalidate/sweep the
zones and pools known before t; break-of-structure checks (and the OB they create); extend the
order-block candidates with bar t; confirm the pivot at t − right (swing event, new level to break,
liquidity pool); detect the FVG completed by bar t.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from smc_quant.smc import atr, bars, fvg, liquidity, order_blocks, structure, swings, timeframes, zones
from smc_quant.smc._jit import hot_kernel, jit
from smc_quant.smc.events import E_KNOWN, E_TF, EV_COLS, K_SWING, emit
from smc_quant.smc.params import P_ATR_PERIOD as P_ATR
from smc_quant.smc.params import (
    P_BASE_MS,
    P_CLOSE_BREAK,
    P_DO_FVG,
    P_DO_LIQUIDITY,
    P_DO_ORDER_BLOCKS,
    P_DO_STRUCTURE,
    P_FVG_COLOUR,
    P_FVG_MIN_ATR,
    P_LIQ_TOL_ATR,
    P_N_TF,
    P_SW_LEFT,
    P_SW_RIGHT,
    P_SW_STRICT,
    TIMEFRAMES,
)

F64 = npt.NDArray[np.float64]

OFF_RING = 0
OFF_ATR = OFF_RING + bars.SIZE
OFF_SW = OFF_ATR + atr.SIZE
OFF_ST = OFF_SW + swings.SIZE
OFF_FVG_BULL = OFF_ST + structure.SIZE
OFF_FVG_BEAR = OFF_FVG_BULL + fvg.SIZE
OFF_OB_BULL = OFF_FVG_BEAR + fvg.SIZE
OFF_OB_BEAR = OFF_OB_BULL + order_blocks.SIZE
OFF_LIQ = OFF_OB_BEAR + order_blocks.SIZE
TF_SIZE = OFF_LIQ + liquidity.SIZE
N_TF = len(TIMEFRAMES)
OFF_AGG = N_TF * TF_SIZE
OFF_META = OFF_AGG + (N_TF - 1) * timeframes.SIZE
M_BOS_T = 0
"""Open time (ms) of the base bar of the latest base-timeframe BOS; NaN before the first."""
M_CHOCH_T = 1
"""Same for the latest CHoCH."""
STATE_SIZE = OFF_META + 2

_PER_TF_EVENTS = 4 * fvg.CAPACITY + 4 * order_blocks.CAPACITY + 2 * liquidity.POOLS + 32
STEP_MAX_EVENTS = 2 * N_TF * _PER_TF_EVENTS
"""Upper bound of events one base candle can emit (one base bar plus, with gaps, two per HTF)."""


def new_state() -> F64:
    """A fresh symbol state (nothing seen)."""
    s = np.zeros(STATE_SIZE)
    for k in range(N_TF):
        b = s[k * TF_SIZE:(k + 1) * TF_SIZE]
        atr.init(b[OFF_ATR:OFF_ATR + atr.SIZE])
        swings.init(b[OFF_SW:OFF_SW + swings.SIZE])
        structure.init(b[OFF_ST:OFF_ST + structure.SIZE])
        liquidity.init(b[OFF_LIQ:OFF_LIQ + liquidity.SIZE])
        for off, end, side in ((OFF_FVG_BULL, OFF_FVG_BEAR, 1), (OFF_FVG_BEAR, OFF_OB_BULL, -1),
                               (OFF_OB_BULL, OFF_OB_BEAR, 1), (OFF_OB_BEAR, OFF_LIQ, -1)):
            zones.init(b[off:end], side)
    s[OFF_META + M_BOS_T] = s[OFF_META + M_CHOCH_T] = np.nan
    return s


def new_states(n: int) -> F64:
    """``n`` fresh symbol states as rows of one C-contiguous matrix."""
    return np.ascontiguousarray(np.tile(new_state(), (n, 1)))


@jit
def _zones_and_pools(s: F64, b: int, h: float, low: float, c: float, t: float, ev: F64, n: int) -> int:
    n = fvg.update(s, b + OFF_FVG_BULL, 1, h, low, t, ev, n)
    n = fvg.update(s, b + OFF_FVG_BEAR, -1, h, low, t, ev, n)
    n = order_blocks.update(s, b + OFF_OB_BULL, 1, h, low, c, t, ev, n)
    n = order_blocks.update(s, b + OFF_OB_BEAR, -1, h, low, c, t, ev, n)
    n = liquidity.update(s, b + OFF_LIQ, 1, h, low, c, t, ev, n)
    return liquidity.update(s, b + OFF_LIQ + liquidity.SIDE, -1, h, low, c, t, ev, n)


@jit
def _structure(s: F64, b: int, p: F64, h: float, low: float, c: float, t: float, ev: F64, n: int) -> int:
    st = b + OFF_ST
    by_close = p[P_CLOSE_BREAK] != 0.0
    obs = p[P_DO_ORDER_BLOCKS] != 0.0
    n, up = structure.check_break(s, st, 1, c if by_close else h, t, ev, n)
    if up & obs:
        n = order_blocks.on_break(s, b + OFF_OB_BULL, st, 1, t, ev, n)
    n, dn = structure.check_break(s, st, -1, c if by_close else low, t, ev, n)
    if dn & obs:
        n = order_blocks.on_break(s, b + OFF_OB_BEAR, st, -1, t, ev, n)
    structure.track(s, st, h, low, t)
    return n


@jit
def _swing(s: F64, b: int, p: F64, sgn: int, t: float, ev: F64, n: int) -> int:
    r = b + OFF_RING
    right = int(p[P_SW_RIGHT])
    if not swings.pivot(s, r, int(p[P_SW_LEFT]), right, sgn, p[P_SW_STRICT] != 0.0):
        return n
    level = bars.at(s, r, bars.B_H if sgn > 0 else bars.B_L, right)
    piv = t - right
    n = emit(ev, n, K_SWING, sgn, piv, t, level, level)
    swings.remember(s, b + OFF_SW, sgn, level, piv)
    if p[P_DO_STRUCTURE] != 0.0:
        structure.on_swing(s, b + OFF_ST, sgn, level, piv, r, right)
    if p[P_DO_LIQUIDITY] == 0.0:
        return n
    tol = p[P_LIQ_TOL_ATR] * s[b + OFF_ATR + atr.A_VAL]
    side = b + OFF_LIQ + (0 if sgn > 0 else liquidity.SIDE)
    return liquidity.on_swing(s, side, sgn, level, piv, t, tol, ev, n)


@jit
def tf_step(s: F64, b: int, p: F64, o: float, h: float, low: float, c: float, v: float,
            ev: F64, n: int) -> int:
    """Feed one closed bar to the timeframe block at offset ``b``; returns the new event count."""
    t = float(bars.push(s, b + OFF_RING, o, h, low, c, v))
    a = atr.update(s, b + OFF_ATR, h, low, c, int(p[P_ATR]))
    n = _zones_and_pools(s, b, h, low, c, t, ev, n)
    if p[P_DO_STRUCTURE] != 0.0:
        n = _structure(s, b, p, h, low, c, t, ev, n)
    n = _swing(s, b, p, 1, t, ev, n)
    n = _swing(s, b, p, -1, t, ev, n)
    if p[P_DO_FVG] == 0.0:
        return n
    return fvg.step(s, b + OFF_RING, b + OFF_FVG_BULL, b + OFF_FVG_BEAR, p[P_FVG_COLOUR] != 0.0,
                    p[P_FVG_MIN_ATR], a, t, ev, n)


@jit
def _stamp(ev: F64, n: int, m: int, tf: int, known: float) -> None:
    for i in range(n, m):
        ev[i, E_TF] = tf
        ev[i, E_KNOWN] = known


@jit
def _stamp_breaks(s: F64, bar: float, open_time: int) -> None:
    """Record the open time of base bar ``bar`` when it just broke structure (BOS or CHoCH)."""
    if s[OFF_ST + structure.ST_LAST_BOS] == bar:
        s[OFF_META + M_BOS_T] = float(open_time)
    if s[OFF_ST + structure.ST_LAST_CHOCH] == bar:
        s[OFF_META + M_CHOCH_T] = float(open_time)


@hot_kernel
def symbol_step(s: F64, p: F64, open_time: int, o: float, h: float, low: float, c: float, v: float,
                ev: F64, n: int) -> int:
    """Feed one closed base candle to a symbol state; events are written from row ``n``.

    Job 0 is the base bar; then, per higher timeframe k, job ``2k−1`` closes a bucket left open by
    a gap and job ``2k`` closes the bucket this candle completes (a partial bucket is closed without
    a bar). One call site keeps the inlined ``tf_step`` compiled once.
    """
    known = float(bars.count(s, OFF_RING))
    base = int(p[P_BASE_MS])
    for job in range(2 * int(p[P_N_TF]) - 1):
        k = (job + 1) // 2
        a = OFF_AGG + (k - 1) * timeframes.SIZE
        tf = timeframes.TF_MS[k]
        if job == 0:
            run = True
        elif job % 2 == 1:
            run = timeframes.stale(s, a, open_time, tf)
        else:
            timeframes.add(s, a, open_time, tf, o, h, low, c, v)
            run = timeframes.closes(s, a, open_time, base, tf)
        if not run:
            continue
        bo, bh, bl, bc, bv = o, h, low, c, v
        if job > 0:
            emit_bar = timeframes.whole(s, a)
            s[a + timeframes.A_HAS] = 0.0
            if not emit_bar:
                continue
            bo, bh, bl = s[a + timeframes.A_O], s[a + timeframes.A_H], s[a + timeframes.A_L]
            bc, bv = s[a + timeframes.A_C], s[a + timeframes.A_V]
        m = tf_step(s, k * TF_SIZE, p, bo, bh, bl, bc, bv, ev, n)
        _stamp(ev, n, m, k, known)
        n = m
        if job == 0:
            _stamp_breaks(s, known, open_time)
    return n


def event_buffer(rows: int) -> F64:
    """A zeroed event buffer with ``rows`` rows."""
    return np.zeros((rows, EV_COLS))


def collect_events(feed: Callable[[int, F64, int], tuple[int, int]], length: int, expected: int) -> F64:
    """The events of a run over ``length`` inputs, fed by ``feed(start, ev, n) -> (stop, n)`` (a kernel
    that writes from row ``n`` of ``ev`` and returns early, at ``stop < length``, before ``ev`` could
    overflow). One buffer of ``expected`` rows (at least ``2 · STEP_MAX_EVENTS``), doubled when it fills;
    the filled rows are returned as a view of it when they fill at least half of it, so no event is
    copied more than once — else as a copy, so a sparse run does not keep a mostly empty buffer alive."""
    ev = event_buffer(max(expected, 2 * STEP_MAX_EVENTS))
    i = n = 0
    while i < length:
        i, n = feed(i, ev, n)
        if i < length:
            bigger = event_buffer(2 * ev.shape[0])
            bigger[:n] = ev[:n]
            ev = bigger
    return ev[:n] if 2 * n >= ev.shape[0] else ev[:n].copy()
