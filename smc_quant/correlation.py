"""Correlation of 1m returns between symbols: the risk manager's guard against taking one bet twice.

Alts move with each other: three longs on three correlated symbols are one trade at three times the risk.
The executor asks for ρ between a new signal's symbol and each open position's symbol, and
:meth:`smc_quant.risk.RiskManager.evaluate` refuses the signal (``correlated``) when one of them is the
same bet: ρ · dir(new) · dir(open) ≥ ``max_correlation`` (a long and a short on symbols that move together
hedge each other and pass).

Definition, for a signal on the candle opened at t (``open_time``)::

    window  = the candles opened at E − minutes·1m … E, with E = t − 1m
    r_k     = ln(c_k / c_{k−1}) for each minute k of the window whose candle and the one before are present
    ρ(A, B) = Pearson correlation of the pairs (r_A,k, r_B,k) over the minutes k present for both

The window ends one minute before the signal's candle: by the time a signal is handled every shard has
delivered that minute, so ρ does not depend on which shard's candle of minute t reached the executor first
(and the service computes the same figure as the backtest). Fewer than ``min_overlap`` pairs, or a flat
series, give no figure (``None``): the pair is not counted. Causal: only candles opened before t.

Two sources with one computation: :class:`ReturnWindows` (the service: a ring of recent closes per symbol,
filled at start from the warm start, then fed by every closed candle) and :class:`SeriesReturns` (the
backtest: the whole history in memory).
Pure: numpy only (and the domain's MINUTE_MS).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from smc_quant.domain.candles import MINUTE_MS

__all__ = ["MINUTE_MS", "ReturnSource", "ReturnWindows", "SeriesReturns", "correlation", "dense_closes"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class ReturnSource(Protocol):
    def correlations(self, symbol: str, others: Iterable[str], open_time: int) -> dict[str, float]: ...


def dense_closes(open_times: I64, closes: F64, end_open_time: int, minutes: int) -> F64:
    """The closes of the ``minutes + 1`` candles opened at ``end − minutes·1m … end``, NaN where a candle
    is missing (``open_times`` sorted ascending)."""
    start = end_open_time - minutes * MINUTE_MS
    lo = int(np.searchsorted(open_times, start, "left"))
    hi = int(np.searchsorted(open_times, end_open_time, "right"))
    out = np.full(minutes + 1, np.nan)
    offset = open_times[lo:hi] - start
    on_grid = offset % MINUTE_MS == 0
    out[offset[on_grid] // MINUTE_MS] = closes[lo:hi][on_grid]
    return out


def correlation(a: F64, b: F64, min_overlap: int) -> float | None:
    """Pearson correlation of the 1m log returns of two aligned close windows (see the module docstring),
    or ``None`` with fewer than ``min_overlap`` paired returns or a flat series."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ra, rb = np.diff(np.log(a)), np.diff(np.log(b))
    paired = np.isfinite(ra) & np.isfinite(rb)
    if int(paired.sum()) < max(min_overlap, 2):
        return None
    x, y = ra[paired], rb[paired]
    x, y = x - x.mean(), y - y.mean()
    sxx, syy = float(x @ x), float(y @ y)
    if sxx <= 0.0 or syy <= 0.0:
        return None
    return max(-1.0, min(1.0, float(x @ y) / math.sqrt(sxx * syy)))


class _Returns:
    """ρ of one symbol against others at a signal's candle; subclasses say where the closes come from."""

    def __init__(self, minutes: int, min_overlap: int | None) -> None:
        if minutes < 2:
            raise ValueError("the correlation window needs at least 2 minutes")
        self.minutes = minutes
        self.min_overlap = minutes // 2 if min_overlap is None else min_overlap

    def window(self, symbol: str, end_open_time: int) -> F64 | None:
        raise NotImplementedError

    def correlations(self, symbol: str, others: Iterable[str], open_time: int) -> dict[str, float]:
        """ρ(symbol, other) for every other symbol that has a figure (module docstring)."""
        end = open_time - MINUTE_MS
        mine = self.window(symbol, end)
        out: dict[str, float] = {}
        if mine is None:
            return out
        for other in others:
            theirs = self.window(other, end)
            rho = None if theirs is None else correlation(mine, theirs, self.min_overlap)
            if rho is not None:
                out[other] = rho
        return out


class ReturnWindows(_Returns):
    """The service's source: the last ``minutes`` + a few closes of every symbol, in a ring per symbol
    (indexed by minute, so a late or repeated candle lands in its own slot; an older one never overwrites
    a newer one). ~2 KB per symbol at 120 minutes."""

    SLACK = 8
    """Minutes kept beyond the window: the candles of the signal's own minute and any that arrive early."""

    def __init__(self, minutes: int = 120, min_overlap: int | None = None) -> None:
        super().__init__(minutes, min_overlap)
        self.size = minutes + 1 + self.SLACK
        self._minute: dict[str, I64] = {}
        self._close: dict[str, F64] = {}

    def record(self, symbol: str, open_time: int, close: float) -> None:
        """One closed 1m candle's close (open times off the minute grid are ignored)."""
        if open_time % MINUTE_MS:
            return
        minute = open_time // MINUTE_MS
        stamps = self._minute.get(symbol)
        if stamps is None:
            stamps = self._minute[symbol] = np.full(self.size, -1, dtype=np.int64)
            self._close[symbol] = np.full(self.size, np.nan)
        slot = minute % self.size
        if minute > stamps[slot]:
            stamps[slot] = minute
            self._close[symbol][slot] = close

    def extend(self, symbol: str, open_times: Sequence[int] | I64, closes: Sequence[float] | F64) -> None:
        """Many candles at once, oldest first (e.g. the warm start's): only the newest ring-full are kept."""
        for open_time, close in zip(open_times[-self.size:], closes[-self.size:], strict=True):
            self.record(symbol, int(open_time), float(close))

    def window(self, symbol: str, end_open_time: int) -> F64 | None:
        stamps = self._minute.get(symbol)
        if stamps is None:
            return None
        end = end_open_time // MINUTE_MS
        minutes = np.arange(end - self.minutes, end + 1, dtype=np.int64)
        slots = minutes % self.size
        return np.where(stamps[slots] == minutes, self._close[symbol][slots], np.nan)


class SeriesReturns(_Returns):
    """The backtest's source: each symbol's whole history (sorted open times and closes) in memory; the
    window is cut at the signal's candle, so nothing later is read."""

    def __init__(self, series: Mapping[str, tuple[I64, F64]], minutes: int = 120,
                 min_overlap: int | None = None) -> None:
        super().__init__(minutes, min_overlap)
        self.series = series

    def window(self, symbol: str, end_open_time: int) -> F64 | None:
        s = self.series.get(symbol)
        return None if s is None else dense_closes(s[0], s[1], end_open_time, self.minutes)
