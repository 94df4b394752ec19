"""Explicit-SIMD pivot scan: the fast path of :func:`smc_quant.smc.swings.batch`.

LLVM's auto-vectoriser turns the window scan into ~10 unaligned vector loads per bar and side (one
per table entry) and the loop is bound by them. Here the loop is written directly in LLVM IR with
8-lane vectors (``<8 x double>``; lowered to AVX-512, AVX2 or SSE alike). Per iteration and side:
one aligned load of the next 8 bars, and window extremes built from vectors already in registers.

Streams, per side (max for highs, min for lows): ``S1`` is the raw series; ``S2P[m] = op(SP[m],
SP shifted by P lanes)`` — for P = 1 the shifted view is an unaligned reload of the series (a load
port instead of the shuffle unit, the scarce one), for P = 2, 4 a lane shuffle of two neighbouring
vectors — so ``S_P`` at bar q is the extreme of bars q … q+P−1. A window is covered by pieces of
these streams (overlap is free: max is idempotent). Output lane q tests the pivot q + s, with the
frame shift s chosen so that as many pieces as possible start on a lane boundary (a piece at an
aligned offset is a vector in hand; at a misaligned one it costs a shuffle): for swing length 10 the
20-bar window of pivot q+1 is S8[m−1], S8[m], S4[m+1], no shuffle at all. Each stream lags the input
by the vectors its recurrence looks ahead; output vector m is written ``D`` iterations after its
last input arrived, the vectors it needs kept in registers meanwhile (phi nodes).

Shuffle masks and offsets must be compile-time constants, so the kernel is specialised per
``(left, right, strict)`` through ``numba.literally``. It returns the range of pivots it decided;
the caller finishes the edges with the exact scalar scan, and falls back to the scalar scan
altogether when any high or low is NaN (the same flags as :func:`swings.pivot` then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import literally, typeof, types  # type: ignore[attr-defined]
from numba.core import cgutils
from numba.extending import intrinsic

from smc_quant.smc._jit import hot_kernel

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
LANES = 8
_F64 = ir.DoubleType()
_VEC = ir.VectorType(_F64, LANES)
_I64 = ir.IntType(64)
_I8 = ir.IntType(8)


Piece = tuple[int, int]  # (stream width P, offset in the frame): bars offset … offset+P−1


class _Stream:
    """One doubling stream of one side: ``hist[d]`` holds the vector ``i − lag − d`` at iteration i."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.depth = 1  # how many vectors (from the newest) must be kept
        self.phis: list[Any] = []
        self.hist: list[Any] = []

    def need(self, back: int) -> None:
        """Make the vector ``back`` positions before the newest available."""
        self.depth = max(self.depth, back + 1)


def _lag(width: int) -> int:
    """Vectors by which stream ``width`` (1, 2, 4, 8) trails the input."""
    return width.bit_length() - 1


def _short(a: int, b: int) -> list[Piece]:
    """Cover bars a … b (at most LANES of them) with one or two pieces of one stream."""
    w = 1 << ((b - a + 1).bit_length() - 1)
    return [(w, a)] if w == b - a + 1 else [(w, a), (w, b - w + 1)]


def _cover(a: int, b: int) -> list[Piece]:
    """Pieces covering bars a … b exactly (overlaps allowed), lane-aligned wherever possible."""
    out: list[Piece] = []
    pos = a
    if pos % LANES:
        edge = min(b + 1, pos - pos % LANES + LANES)
        out += _short(pos, edge - 1)
        pos = edge
    while b - pos + 1 >= LANES:
        out.append((LANES, pos))
        pos += LANES
    if pos <= b:
        out += _short(pos, b)
    return out


