"""Market structure: break of structure (BOS) and change of character (CHoCH).

State: the latest confirmed swing high and low that are not yet broken, and the trend (+1/−1, 0
before the first break). At bar t, if close_t (or h_t with wick breaks) > the unbroken swing high:
CHoCH+ when the trend was bearish, else BOS+; the trend becomes bullish and that level retires.
Lows mirror this. Events are stamped at the breaking bar (``confirmed``) with the broken pivot as
``formed``. For each unbroken level the state also tracks the extreme candle since its pivot (lowest
low since a swing high, highest high since a swing low): the order-block candidate.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc import bars
from smc_quant.smc._jit import jit
from smc_quant.smc.events import K_BOS, K_CHOCH, emit

ST_TREND = 0
ST_LAST_BOS = 1
ST_LAST_CHOCH = 2
# per side blocks: high side at 3, low side at 3 + SIDE
S_ON = 0
S_LVL = 1
S_IDX = 2
S_EXT = 3
S_EXT_IDX = 4
S_EXT_OTHER = 5
SIDE = 6
ST_HI = 3
ST_LO = 3 + SIDE
SIZE = 3 + 2 * SIDE


def init(s: npt.NDArray[np.float64]) -> None:
    """No trend, no level, no break yet."""
    s[:] = 0.0
    s[ST_LAST_BOS] = np.nan
    s[ST_LAST_CHOCH] = np.nan


@jit
def check_break(s: npt.NDArray[np.float64], st: int, sgn: int, src: float, bar: float,
                ev: npt.NDArray[np.float64], n: int) -> tuple[int, bool]:
    """Break of the unbroken swing high (sgn +1, ``src`` above it) or low (sgn −1, below it)."""
    b = st + (ST_HI if sgn > 0 else ST_LO)
    if (s[b + S_ON] == 0.0) | (sgn * (src - s[b + S_LVL]) <= 0):
        return n, False
    choch = s[st + ST_TREND] == -sgn
    kind = K_CHOCH if choch else K_BOS
    n = emit(ev, n, kind, sgn, s[b + S_IDX], bar, s[b + S_LVL], s[b + S_LVL])
    s[st + (ST_LAST_CHOCH if choch else ST_LAST_BOS)] = bar
    s[st + ST_TREND] = sgn
    s[b + S_ON] = 0.0
    return n, True


@jit
def extend(s: npt.NDArray[np.float64], st: int, sgn: int, x: float, other: float, bar: float) -> None:
    """Offer bar ``bar`` (extreme ``x``, opposite price ``other``) as the side's OB candidate; ties
    move to the later bar."""
    b = st + (ST_HI if sgn > 0 else ST_LO)
    if sgn * (x - s[b + S_EXT]) <= 0:
        s[b + S_EXT] = x
        s[b + S_EXT_IDX] = bar
        s[b + S_EXT_OTHER] = other


@jit
def on_level(s: npt.NDArray[np.float64], st: int, sgn: int, level: float, pivot: float) -> None:
    """A newly confirmed swing becomes the level to break (its candidate is then seeded by
    :func:`extend` over the bars pivot..now)."""
    b = st + (ST_HI if sgn > 0 else ST_LO)
    s[b + S_ON] = 1.0
    s[b + S_LVL] = level
    s[b + S_IDX] = pivot
    s[b + S_EXT] = sgn * np.inf


@jit
def on_swing(s: npt.NDArray[np.float64], st: int, sgn: int, level: float, pivot: float, r: int,
             right: int) -> None:
    """A newly confirmed swing becomes the level to break; seed its candidate from the ring at ``r``."""
    on_level(s, st, sgn, level, pivot)
    ext_f = bars.B_L if sgn > 0 else bars.B_H
    oth_f = bars.B_H if sgn > 0 else bars.B_L
    for k in range(right, -1, -1):
        extend(s, st, sgn, bars.at(s, r, ext_f, k), bars.at(s, r, oth_f, k), pivot + right - k)


@jit
def track(s: npt.NDArray[np.float64], st: int, h: float, low: float, bar: float) -> None:
    """Extend both unbroken levels' candidates with this bar."""
    if s[st + ST_HI + S_ON] != 0.0:
        extend(s, st, 1, low, h, bar)
    if s[st + ST_LO + S_ON] != 0.0:
        extend(s, st, -1, h, low, bar)


@jit
def trend(s: npt.NDArray[np.float64], st: int) -> float:
    """+1/−1, NaN before the first break."""
    t = s[st + ST_TREND]
    return np.nan if t == 0.0 else float(t)
