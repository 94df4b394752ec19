"""Detection events: one float64 row per event, stamped with its formation and confirmation bars.

Columns (``E_*``): symbol row, timeframe index, kind, direction (+1 bullish/high side, −1 bearish/low
side), ``formed`` (bar of the pattern's anchor, in that timeframe's bars), ``confirmed`` (the bar at
whose close it became known, same timeframe), ``known_at`` (index of the base-series bar at whose
close it became known), ``top`` and ``bottom`` (prices; equal for a level).
Events are never edited: later state changes (touched, filled, invalidated, swept) are new events.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc._jit import jit

E_SYM = 0
E_TF = 1
E_KIND = 2
E_DIR = 3
E_FORMED = 4
E_CONFIRMED = 5
E_KNOWN = 6
E_TOP = 7
E_BOTTOM = 8
EV_COLS = 9

K_SWING = 1
K_BOS = 2
K_CHOCH = 3
K_FVG = 4
K_FVG_TOUCH = 5
K_FVG_FILL = 6
K_FVG_EXPIRE = 7
K_OB = 8
K_OB_TOUCH = 9
K_OB_INVALID = 10
K_OB_EXPIRE = 11
K_POOL = 12
K_SWEEP = 13
K_POOL_BREAK = 14
K_POOL_EXPIRE = 15

KIND_NAMES: dict[int, str] = {
    K_SWING: "swing", K_BOS: "bos", K_CHOCH: "choch", K_FVG: "fvg", K_FVG_TOUCH: "fvg_touch",
    K_FVG_FILL: "fvg_fill", K_FVG_EXPIRE: "fvg_expire", K_OB: "ob", K_OB_TOUCH: "ob_touch",
    K_OB_INVALID: "ob_invalid", K_OB_EXPIRE: "ob_expire", K_POOL: "liq_pool", K_SWEEP: "liq_sweep",
    K_POOL_BREAK: "liq_break", K_POOL_EXPIRE: "liq_expire",
}


@jit
def emit(ev: npt.NDArray[np.float64], n: int, kind: int, d: int, formed: float, confirmed: float,
         top: float, bottom: float) -> int:
    """Write one event at row ``n``; returns ``n + 1``."""
    ev[n, E_KIND] = kind
    ev[n, E_DIR] = d
    ev[n, E_FORMED] = formed
    ev[n, E_CONFIRMED] = confirmed
    ev[n, E_TOP] = top
    ev[n, E_BOTTOM] = bottom
    return n + 1


def select(events: npt.NDArray[np.float64], kind: int, tf: int = 0) -> npt.NDArray[np.float64]:
    """The rows of one kind on one timeframe."""
    mask = (events[:, E_KIND] == kind) & (events[:, E_TF] == tf)
    out: npt.NDArray[np.float64] = events[mask]
    return out