def _cost(shift: int, windows: list[list[Piece]]) -> int:
    """Vector instructions per side and iteration: stream doublings, lane shuffles, window ops (a
    misaligned view of the raw series is a reload, not a shuffle, and is not counted)."""
    top = max(w for win in windows for w, _ in win)
    built = {(2, 2), (4, 4)} if top > 2 else set()  # shuffles the doublings make anyway
    shuffles = {(w, off % LANES) for win in windows for w, off in win if off % LANES and w > 1}
    doublings = 2 * (top.bit_length() - 1)
    return doublings + len(shuffles - built) + sum(len(win) for win in windows)


def _plan(left: int, right: int, strict: bool) -> tuple[int, list[list[Piece]], int, int]:
    """The frame shift s (the pivot of output lane q is bar q + s), each window's pieces in frame
    coordinates, the output delay D (vectors) and the first output vector."""
    rel = [(-left, right)] if not strict else [(-left, -1), (1, right)]
    best: tuple[int, int, list[list[Piece]]] | None = None
    for shift in range(LANES):
        windows = [_cover(a + shift, b + shift) for a, b in rel]
        cost = _cost(shift, windows)
        if best is None or cost < best[0]:
            best = (cost, shift, windows)
    assert best is not None
    _, shift, windows = best
    delay, first = 0, 0
    for w, off in [piece for win in windows for piece in win] + [(1, shift)]:
        delay = max(delay, off // LANES + (1 if off % LANES else 0) + _lag(w))
        first = max(first, -(off // LANES))
    return shift, windows, delay, first


class _Side:
    """Code generation for one side (highs with max, lows with min) of the scan."""

    def __init__(self, b: ir.IRBuilder, top: int, is_high: bool) -> None:
        self.b = b
        self.is_high = is_high
        self.streams = {w: _Stream(_lag(w)) for w in (1, 2, 4, 8) if w <= top}
        self.data: Any = None  # double* of the side's series
        self.i: Any = None  # the loop counter (vectors)

    def raw(self, vec: Any, off: int) -> Any:
        """The 8 input bars from bar 8·vec + off, by an unaligned load (clamped at the array's start;
        a clamped read only feeds outputs that are never stored). A load port does what would
        otherwise be a lane shuffle on the FP/shuffle units, which are the bottleneck."""
        b = self.b
        pos = b.add(b.mul(vec, ir.Constant(_I64, LANES)), ir.Constant(_I64, off))
        pos = b.select(b.icmp_signed("<", pos, ir.Constant(_I64, 0)), ir.Constant(_I64, 0), pos)
        return b.load(b.bitcast(b.gep(self.data, [pos]), _VEC.as_pointer()), align=8)

    def op(self, x: Any, y: Any) -> Any:
        cmp = self.b.fcmp_ordered(">" if self.is_high else "<", x, y)
        return self.b.select(cmp, x, y)

    def shifted(self, a: Any, nxt: Any, k: int) -> Any:
        """Lanes k … k+7 of the concatenation (a, nxt)."""
        if k == 0:
            return a
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(range(k, k + LANES)))
        return self.b.shuffle_vector(a, nxt, mask)

    def back(self, w: int, off: int, delay: int) -> int:
        """History index of the vector holding frame offset ``off`` of output vector m = i − delay."""
        return delay - self.streams[w].lag - off // LANES

    def at(self, w: int, off: int, delay: int) -> Any:
        if w == 1 and off % LANES:
            return self.raw(self.b.sub(self.i, ir.Constant(_I64, delay)), off)
        hist = self.streams[w].hist
        k = self.back(w, off, delay)
        return self.shifted(hist[k], hist[k - 1] if off % LANES else hist[k], off % LANES)

    def window(self, pieces: list[Piece], delay: int) -> Any:
        acc = self.at(*pieces[0], delay)
        for w, off in pieces[1:]:
            acc = self.op(acc, self.at(w, off, delay))
        return acc


def _codegen_scan(context: Any, builder: ir.IRBuilder, sig: Any, args: Any, left: int, right: int,
                  strict: bool) -> Any:
    harr = context.make_array(sig.args[0])(context, builder, value=args[0])
    larr = context.make_array(sig.args[1])(context, builder, value=args[1])
    oarr = context.make_array(sig.args[2])(context, builder, value=args[2])
    n = cgutils.unpack_tuple(builder, harr.shape, 1)[0]  # type: ignore[no-untyped-call]
    hptr = builder.bitcast(harr.data, _VEC.as_pointer())
    lptr = builder.bitcast(larr.data, _VEC.as_pointer())
    optr = oarr.data

    shift, windows, delay, first = _plan(left, right, strict)
    top = max(w for win in windows for w, _ in win)
    sides = [_Side(builder, top, True), _Side(builder, top, False)]
    for side in sides:
        st = side.streams
        for w in st:
            if 2 * w in st:
                st[w].need(1)  # the doubling reads the previous vector
        for w, off in [piece for win in windows for piece in win] + [(1, shift)]:
            st[w].need(side.back(w, off, delay))

    nvec = builder.sdiv(n, ir.Constant(_I64, LANES))
    zero_v = ir.Constant(_VEC, [0.0] * LANES)
    mask_t = ir.VectorType(ir.IntType(1), LANES)
    pre = builder.block
    loop = builder.append_basic_block("pivot_loop")
    store_bb = builder.append_basic_block("pivot_store")
    latch = builder.append_basic_block("pivot_latch")
    done = builder.append_basic_block("pivot_done")
    builder.cbranch(builder.icmp_signed(">", nvec, ir.Constant(_I64, 0)), loop, done)

    builder.position_at_end(loop)
    i = builder.phi(_I64, "i")
    i.add_incoming(ir.Constant(_I64, 0), pre)
    nanacc = builder.phi(mask_t, "nan")
    nanacc.add_incoming(ir.Constant(mask_t, [0] * LANES), pre)
    for side in sides:
        for s in side.streams.values():
            s.phis = []
            for _ in range(1, s.depth):
                ph = builder.phi(_VEC)
                ph.add_incoming(zero_v, pre)
                s.phis.append(ph)
    nan_now = nanacc
    for side, ptr, data in zip(sides, (hptr, lptr), (harr.data, larr.data), strict=True):
        side.data, side.i = data, i
        x = builder.load(builder.gep(ptr, [i]), align=8)
        nan_now = builder.or_(nan_now, builder.fcmp_unordered("uno", x, x))
        st = side.streams
        st[1].hist = [x, *st[1].phis]
        w = 1
        while 2 * w in st:
            older, newer = st[w].hist[1], st[w].hist[0]
            prev = builder.sub(i, ir.Constant(_I64, 1))
            nxt = side.raw(prev, 1) if w == 1 else side.shifted(older, newer, w)
            st[2 * w].hist = [side.op(older, nxt), *st[2 * w].phis]
            w *= 2
    builder.branch(store_bb)

    builder.position_at_end(store_bb)
    flags = []
    for side in sides:
        pivot = side.at(1, shift, delay)
        ge, gt = (">=", ">") if side.is_high else ("<=", "<")
        if not strict:
            flags.append(builder.fcmp_ordered(ge, pivot, side.window(windows[0], delay)))
        else:
            lft = builder.fcmp_ordered(gt, pivot, side.window(windows[0], delay))
            rgt = builder.fcmp_ordered(ge, pivot, side.window(windows[1], delay))
            flags.append(builder.and_(lft, rgt))
    hi, lo = flags
    i8v = ir.VectorType(_I8, LANES)
    # −1 for a low; where a high: 1 − that (1, or 2 for both) — one mask move and one masked subtract
    low8 = builder.sext(lo, i8v)
    val = builder.select(hi, builder.sub(ir.Constant(i8v, [1] * LANES), low8), low8)
    m = builder.sub(i, ir.Constant(_I64, delay))
    with builder.if_then(builder.icmp_signed(">=", m, ir.Constant(_I64, first)), likely=True):
        pos = builder.add(builder.mul(m, ir.Constant(_I64, LANES)), ir.Constant(_I64, shift))
        builder.store(val, builder.bitcast(builder.gep(optr, [pos]), i8v.as_pointer()), align=1)
    builder.branch(latch)

    builder.position_at_end(latch)
    nxt = builder.add(i, ir.Constant(_I64, 1))
    i.add_incoming(nxt, latch)
    nanacc.add_incoming(nan_now, latch)
    for side in sides:
        for s in side.streams.values():
            for d, ph in enumerate(s.phis):
                ph.add_incoming(s.hist[d], latch)
    builder.cbranch(builder.icmp_signed("<", nxt, nvec), loop, done)

    builder.position_at_end(done)
    nan_phi = builder.phi(mask_t)
    nan_phi.add_incoming(ir.Constant(mask_t, [0] * LANES), pre)
    nan_phi.add_incoming(nan_now, latch)
    any_nan = builder.zext(builder.bitcast(nan_phi, ir.IntType(LANES)), _I64)
    lo_p = ir.Constant(_I64, LANES * first + shift)
    hi_p = builder.add(builder.mul(builder.sub(nvec, ir.Constant(_I64, delay)), ir.Constant(_I64, LANES)),
                       ir.Constant(_I64, shift))
    return context.make_tuple(builder, sig.return_type, [any_nan, lo_p, hi_p])


@intrinsic
def pivot_scan(typingctx: Any, h: Any, low: Any, out: Any, left: Any, right: Any, strict: Any) -> Any:
    """``(nan, p_lo, p_hi)``: flags of pivots p_lo ≤ p < p_hi written to ``out``; ``nan`` ≠ 0 when
    a NaN was seen (then ``out`` is not valid). ``left``, ``right``, ``strict`` must be literals."""
    if not all(isinstance(t, (types.IntegerLiteral, types.BooleanLiteral)) for t in (left, right, strict)):
        return None
    lv, rv, sv = left.literal_value, right.literal_value, bool(strict.literal_value)
    sig = types.UniTuple(types.int64, 3)(h, low, out, left, right, strict)  # type: ignore[no-untyped-call]

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        return _codegen_scan(context, builder, signature, args, lv, rv, sv)

    return sig, codegen


@hot_kernel
def _vector_scan(h: F64, low: F64, out: I8, left: int, right: int, strict: bool) -> tuple[int, int, int]:
    """:func:`pivot_scan`, specialised per (left, right, strict) by ``literally``."""
    return pivot_scan(h, low, out, literally(left), literally(right), literally(strict))  # type: ignore[call-arg]


_VECTOR_SCANS: dict[tuple[int, int, bool], Callable[..., tuple[int, int, int]]] = {}


def vector_scan(left: int, right: int, strict: bool) -> Callable[..., tuple[int, int, int]]:
    """The compiled scan for these window lengths: ``fn(h, low, out, left, right, strict)`` returns
    ``(nan, p_lo, p_hi)``. Called without numba's dispatch (a literal-specialised dispatcher
    re-resolves its arguments on every call, ~3 ms). The kernel lives in this module so that numba's
    on-disk cache, which watches only the defining file, is invalidated when the code generator
    changes."""
    key = (left, right, strict)
    fn = _VECTOR_SCANS.get(key)
    if fn is None:
        probe = np.ones(1)
        flags = np.zeros(1, dtype=np.int8)
        _vector_scan(probe, probe, flags, left, right, strict)
        lits = (types.literal(v) for v in (left, right, strict))  # type: ignore[no-untyped-call]
        sig = (*(typeof(a) for a in (probe, probe, flags)), *lits)  # type: ignore[no-untyped-call]
        fn = _vector_scan.overloads[sig].entry_point  # type: ignore[attr-defined]
        _VECTOR_SCANS[key] = fn
    return fn
