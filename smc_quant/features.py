"""FeatureEngineer: one declared feature schema for training and inference, computed from SMC state.

Every feature is a pure function of a symbol's engine state after a closed candle, so the batch path
(a whole history, one row per candle) and the live path (``rows`` of all symbols that closed in a
minute, one kernel call) are the same computation. Warm-up is explicit: a feature whose inputs do not
exist yet (no break, no zone, ATR still warming up, fewer than 64 bars) is NaN, never 0.

Live use (the shard pipeline)::

    fe = FeatureEngineer(SMCParams())
    bank = EngineBank(symbols, fe.params)
    events, X = fe.on_close(bank, rows, open_time, o, h, l, c, v)   # X: (len(rows), N_FEATURES)
    brk = fe.break_times(bank.states, rows)   # open time of each row's latest 1m break (metadata)

Batch use: ``X, events = fe.batch(series)``; ``X[t]`` is exactly the live row after candle t.

``bars_since_*`` count candles fed, not minutes: after a missing candle they differ from the wall-clock
age. A setup's identity therefore uses :meth:`FeatureEngineer.break_times` — the open time of the break
candle itself, kept in the engine state — which is metadata, not a model feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smc_quant.domain.series import KlineSeries
from smc_quant.smc import bars, liquidity, structure, swings
from smc_quant.smc._jit import hot_kernel, jit
from smc_quant.smc.atr import A_VAL
from smc_quant.smc.engine import EngineBank, detect, expected_events
from smc_quant.smc.kernel import (
    M_BOS_T,
    M_CHOCH_T,
    OFF_ATR,
    OFF_FVG_BEAR,
    OFF_FVG_BULL,
    OFF_LIQ,
    OFF_META,
    OFF_OB_BEAR,
    OFF_OB_BULL,
    OFF_RING,
    OFF_ST,
    OFF_SW,
    STEP_MAX_EVENTS,
    TF_SIZE,
    collect_events,
    new_state,
    symbol_step,
)
from smc_quant.smc.params import SMCParams
from smc_quant.smc.zones import nearest

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
WINDOW = bars.RING


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One column of the feature matrix."""

    name: str
    dtype: str
    formula: str


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    """Names, dtypes and order of the feature matrix, with a version to store beside models."""

    version: str
    features: tuple[FeatureSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def __len__(self) -> int:
        return len(self.features)


def _f(name: str, formula: str) -> FeatureSpec:
    return FeatureSpec(name, "float64", formula)


FEATURE_SCHEMA = FeatureSchema("smc-features/1", (
    _f("trend_1m", "structure trend on 1m: +1 after a bullish BOS/CHoCH, −1 after a bearish; NaN before"),
    _f("trend_5m", "same on completed 5m bars"),
    _f("trend_15m", "same on completed 15m bars"),
    _f("trend_1h", "same on completed 1h bars"),
    _f("bars_since_bos", "t − bar of the last 1m BOS (either direction); NaN before the first"),
    _f("bars_since_choch", "t − bar of the last 1m CHoCH; NaN before the first"),
    _f("bull_fvg_dist_atr", "signed distance close − nearest edge of the closest active bullish 1m FVG "
                            "(0 inside), / ATR; NaN when none or ATR warming up"),
    _f("bear_fvg_dist_atr", "same for the closest active bearish 1m FVG"),
    _f("bull_ob_dist_atr", "same for the closest active bullish 1m order block"),
    _f("bear_ob_dist_atr", "same for the closest active bearish 1m order block"),
    _f("bars_since_sweep_high", "t − bar of the last buy-side sweep (wick above an equal-highs pool, close "
                                "back below); NaN before the first"),
    _f("bars_since_sweep_low", "t − bar of the last sell-side sweep; NaN before the first"),
    _f("atr_pct", "100 · ATR14(1m) / close"),
    _f("ret_1", "ln(c_t / c_{t−1}); NaN for t < 1"),
    _f("ret_5", "ln(c_t / c_{t−5}); NaN for t < 5"),
    _f("ret_15", "ln(c_t / c_{t−15}); NaN for t < 15"),
    _f("volume_z", "(v_t − mean(v over the last 64 bars)) / std (population); NaN for < 64 bars or std 0"),
    _f("range_pos", "(c_t − min low) / (max high − min low) over the last 64 bars; NaN for < 64 bars or "
                    "a flat range"),
    _f("swing_pos", "(c_t − last confirmed swing low) / (last swing high − last swing low); NaN when "
                    "either is unknown or they are equal"),
))
N_FEATURES = len(FEATURE_SCHEMA)


@jit
def _since(now: float, then: float) -> float:
    return now - then  # NaN stays NaN


@jit
def _window_stats(s: F64, r: int) -> tuple[float, float, float, float]:
    """(mean v, std v, max h, min l) over the whole ring (the last ``WINDOW`` bars).

    Four interleaved accumulators keep the loops short of the add latency chain.
    """
    v, hh, ll = r + bars.B_V, r + bars.B_H, r + bars.B_L
    a0 = a1 = a2 = a3 = 0.0
    hi0 = hi1 = -np.inf
    lo0 = lo1 = np.inf
    for k in range(0, WINDOW, 4):
        a0 += s[v + k]
        a1 += s[v + k + 1]
        a2 += s[v + k + 2]
        a3 += s[v + k + 3]
        hi0 = max(hi0, max(s[hh + k], s[hh + k + 1]))
        hi1 = max(hi1, max(s[hh + k + 2], s[hh + k + 3]))
        lo0 = min(lo0, min(s[ll + k], s[ll + k + 1]))
        lo1 = min(lo1, min(s[ll + k + 2], s[ll + k + 3]))
    mean = ((a0 + a1) + (a2 + a3)) / WINDOW
    q0 = q1 = q2 = q3 = 0.0
    for k in range(0, WINDOW, 4):
        d0 = s[v + k] - mean
        d1 = s[v + k + 1] - mean
        d2 = s[v + k + 2] - mean
        d3 = s[v + k + 3] - mean
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
    return mean, np.sqrt(((q0 + q1) + (q2 + q3)) / WINDOW), max(hi0, hi1), min(lo0, lo1)


@jit
def _ratio(num: float, den: float) -> float:
    return num / den if den != 0.0 else np.nan


@jit
def _ret(s: F64, r: int, c: float, lag: int) -> float:
    if bars.count(s, r) <= lag:
        return np.nan
    return float(np.log(_ratio(c, bars.at(s, r, bars.B_C, lag))))


@jit
def feature_row(s: F64, out: F64) -> None:
    """Write the features of a symbol state (after its latest candle) into ``out``."""
    r = OFF_RING
    t = float(bars.count(s, r) - 1)
    c = bars.at(s, r, bars.B_C, 0)
    atr = s[OFF_ATR + A_VAL]
    st = OFF_ST
    for k in range(4):
        out[k] = structure.trend(s, k * TF_SIZE + st)
    out[4] = _since(t, s[st + structure.ST_LAST_BOS])
    out[5] = _since(t, s[st + structure.ST_LAST_CHOCH])
    out[6] = _ratio(nearest(s, OFF_FVG_BULL, c), atr)
    out[7] = _ratio(nearest(s, OFF_FVG_BEAR, c), atr)
    out[8] = _ratio(nearest(s, OFF_OB_BULL, c), atr)
    out[9] = _ratio(nearest(s, OFF_OB_BEAR, c), atr)
    out[10] = _since(t, s[OFF_LIQ + liquidity.LAST_SWEEP])
    out[11] = _since(t, s[OFF_LIQ + liquidity.SIDE + liquidity.LAST_SWEEP])
    out[12] = 100.0 * _ratio(atr, c)
    out[13] = _ret(s, r, c, 1)
    out[14] = _ret(s, r, c, 5)
    out[15] = _ret(s, r, c, 15)
    out[16] = np.nan
    out[17] = np.nan
    if t + 1 >= WINDOW:
        mean, std, hi, lo = _window_stats(s, r)
        out[16] = _ratio(bars.at(s, r, bars.B_V, 0) - mean, std)
        out[17] = _ratio(c - lo, hi - lo)
    lo_sw = s[OFF_SW + swings.SW_LO_LVL]
    out[18] = _ratio(c - lo_sw, s[OFF_SW + swings.SW_HI_LVL] - lo_sw)


@hot_kernel
def _pipeline(s: F64, p: F64, ot: I64, o: F64, h: F64, low: F64, c: F64, v: F64, start: int,
              ev: F64, n: int, x: F64) -> tuple[int, int]:
    """Step every bar from ``start`` (events from row ``n``) and write its feature row; stop before the
    buffer can overflow."""
    cap = ev.shape[0] - STEP_MAX_EVENTS
    i = start
    while (i < ot.shape[0]) & (n <= cap):
        n = symbol_step(s, p, ot[i], o[i], h[i], low[i], c[i], v[i], ev, n)
        feature_row(s, x[i])
        i += 1
    return i, n


@hot_kernel
def _row(state: F64, x: F64) -> None:
    feature_row(state, x)


@hot_kernel
def _rows(states: F64, rows: I64, x: F64) -> None:
    for i in range(rows.shape[0]):
        feature_row(states[rows[i]], x[i])


class FeatureEngineer:
    """Feature rows of :data:`FEATURE_SCHEMA` from SMC engine state, batch or per minute close."""

    schema = FEATURE_SCHEMA

    def __init__(self, params: SMCParams | None = None) -> None:
        self.params = params or SMCParams()
        self._p = self.params.to_array()

    def batch(self, series: KlineSeries, state: F64 | None = None) -> tuple[F64, F64]:
        """(features, events) of a whole history: row t is the live row after candle t."""
        s = new_state() if state is None else state
        x = np.empty((len(series), N_FEATURES))

        def feed(i: int, ev: F64, n: int) -> tuple[int, int]:
            return _pipeline(s, self._p, series.open_time, series.open, series.high, series.low, series.close,
                             series.volume, i, ev, n, x)

        return x, collect_events(feed, len(series), expected_events(len(series)))

    def batch_many(self, series: Sequence[KlineSeries], threads: int = 2) -> list[tuple[F64, F64]]:
        """:meth:`batch` of many symbols on ``threads`` threads (the kernels release the GIL)."""
        if threads <= 1:
            return [self.batch(s) for s in series]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(self.batch, series))

    def row(self, state: F64) -> F64:
        """The current feature row of one symbol state (e.g. ``SymbolEngine.state``)."""
        x = np.empty(N_FEATURES)
        _row(state, x)
        return x

    def rows(self, states: F64, rows: I64) -> F64:
        """Current feature rows of the listed symbol rows of a state matrix, in one kernel call."""
        rows = np.asarray(rows, dtype=np.int64)
        x = np.empty((rows.shape[0], N_FEATURES))
        _rows(states, rows, x)
        return x

    @staticmethod
    def break_times(states: F64, rows: I64) -> F64:
        """Open time (ms, as float64) of the latest 1m structure break — BOS or CHoCH, the bar that
        ``min(bars_since_bos, bars_since_choch)`` counts from — of each listed state row; NaN before the
        first break. Unlike ``open_time − bars × 60 000`` it stays exact when candles are missing."""
        s = np.atleast_2d(states)[np.asarray(rows, dtype=np.int64)]
        return np.fmax(s[:, OFF_META + M_BOS_T], s[:, OFF_META + M_CHOCH_T])

    def on_close(self, bank: EngineBank, rows: I64, open_time: I64, o: F64, h: F64, low: F64, c: F64,
                 v: F64) -> tuple[F64, F64]:
        """Feed one closed candle per listed row and return (events, feature rows) of that minute."""
        events = bank.update(rows, open_time, o, h, low, c, v)
        return events, self.rows(bank.states, np.asarray(rows, dtype=np.int64))


def warm_up(params: SMCParams | None = None) -> None:
    """Compile (or load from the on-disk cache) every kernel the batch and live paths use.

    Call once at start-up or image build so the first real candle does not pay numba's compile
    time (tens of seconds cold). The candles fed here are a flat placeholder, used for nothing else.
    """
    n = 3
    flat = np.ones(n)
    series = KlineSeries("WARMUP", np.arange(n, dtype=np.int64) * 60_000, flat, flat, flat, flat, flat)
    fe = FeatureEngineer(params)
    fe.batch(series)
    detect(series, fe.params)
    bank = EngineBank(["WARMUP"], fe.params)
    rows = np.zeros(1, dtype=np.int64)
    fe.on_close(bank, rows, series.open_time[:1], flat[:1], flat[:1], flat[:1], flat[:1], flat[:1])
    engine = bank.engine("WARMUP")
    engine.update(60_000, 1.0, 1.0, 1.0, 1.0, 1.0)
    fe.row(engine.state)


__all__ = ["FEATURE_SCHEMA", "N_FEATURES", "FeatureEngineer", "FeatureSchema", "FeatureSpec", "warm_up"]
