"""Each detector's events equal an independent, plainly written oracle on real 1m candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, read_klines
from smc_quant.smc import SMCParams, atr, detect, engine, fvg, standalone, swings
from smc_quant.smc._pivot_simd import vector_scan
from smc_quant.smc.events import (
    E_BOTTOM,
    E_CONFIRMED,
    E_DIR,
    E_FORMED,
    E_KIND,
    E_TOP,
    K_BOS,
    K_CHOCH,
    K_FVG,
    K_FVG_EXPIRE,
    K_FVG_FILL,
    K_FVG_TOUCH,
    K_OB,
    K_OB_EXPIRE,
    K_OB_INVALID,
    K_OB_TOUCH,
    K_POOL,
    K_POOL_BREAK,
    K_POOL_EXPIRE,
    K_SWEEP,
    K_SWING,
    select,
)
from smc_quant.smc.kernel import STEP_MAX_EVENTS, collect_events, new_state

F64 = npt.NDArray[np.float64]
BASE = SMCParams(n_timeframes=1)


@pytest.fixture(scope="module")
def btc(shared_data: Path) -> KlineSeries:
    """Real BTCUSDT 1m candles (43,199 bars)."""
    return read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz")


@pytest.fixture(scope="module")
def events(btc: KlineSeries) -> F64:
    """Base-timeframe events of BTCUSDT with default parameters."""
    return detect(btc, BASE)


def _pivots(x: F64, left: int, right: int, strict: bool) -> npt.NDArray[np.int64]:
    w = sliding_window_view(x, left + right + 1)
    mid, lmax, rmax = w[:, left], w[:, :left].max(axis=1), w[:, left + 1:].max(axis=1)
    ok = ((mid > lmax) if strict else (mid >= lmax)) & (mid >= rmax)
    return np.flatnonzero(ok) + left


@pytest.mark.parametrize(("left", "right", "strict"), [(5, 5, True), (4, 5, False), (10, 3, True)])
def test_swings_equal_sliding_window_pivots(btc: KlineSeries, left: int, right: int, strict: bool) -> None:
    """Swing events are exactly the sliding-window pivots, confirmed ``right`` bars after the pivot."""
    p = SMCParams(swing_left=left, swing_right=right, swing_strict_left=strict, n_timeframes=1)
    sw = select(detect(btc, p), K_SWING)
    for sgn, x in ((1, btc.high), (-1, -btc.low)):
        got = sw[sw[:, E_DIR] == sgn]
        want = _pivots(x, left, right, strict)
        np.testing.assert_array_equal(got[:, E_FORMED], want)
        np.testing.assert_array_equal(got[:, E_CONFIRMED], want + right)
        np.testing.assert_array_equal(got[:, E_TOP], sgn * x[want])
    flags = swings.batch(btc.high, btc.low, left, right, strict)
    assert int(((flags == 1) | (flags == 2)).sum()) == int((sw[:, E_DIR] == 1).sum())


def _flag_oracle(h: F64, low: F64, left: int, right: int, strict: bool) -> npt.NDArray[np.int8]:
    out = np.zeros(h.shape[0], dtype=np.int8)
    if h.shape[0] > left + right:
        hi = np.zeros(h.shape[0], dtype=bool)
        lo = np.zeros(h.shape[0], dtype=bool)
        hi[_pivots(h, left, right, strict)] = True
        lo[_pivots(-low, left, right, strict)] = True
        out[:] = hi.astype(np.int8) - lo + 2 * (hi & lo)
    return out


@pytest.mark.parametrize(("left", "right", "strict"), [(5, 5, True), (9, 10, False), (4, 5, False), (10, 3, True),
                                                      (1, 1, True), (2, 1, False), (3, 40, False),
                                                      (16, 31, True), (47, 47, True), (60, 70, False)])
def test_swing_flags_equal_sliding_window_pivots(btc: KlineSeries, left: int, right: int, strict: bool) -> None:
    """The vectorised ``swings.batch`` gives exactly the window-rule flags: on real candles, on every
    length around its vector width and output delay (the scalar edges), on data full of ties, on
    negative and zero prices; with NaN prices it falls back to the bar-by-bar comparisons of
    ``swings.pivot``."""
    np.testing.assert_array_equal(swings.batch(btc.high, btc.low, left, right, strict),
                                  _flag_oracle(btc.high, btc.low, left, right, strict))
    w = left + right
    for n in sorted({0, 1, w, w + 1, *range(w + 2, w + 60, 3), 8 * (w // 8 + 4) - 1, 1023, 1024, 1025, 3000}):
        h, low = btc.high[:n], btc.low[:n]
        np.testing.assert_array_equal(swings.batch(h, low, left, right, strict),
                                      _flag_oracle(h, low, left, right, strict), err_msg=str(n))
    rng = np.random.default_rng(left * 100 + right)
    h = rng.integers(0, 4, 5000).astype(np.float64)
    low = h - rng.integers(0, 3, 5000)
    np.testing.assert_array_equal(swings.batch(h, low, left, right, strict), _flag_oracle(h, low, left, right, strict))
    np.testing.assert_array_equal(swings.batch(h - 2, low - 2, left, right, strict),
                                  _flag_oracle(h - 2, low - 2, left, right, strict))
    h[rng.integers(0, 5000, 20)] = np.nan
    low[rng.integers(0, 5000, 20)] = np.nan
    want = np.zeros(h.shape[0], dtype=np.int8)
    swings._scan_exact(h, low, left, right, strict, want, 0, h.shape[0])
    np.testing.assert_array_equal(swings.batch(h, low, left, right, strict), want)


@pytest.mark.parametrize(("left", "right", "strict"), [(9, 10, False), (5, 5, True), (47, 47, True)])
def test_swing_vector_scan_decides_all_but_the_edges(btc: KlineSeries, left: int, right: int, strict: bool) -> None:
    """The SIMD scan itself (not its scalar fallback) decides every pivot but a few vectors at each end,
    with the oracle's flags, and reports a NaN instead of deciding."""
    h, low = btc.high, btc.low
    n = h.shape[0]
    out = np.full(n, 7, dtype=np.int8)
    nan, p_lo, p_hi = vector_scan(left, right, strict)(h, low, out, left, right, strict)
    assert nan == 0
    assert left <= p_lo <= left + 16
    assert n - right - 8 * (max(left, right) // 8 + 4) <= p_hi <= n - right
    np.testing.assert_array_equal(out[p_lo:p_hi], _flag_oracle(h, low, left, right, strict)[p_lo:p_hi])
    assert (out[:p_lo] == 7).all() and (out[p_hi:] == 7).all()  # the edges are left to the caller
    h = h.copy()
    h[n // 2] = np.nan
    assert vector_scan(left, right, strict)(h, low, out, left, right, strict)[0] != 0


@pytest.mark.parametrize("colour", [True, False])
def test_fvg_equals_three_candle_gap_rule(btc: KlineSeries, colour: bool) -> None:
    """FVG events are exactly the three-candle gaps (middle-candle colour optional), stamped on bar 3."""
    h, low, body = btc.high, btc.low, btc.close - btc.open
    bull = np.flatnonzero((low[2:] > h[:-2]) & ((body[1:-1] > 0) | (not colour))) + 2
    bear = np.flatnonzero((h[2:] < low[:-2]) & ((body[1:-1] < 0) | (not colour))) + 2
    ev = select(detect(btc, SMCParams(fvg_colour=colour, n_timeframes=1)), K_FVG)
    for sgn, idx, top, bot in ((1, bull, low[bull], h[bull - 2]), (-1, bear, low[bear - 2], h[bear])):
        got = ev[ev[:, E_DIR] == sgn]
        np.testing.assert_array_equal(got[:, E_CONFIRMED], idx)
        np.testing.assert_array_equal(got[:, E_FORMED], idx - 1)
        np.testing.assert_array_equal(got[:, E_TOP], top)
        np.testing.assert_array_equal(got[:, E_BOTTOM], bot)
    flags = fvg.batch(btc.open, h, low, btc.close, colour)
    assert int((flags != 0).sum()) == ev.shape[0]


def test_fvg_minimum_size_in_atr(btc: KlineSeries) -> None:
    """With fvg_min_atr the gaps are exactly those at least that many ATRs wide (none in warm-up)."""
    a = atr.batch(btc.high, btc.low, btc.close, 14)
    ev = select(detect(btc, SMCParams(fvg_min_atr=0.25, n_timeframes=1)), K_FVG)
    gaps = select(detect(btc, BASE), K_FVG)
    wide = gaps[(gaps[:, E_TOP] - gaps[:, E_BOTTOM]) >= 0.25 * a[gaps[:, E_CONFIRMED].astype(int)]]
    assert 0 < ev.shape[0] < gaps.shape[0]
    np.testing.assert_array_equal(ev[:, [E_DIR, E_CONFIRMED, E_TOP, E_BOTTOM]],
                                  wide[:, [E_DIR, E_CONFIRMED, E_TOP, E_BOTTOM]])


def test_atr_is_wilder(btc: KlineSeries) -> None:
    """ATR equals Wilder's recursion written in plain Python (NaN during the 13-bar warm-up)."""
    h, low, c = btc.high[:3000].tolist(), btc.low[:3000].tolist(), btc.close[:3000].tolist()
    tr = [h[0] - low[0]] + [max(h[i] - low[i], abs(h[i] - c[i - 1]), abs(low[i] - c[i - 1]))
                            for i in range(1, 3000)]
    want = [float("nan")] * 13 + [sum(tr[:14]) / 14]
    for i in range(14, 3000):
        want.append((want[-1] * 13 + tr[i]) / 14)
    np.testing.assert_array_equal(atr.batch(btc.high[:3000], btc.low[:3000], btc.close[:3000], 14), want)


def _structure_oracle(s: KlineSeries, sw: F64) -> list[tuple[int, int, int, int, float, float, float]]:
    """(kind, dir, pivot, break bar, level, ob_top, ob_bottom) by a direct simulation."""
    by_bar: dict[int, list[F64]] = {}
    for e in sw:
        by_bar.setdefault(int(e[E_CONFIRMED]), []).append(e)
    level: dict[int, tuple[float, int, int] | None] = {1: None, -1: None}
    trend, out = 0, []
    for j in range(len(s)):
        for sgn in (1, -1):
            lv = level[sgn]
            if lv is not None and sgn * (s.close[j] - lv[0]) > 0:
                kind = K_CHOCH if trend == -sgn else K_BOS
                lo = s.low if sgn > 0 else -s.high
                seg = lo[lv[1]:j]
                k = lv[1] + len(seg) - 1 - int(np.argmin(seg[::-1]))
                top, bot = s.high[k], s.low[k]
                out.append((kind, sgn, lv[1], j, lv[0], top, bot))
                trend, level[sgn] = sgn, None
        for e in by_bar.get(j, []):
            level[int(e[E_DIR])] = (e[E_TOP], int(e[E_FORMED]), j)
    return out


def test_bos_choch_and_order_blocks_equal_direct_simulation(btc: KlineSeries, events: F64) -> None:
    """BOS/CHoCH on the close and their order blocks equal a direct simulation over the swing events."""
    want = _structure_oracle(btc, select(events, K_SWING))
    brk = events[np.isin(events[:, E_KIND], [K_BOS, K_CHOCH])]
    obs = select(events, K_OB)
    got = [(int(b[E_KIND]), int(b[E_DIR]), int(b[E_FORMED]), int(b[E_CONFIRMED]), b[E_TOP], o[E_TOP],
            o[E_BOTTOM]) for b, o in zip(brk, obs, strict=True)]
    assert len(want) > 1000
    assert {w[0] for w in want} == {K_BOS, K_CHOCH}
    assert got == want


def test_fvg_touch_and_fill_are_the_first_bars_reaching_the_gap(btc: KlineSeries, events: F64) -> None:
    """Every gap's touch and fill events sit on the first later bar whose wick reaches its near/far edge."""
    expired = {(int(e[E_DIR]), int(e[E_FORMED])): int(e[E_CONFIRMED]) for e in select(events, K_FVG_EXPIRE)}
    got = {(int(e[E_KIND]), int(e[E_DIR]), int(e[E_FORMED])): int(e[E_CONFIRMED])
           for e in events[np.isin(events[:, E_KIND], [K_FVG_TOUCH, K_FVG_FILL])]}
    checked = 0
    for g in select(events, K_FVG)[:4000]:
        d, f, t = int(g[E_DIR]), int(g[E_FORMED]), int(g[E_CONFIRMED])
        end = expired.get((d, f), len(btc))
        near, far = (btc.low[t + 1:end] <= g[E_TOP], btc.low[t + 1:end] <= g[E_BOTTOM]) if d > 0 else \
            (btc.high[t + 1:end] >= g[E_BOTTOM], btc.high[t + 1:end] >= g[E_TOP])
        for kind, hit in ((K_FVG_TOUCH, near), (K_FVG_FILL, far)):
            want = t + 1 + int(np.argmax(hit)) if hit.any() else None
            assert got.get((kind, d, f)) == want
            checked += 1
    assert checked == 8000


def test_sweeps_wick_through_and_close_back_inside(btc: KlineSeries, events: F64) -> None:
    """A sweep's bar wicks beyond the pool and closes back inside; a break closes beyond it."""
    for kind, inside in ((K_SWEEP, True), (K_POOL_BREAK, False)):
        ev = select(events, kind)
        assert ev.shape[0] > 10
        j, sgn, lvl = ev[:, E_CONFIRMED].astype(int), ev[:, E_DIR], ev[:, E_TOP]
        wick = np.where(sgn > 0, btc.high[j] - lvl, lvl - btc.low[j])
        back = np.where(sgn > 0, btc.close[j] < lvl, btc.close[j] > lvl)
        assert (wick > 0).all()
        assert (back == inside).all()


def test_params_are_validated() -> None:
    """Impossible parameters are rejected with a clear error."""
    with pytest.raises(ValueError, match="swing"):
        SMCParams(swing_left=0)
    with pytest.raises(ValueError, match="n_timeframes"):
        SMCParams(n_timeframes=9)


def test_switched_off_detectors_emit_nothing_and_leave_the_rest_unchanged(btc: KlineSeries,
                                                                          events: F64) -> None:
    """Turning structure/OB/FVG/liquidity off removes exactly their events; swings stay identical."""
    only = detect(btc, SMCParams(n_timeframes=1, structure=False, fvgs=False, liquidity=False))
    assert set(np.unique(only[:, E_KIND]).astype(int)) == {K_SWING}
    np.testing.assert_array_equal(only, select(events, K_SWING))
    no_ob = detect(btc, SMCParams(n_timeframes=1, order_blocks=False))
    kinds = set(np.unique(no_ob[:, E_KIND]).astype(int))
    assert K_OB not in kinds
    assert {K_BOS, K_CHOCH, K_FVG, K_SWEEP} <= kinds
    brk = np.isin(events[:, E_KIND], [K_BOS, K_CHOCH])
    np.testing.assert_array_equal(no_ob[np.isin(no_ob[:, E_KIND], [K_BOS, K_CHOCH])], events[brk])


def test_standalone_structure_and_liquidity_kernels_equal_the_engine(btc: KlineSeries, events: F64) -> None:
    """Given the swing flags, the stand-alone structure/OB and liquidity kernels emit the engine's events."""
    flags = swings.batch(btc.high, btc.low, BASE.swing_left, BASE.swing_right, True)
    a = atr.batch(btc.high, btc.low, btc.close, 14)
    kinds = {
        "structure": [K_BOS, K_CHOCH, K_OB, K_OB_TOUCH, K_OB_INVALID, K_OB_EXPIRE],
        "liquidity": [K_POOL, K_SWEEP, K_POOL_BREAK, K_POOL_EXPIRE],
    }
    got = {
        "structure": standalone.structure_batch(btc.high, btc.low, btc.close, flags, BASE.swing_right, True,
                                                True),
        "liquidity": standalone.liquidity_batch(btc.high, btc.low, btc.close, flags, BASE.swing_right,
                                                a, BASE.liq_tol_atr),
    }
    for name, ks in kinds.items():
        want = events[np.isin(events[:, E_KIND], ks)]
        assert want.shape[0] > 100
        cols = [E_KIND, E_DIR, E_FORMED, E_CONFIRMED, E_TOP, E_BOTTOM]
        np.testing.assert_array_equal(got[name][:, cols], want[:, cols], err_msg=name)


def test_events_are_the_same_when_the_event_buffer_has_to_grow(btc: KlineSeries, events: F64) -> None:
    """``detect`` reserves ~1.5 rows per candle; started from the smallest buffer instead, the run
    doubles it many times and yields the very same events."""
    p, s = BASE.to_array(), new_state()

    def feed(i: int, ev: F64, n: int) -> tuple[int, int]:
        return engine._run(s, p, btc.open_time, btc.open, btc.high, btc.low, btc.close, btc.volume, i, ev, n)

    grown = collect_events(feed, len(btc), 1)
    assert len(grown) > 16 * 2 * STEP_MAX_EVENTS  # it did grow, more than four times
    assert np.array_equal(grown, events, equal_nan=True)
