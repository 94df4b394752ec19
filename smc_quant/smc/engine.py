"""SMCEngine entry points: batch over a history and incremental per closed candle.

Incremental, one symbol::

    eng = SymbolEngine(SMCParams())
    events = eng.update(open_time_ms, o, h, l, c, v)   # (k, EV_COLS) float64, new events only

Incremental, many symbols closing in the same minute (one kernel call)::

    bank = EngineBank(["BTCUSDT", "ETHUSDT", ...], SMCParams())
    events = bank.update(rows, open_time, o, h, l, c, v)   # rows: int64 indices into bank.symbols

Batch (backtests, training): ``detect(series, params)`` returns every event of a whole history.
Warm start of a live row from history: ``detect(history, params, state=bank.states[row])`` (or
``FeatureEngineer.batch(history, state=...)``) fills that row in place; live updates then continue
exactly as one batch run would. Bar indices in events count from the first candle fed.
All three run :func:`smc_quant.smc.kernel.symbol_step`, so they agree event for event. Events are
described in :mod:`smc_quant.smc.events`; ``E_KNOWN`` is the base-bar index at whose close the event
became known, and nothing is reported before it. Feed candles in open-time order, closed only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from smc_quant.domain.series import KlineSeries
from smc_quant.errors import DataRejected
from smc_quant.smc._jit import hot_kernel
from smc_quant.smc.events import E_SYM
from smc_quant.smc.kernel import (
    STEP_MAX_EVENTS,
    collect_events,
    event_buffer,
    new_state,
    new_states,
    symbol_step,
)
from smc_quant.smc.params import SMCParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CHUNK_EVENTS = 1 << 16


def expected_events(candles: int) -> int:
    """Rows to reserve for the events of ``candles`` 1m candles: real series make ~1.3 per candle with
    the default parameters, so one growth at most in practice."""
    return candles + candles // 2 + 1024


@hot_kernel
def _run(s: F64, p: F64, ot: I64, o: F64, h: F64, low: F64, c: F64, v: F64, start: int,
         ev: F64, n: int) -> tuple[int, int]:
    """Feed bars from ``start``, events from row ``n``, until done or the buffer could overflow;
    returns (stop, rows filled)."""
    cap = ev.shape[0] - STEP_MAX_EVENTS
    i = start
    while (i < ot.shape[0]) & (n <= cap):
        n = symbol_step(s, p, ot[i], o[i], h[i], low[i], c[i], v[i], ev, n)
        i += 1
    return i, n


@hot_kernel
def _run_bank(states: F64, p: F64, rows: I64, ot: I64, o: F64, h: F64, low: F64, c: F64, v: F64,
              start: int, ev: F64) -> tuple[int, int]:
    """One candle per listed symbol row, from ``start``; returns (stop, events)."""
    n = 0
    cap = ev.shape[0] - STEP_MAX_EVENTS
    i = start
    while (i < rows.shape[0]) & (n <= cap):
        m = symbol_step(states[rows[i]], p, ot[i], o[i], h[i], low[i], c[i], v[i], ev, n)
        ev[n:m, E_SYM] = rows[i]
        n = m
        i += 1
    return i, n


def detect(series: KlineSeries, params: SMCParams | None = None, state: F64 | None = None) -> F64:
    """Every event of a whole history (batch path). ``state`` continues a previous run if given."""
    p = (params or SMCParams()).to_array()
    s = new_state() if state is None else state

    def feed(i: int, ev: F64, n: int) -> tuple[int, int]:
        return _run(s, p, series.open_time, series.open, series.high, series.low, series.close, series.volume,
                    i, ev, n)

    return collect_events(feed, len(series), expected_events(len(series)))


class SymbolEngine:
    """Incremental engine of one symbol: ``update`` per closed candle, O(1) per candle."""

    def __init__(self, params: SMCParams | None = None, state: F64 | None = None) -> None:
        self.params = params or SMCParams()
        self._p = self.params.to_array()
        self.state = new_state() if state is None else state
        self._ev = event_buffer(STEP_MAX_EVENTS + 1)

    def update(self, open_time: int, o: float, h: float, low: float, c: float, v: float) -> F64:
        """Feed one closed candle; returns the events it made known (a copy, possibly empty).

        A non-finite price, high < low or a negative volume raises ``DataRejected`` and leaves the
        state untouched."""
        o, h, low, c, v = float(o), float(h), float(low), float(c), float(v)
        if not (math.isfinite(o + h + low + c + v) and h >= low and v >= 0):
            raise DataRejected("bad_candle", f"open_time={open_time} ohlcv={(o, h, low, c, v)}")
        n = symbol_step(self.state, self._p, int(open_time), o, h, low, c, v, self._ev, 0)
        return self._ev[:n].copy()


class EngineBank:
    """The states of many symbols in one matrix, so a minute's closes update in one kernel call."""

    def __init__(self, symbols: Sequence[str], params: SMCParams | None = None) -> None:
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.params = params or SMCParams()
        self.p = self.params.to_array()
        self.states = new_states(len(self.symbols))
        self._ev = event_buffer(max(CHUNK_EVENTS, 2 * STEP_MAX_EVENTS))

    def add(self, symbols: Sequence[str]) -> list[int]:
        """Rows for symbols new to the bank (a new listing), in fresh state; returns their row numbers (none for a
        symbol already here). The state matrix is reallocated: engines taken with :meth:`engine` before keep
        the old rows and stop sharing them."""
        new = [s for s in dict.fromkeys(symbols) if s not in self.index]
        if not new:
            return []
        first = len(self.symbols)
        self.states = np.ascontiguousarray(np.concatenate([self.states, new_states(len(new))]))
        self.symbols.extend(new)
        self.index.update({s: first + i for i, s in enumerate(new)})
        return list(range(first, first + len(new)))

    def engine(self, symbol: str) -> SymbolEngine:
        """A single-symbol engine sharing this bank's state row (updates write into the bank)."""
        return SymbolEngine(self.params, self.states[self.index[symbol]])

    def update(self, rows: I64, open_time: I64, o: F64, h: F64, low: F64, c: F64, v: F64) -> F64:
        """One closed candle for each listed row; returns the events, ``E_SYM`` = the row.

        Inputs are coerced to int64 / float64 once, so no other dtype ever triggers a new compile."""
        rows, open_time = np.asarray(rows, dtype=np.int64), np.asarray(open_time, dtype=np.int64)
        o, h, low, c, v = (np.asarray(x, dtype=np.float64) for x in (o, h, low, c, v))
        self._check(rows, o, h, low, c, v)
        parts: list[F64] = []
        i = 0
        while i < rows.shape[0]:
            i, n = _run_bank(self.states, self.p, rows, open_time, o, h, low, c, v, i, self._ev)
            parts.append(self._ev[:n].copy())
        return np.concatenate(parts) if parts else self._ev[:0].copy()

    @staticmethod
    def invalid(o: F64, h: F64, low: F64, c: F64, v: F64) -> npt.NDArray[np.bool_]:
        """Which candles :meth:`update` would refuse: a non-finite value, high < low or a negative volume."""
        return ~(np.isfinite(o + h + low + c + v) & (h >= low) & (v >= 0))

    def _check(self, rows: I64, o: F64, h: F64, low: F64, c: F64, v: F64) -> None:
        """Reject the whole call, before any state changes, if a row or a candle is invalid."""
        if rows.shape[0] and (rows.min() < 0 or rows.max() >= len(self.symbols)):
            raise DataRejected("unknown_row", f"rows must be in 0..{len(self.symbols) - 1}")
        bad = self.invalid(o, h, low, c, v)
        if bad.any():
            names = [self.symbols[r] for r in rows[bad]]
            raise DataRejected("bad_candle", f"non-finite, high < low or negative volume: {names}")
