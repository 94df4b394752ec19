"""A bounded, age-ordered list of price zones (used by fair value gaps and order blocks).

Block layout (at offset ``z`` of a state vector): ``[count, reach, slot0…, slot1…, …]``, each slot
``[top, bottom, formed, confirmed, touched]``. ``reach`` is the price a bar must get to for any
zone to be touched or ended (bullish: the highest untouched top / touched bottom, bearish: the
lowest untouched bottom / touched top); bars short of it skip the scan. ``side`` +1 is a bullish
zone below price (support), −1 a bearish zone above price (resistance). When the list is full the
oldest zone is dropped with an ``expire`` event.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smc_quant.smc._jit import jit
from smc_quant.smc.events import emit

Z_TOP = 0
Z_BOT = 1
Z_FORMED = 2
Z_CONF = 3
Z_TOUCHED = 4
ZW = 5
Z_HEAD = 2


def size(capacity: int) -> int:
    """Block length for ``capacity`` zones."""
    return Z_HEAD + ZW * capacity


def init(s: npt.NDArray[np.float64], side: int) -> None:
    """An empty list (``s`` is its block)."""
    s[:] = 0.0
    s[1] = -side * np.inf


@jit
def _move(s: npt.NDArray[np.float64], dst: int, src: int, width: int) -> None:
    """Copy ``width`` values from ``src`` to ``dst`` (``dst < src``, front to back)."""
    for j in range(width):
        s[dst + j] = s[src + j]


@jit
def add(s: npt.NDArray[np.float64], z: int, cap: int, side: int, top: float, bottom: float,
        formed: float, conf: float, expire_kind: int, ev: npt.NDArray[np.float64], n: int) -> int:
    """Append a zone (dropping the oldest with an ``expire_kind`` event when full)."""
    cnt = int(s[z])
    if cnt == cap:
        f = z + Z_HEAD
        n = emit(ev, n, expire_kind, side, s[f + Z_FORMED], conf, s[f + Z_TOP], s[f + Z_BOT])
        _move(s, f, f + ZW, ZW * (cap - 1))
        cnt -= 1
    k = z + Z_HEAD + ZW * cnt
    s[k + Z_TOP] = top
    s[k + Z_BOT] = bottom
    s[k + Z_FORMED] = formed
    s[k + Z_CONF] = conf
    s[k + Z_TOUCHED] = 0.0
    s[z] = cnt + 1
    edge = top if side > 0 else bottom
    if side * (edge - s[z + 1]) > 0:
        s[z + 1] = edge
    return n


@jit
def update(s: npt.NDArray[np.float64], z: int, side: int, h: float, low: float, c: float,
           by_close: bool, bar: float, touch_kind: int, end_kind: int,
           ev: npt.NDArray[np.float64], n: int) -> int:
    """Apply one bar: first touch emits ``touch_kind``; the end (far edge crossed by the wick, or
    by the close when ``by_close``) emits ``end_kind`` and removes the zone."""
    if side * (s[z + 1] - (low if side > 0 else h)) < 0:
        return n
    cnt = int(s[z])
    keep = 0
    reach = -side * np.inf
    for i in range(cnt):
        k = z + Z_HEAD + ZW * i
        top = s[k + Z_TOP]
        bot = s[k + Z_BOT]
        if side > 0:
            touched = low <= top
            ended = (by_close & (c < bot)) | ((not by_close) & (low <= bot))
        else:
            touched = h >= bot
            ended = (by_close & (c > top)) | ((not by_close) & (h >= top))
        if touched & (s[k + Z_TOUCHED] == 0.0):
            s[k + Z_TOUCHED] = 1.0
            n = emit(ev, n, touch_kind, side, s[k + Z_FORMED], bar, top, bot)
        if ended:
            n = emit(ev, n, end_kind, side, s[k + Z_FORMED], bar, top, bot)
            continue
        if keep != i:
            _move(s, z + Z_HEAD + ZW * keep, k, ZW)
        keep += 1
        touched_now = s[k + Z_TOUCHED] != 0.0
        edge = (bot if touched_now else top) if side > 0 else (top if touched_now else bot)
        if side * (edge - reach) > 0:
            reach = edge
    s[z] = keep
    s[z + 1] = reach
    return n


@jit
def nearest(s: npt.NDArray[np.float64], z: int, price: float) -> float:
    """Signed distance from ``price`` to the closest zone (0 inside; NaN when the list is empty)."""
    best = np.nan
    for i in range(int(s[z])):
        k = z + Z_HEAD + ZW * i
        if price > s[k + Z_TOP]:
            d = price - s[k + Z_TOP]
        elif price < s[k + Z_BOT]:
            d = price - s[k + Z_BOT]
        else:
            d = 0.0
        if np.isnan(best) | (abs(d) < abs(best)):
            best = d
    return best
