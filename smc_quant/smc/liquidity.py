"""Liquidity: equal-high/low pools and their sweeps.

Tolerance at bar t: tol = liq_tol_atr · ATR_t (no pool while the ATR is warming up). When a swing
high is confirmed at t: if an active high pool's level is within tol, the swing joins it (level =
max of the two) — else if a recent unpooled, unexceeded swing high is within tol (closest wins),
the two form a new pool with level = their max and ``formed`` = the earlier pivot. Either way a
``liq_pool`` event is stamped at t. Each later bar: if h > level the pool is taken — ``liq_sweep``
when the close is back below the level (the ICT rejection), ``liq_break`` when it closes beyond.
Recent swing highs that price exceeds are forgotten. Lows mirror everything.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc._jit import jit
from smc_quant.smc.events import K_POOL, K_POOL_BREAK, K_POOL_EXPIRE, K_SWEEP, emit

RECENT = 8
POOLS = 8
R_N = 0
R0 = 1
RW = 2
P_N = R0 + RW * RECENT
P0 = P_N + 1
PW = 4  # level, formed, confirmed, members
LAST_SWEEP = P0 + PW * POOLS
REACH = LAST_SWEEP + 1  # min of sgn·level over pools and recent swings: a bar below it changes nothing
SIDE = REACH + 1
SIZE = 2 * SIDE


def init(s: npt.NDArray[np.float64]) -> None:
    """No swings, no pools, no sweep yet (both sides)."""
    s[:] = 0.0
    for side in (0, SIDE):
        s[side + LAST_SWEEP] = np.nan
        s[side + REACH] = np.inf


@jit
def _move(s: npt.NDArray[np.float64], dst: int, src: int, width: int) -> None:
    for j in range(width):
        s[dst + j] = s[src + j]


@jit
def update(s: npt.NDArray[np.float64], b: int, sgn: int, h: float, low: float, c: float, bar: float,
           ev: npt.NDArray[np.float64], n: int) -> int:
    """Sweeps/breaks of one side's pools (side block at ``b``); forget exceeded recent swings."""
    x = h if sgn > 0 else low
    if sgn * x <= s[b + REACH]:
        return n
    reach = np.inf
    keep = 0
    for i in range(int(s[b + P_N])):
        k = b + P0 + PW * i
        lvl = s[k]
        if sgn * (x - lvl) > 0:
            swept = sgn * (c - lvl) < 0
            n = emit(ev, n, K_SWEEP if swept else K_POOL_BREAK, sgn, s[k + 1], bar, lvl, lvl)
            if swept:
                s[b + LAST_SWEEP] = bar
            continue
        if keep != i:
            _move(s, b + P0 + PW * keep, k, PW)
        keep += 1
        reach = min(reach, sgn * lvl)
    s[b + P_N] = keep
    keep = 0
    for i in range(int(s[b + R_N])):
        k = b + R0 + RW * i
        if sgn * (x - s[k]) > 0:
            continue
        _move(s, b + R0 + RW * keep, k, RW)
        keep += 1
        reach = min(reach, sgn * s[k])
    s[b + R_N] = keep
    s[b + REACH] = reach
    return n


@jit
def _closest(s: npt.NDArray[np.float64], first: int, width: int, cnt: int, level: float,
             tol: float) -> int:
    """Slot index of the entry closest to ``level`` within ``tol`` (−1 when none)."""
    best = -1
    gap = tol
    for i in range(cnt):
        d = abs(s[first + width * i] - level)
        if d <= gap:
            best = i
            gap = d
    return best


@jit
def _push_recent(s: npt.NDArray[np.float64], b: int, sgn: int, level: float, idx: float) -> None:
    cnt = int(s[b + R_N])
    if cnt == RECENT:
        _move(s, b + R0, b + R0 + RW, RW * (RECENT - 1))
        cnt -= 1
    s[b + R0 + RW * cnt] = level
    s[b + R0 + RW * cnt + 1] = idx
    s[b + R_N] = cnt + 1
    s[b + REACH] = min(s[b + REACH], sgn * level)


@jit
def _new_pool(s: npt.NDArray[np.float64], b: int, sgn: int, level: float, formed: float, bar: float,
              ev: npt.NDArray[np.float64], n: int) -> int:
    cnt = int(s[b + P_N])
    if cnt == POOLS:
        f = b + P0
        n = emit(ev, n, K_POOL_EXPIRE, sgn, s[f + 1], bar, s[f], s[f])
        _move(s, f, f + PW, PW * (POOLS - 1))
        cnt -= 1
    k = b + P0 + PW * cnt
    s[k] = level
    s[k + 1] = formed
    s[k + 2] = bar
    s[k + 3] = 2.0
    s[b + P_N] = cnt + 1
    s[b + REACH] = min(s[b + REACH], sgn * level)
    return emit(ev, n, K_POOL, sgn, formed, bar, level, level)


@jit
def _take_recent(s: npt.NDArray[np.float64], b: int, r: int) -> None:
    """Remove recent swing slot ``r`` (keeping the order of the others)."""
    cnt = int(s[b + R_N])
    _move(s, b + R0 + RW * r, b + R0 + RW * (r + 1), RW * (cnt - 1 - r))
    s[b + R_N] = cnt - 1


@jit
def on_swing(s: npt.NDArray[np.float64], b: int, sgn: int, level: float, pivot: float, bar: float,
             tol: float, ev: npt.NDArray[np.float64], n: int) -> int:
    """A confirmed swing of this side joins a pool, forms one with a recent swing, or is kept."""
    if not np.isnan(tol):
        j = _closest(s, b + P0, PW, int(s[b + P_N]), level, tol)
        if j >= 0:
            k = b + P0 + PW * j
            if sgn * (level - s[k]) > 0:
                s[k] = level
            s[k + 3] += 1.0
            return emit(ev, n, K_POOL, sgn, s[k + 1], bar, s[k], s[k])
        r = _closest(s, b + R0, RW, int(s[b + R_N]), level, tol)
        if r >= 0:
            other = s[b + R0 + RW * r]
            formed = s[b + R0 + RW * r + 1]
            _take_recent(s, b, r)
            top = level if sgn * (level - other) > 0 else other
            return _new_pool(s, b, sgn, top, formed, bar, ev, n)
    _push_recent(s, b, sgn, level, pivot)
    return n
