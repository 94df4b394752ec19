"""Multi-timeframe aggregation of base (1m) candles into 5m/15m/1h/1d bars on UTC boundaries.

A higher-timeframe bar covers open times [k·tf, (k+1)·tf). It is complete — and only then used — at
the close of the base candle whose ``open_time + base_ms`` is a multiple of ``tf``, or, when that
candle is missing (a gap), at the arrival of the first candle of a later bucket. A bucket whose
first base candle is not at the bucket's UTC start (the first bucket of a warm start that begins
mid-hour, or a bucket entered after a gap over its start) is *partial*: it is never emitted, as
``CandleStore``'s ``BarAggregator`` never emits it, since its open and range are not the bar's. The
incremental step (``stale``/``add``/``closes``/``whole``, used inside the engine kernel) and the
vectorised :func:`aggregate` give the same bars, each with ``known_at`` = the base index at which it
is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smc_quant.smc._jit import jit, kernel

TF_MS = np.array([60_000, 300_000, 900_000, 3_600_000, 86_400_000], dtype=np.int64)

A_HAS = 0
"""0: no bar in progress; 1: a bar whose first base candle opened at its bucket's start; 2: a partial one."""
A_OT = 1
A_O = 2
A_H = 3
A_L = 4
A_C = 5
A_V = 6
SIZE = 7

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@jit
def stale(s: F64, a: int, open_time: int, tf: int) -> bool:
    """Whether the bar in progress (block at ``a``) belongs to another bucket than ``open_time``."""
    start = int(s[a + A_OT])
    return bool((s[a + A_HAS] != 0.0) & ((open_time < start) | (open_time >= start + tf)))


@jit
def add(s: F64, a: int, open_time: int, tf: int, o: float, h: float, low: float, c: float,
        v: float) -> None:
    """Merge one base candle into the bar in progress at ``a`` (starting one if needed)."""
    if s[a + A_HAS] == 0.0:
        s[a + A_HAS] = 1.0 if open_time % tf == 0 else 2.0
        s[a + A_OT] = open_time - open_time % tf
        s[a + A_O] = o
        s[a + A_H] = h
        s[a + A_L] = low
        s[a + A_C] = c
        s[a + A_V] = v
        return
    s[a + A_H] = max(s[a + A_H], h)
    s[a + A_L] = min(s[a + A_L], low)
    s[a + A_C] = c
    s[a + A_V] += v


@jit
def closes(s: F64, a: int, open_time: int, base_ms: int, tf: int) -> bool:
    """Whether the base candle at ``open_time``, just added to the bar at ``a``, ends its bucket."""
    return open_time + base_ms == int(s[a + A_OT]) + tf


@jit
def whole(s: F64, a: int) -> bool:
    """Whether the bar in progress at ``a`` started at its bucket's start (only such a bar is emitted)."""
    return bool(s[a + A_HAS] == 1.0)


@kernel
def _stream(ot: I64, o: F64, h: F64, low: F64, c: F64, v: F64, tf: int,
            base_ms: int) -> tuple[F64, I64]:
    out = np.empty((ot.shape[0], 6))
    known = np.empty(ot.shape[0], dtype=np.int64)
    a = np.zeros(SIZE)
    m = 0
    for i in range(ot.shape[0]):
        if stale(a, 0, ot[i], tf):
            if whole(a, 0):
                out[m, :] = a[A_OT:A_V + 1]
                known[m] = i
                m += 1
            a[A_HAS] = 0.0
        add(a, 0, ot[i], tf, o[i], h[i], low[i], c[i], v[i])
        if closes(a, 0, ot[i], base_ms, tf):
            if whole(a, 0):
                out[m, :] = a[A_OT:A_V + 1]
                known[m] = i
                m += 1
            a[A_HAS] = 0.0
    return out[:m], known[:m]


@dataclass(frozen=True, slots=True)
class Bars:
    """Completed higher-timeframe bars; ``known_at[k]`` is the base index where bar k is known."""

    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    known_at: I64


def aggregate_stream(ot: I64, o: F64, h: F64, low: F64, c: F64, v: F64, tf: int,
                     base_ms: int = 60_000) -> Bars:
    """Completed bars by the incremental step, candle by candle (the engine's rule)."""
    out, known = _stream(ot, o, h, low, c, v, tf, base_ms)
    return Bars(out[:, 0].astype(np.int64), out[:, 1], out[:, 2], out[:, 3], out[:, 4], out[:, 5], known)


def aggregate(ot: I64, o: F64, h: F64, low: F64, c: F64, v: F64, tf: int,
              base_ms: int = 60_000) -> Bars:
    """Completed bars, vectorised: group consecutive candles of one bucket; drop the unfinished last and
    every partial one (first candle not at the bucket's start)."""
    n = ot.shape[0]
    if n == 0:
        e = np.empty(0)
        return Bars(np.empty(0, np.int64), e, e, e, e, e, np.empty(0, np.int64))
    bucket = ot - ot % tf
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], n] - 1
    known = np.where((ot[ends] + base_ms) % tf == 0, ends, ends + 1)
    ok = (known < n) & (ot[starts] == bucket[starts])
    sums = _group_sums(v, starts, ends)
    s, e = starts[ok], ends[ok]
    return Bars(bucket[s], o[s], np.maximum.reduceat(h, starts)[ok], np.minimum.reduceat(low, starts)[ok],
                c[e], sums[ok], known[ok].astype(np.int64))


@kernel
def _group_sums(v: F64, starts: I64, ends: I64) -> F64:
    """Left-to-right sums per group (the same additions, in the same order, as :func:`add`)."""
    out = np.empty(starts.shape[0])
    for g in range(starts.shape[0]):
        acc = v[starts[g]]
        for i in range(starts[g] + 1, ends[g] + 1):
            acc += v[i]
        out[g] = acc
    return out
