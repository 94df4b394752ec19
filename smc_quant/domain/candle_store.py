"""In-memory candle store: bounded per-symbol ring buffers of closed candles, 1m and aggregated.

Pure code. Each symbol keeps its latest ``capacity`` 1m candles in column arrays; 5m/15m/1h/1d bars
are built locally from the closed 1m candles on UTC boundaries (:class:`BarAggregator`) and kept in
rings of their own — a higher-timeframe bar appears only once it is complete, never partially.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from smc_quant.domain.candles import MINUTE_MS, Candle, interval_ms

HIGHER_TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "1h", "1d")
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume")


class Ring:
    """A fixed-capacity ring of candles stored column-wise (open time + 7 float columns)."""

    __slots__ = ("_n", "capacity", "open_time", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.open_time = np.zeros(capacity, dtype=np.int64)
        self.values = np.zeros((capacity, len(FIELDS)), dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def append(self, c: Candle) -> None:
        i = self._n % self.capacity
        self.open_time[i] = c.open_time
        self.values[i] = (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.taker_buy_volume)
        self._n += 1

    @property
    def last_open_time(self) -> int | None:
        return int(self.open_time[(self._n - 1) % self.capacity]) if self._n else None

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Open times and values, oldest first (copies)."""
        n = len(self)
        if self._n <= self.capacity:
            return self.open_time[:n].copy(), self.values[:n].copy()
        start = self._n % self.capacity
        order = np.r_[start : self.capacity, 0:start]
        return self.open_time[order], self.values[order]


class BarAggregator:
    """Builds completed ``interval`` bars from in-order closed 1m candles (UTC-aligned buckets).

    A bar is emitted when its last minute arrives, or when a later bucket starts after a gap; a bar
    whose first minute was not seen (start mid-bucket) is never emitted.
    """

    __slots__ = ("_end", "_start", "_whole", "c", "h", "interval", "l", "length_ms", "n", "o", "q", "symbol",
                 "tq", "tv", "v")

    def __init__(self, symbol: str, interval: str) -> None:
        self.symbol = symbol
        self.interval = interval
        self.length_ms = interval_ms(interval)
        self._start = self._end = -1
        self._whole = False
        self.o = self.h = self.l = self.c = self.v = self.q = self.tv = self.tq = 0.0
        self.n = 0

    def add(self, c: Candle, out: list[Candle]) -> None:
        """Fold one 1m candle in, appending to ``out`` the bars it completes."""
        t = c.open_time
        if t >= self._end:
            if self._end > 0:
                self._emit(out)
            self._start = start = t - t % self.length_ms
            self._end = start + self.length_ms
            self._whole = t == start
            self.o, self.h, self.l, self.c = c.open, c.high, c.low, c.close
            self.v, self.q, self.n = c.volume, c.quote_volume, c.trades
            self.tv, self.tq = c.taker_buy_volume, c.taker_buy_quote_volume
        else:
            if c.high > self.h:
                self.h = c.high
            if c.low < self.l:
                self.l = c.low
            self.c = c.close
            self.v += c.volume
            self.q += c.quote_volume
            self.n += c.trades
            self.tv += c.taker_buy_volume
            self.tq += c.taker_buy_quote_volume
        if t + MINUTE_MS == self._end:
            self._emit(out)

    def _emit(self, out: list[Candle]) -> None:
        if self._whole:
            out.append(Candle(self.symbol, self.interval, self._start, self.o, self.h, self.l, self.c, self.v,
                              self.q, self.n, self.tv, self.tq))
        self._end = -1


class CandleStore:
    """Rings for every symbol and timeframe; ``add`` takes closed 1m candles in order per symbol."""

    def __init__(self, symbols: Iterable[str], capacity: int, timeframes: tuple[str, ...] = HIGHER_TIMEFRAMES):
        self.capacity = capacity
        self.timeframes = timeframes
        self._rings: dict[tuple[str, str], Ring] = {}
        self._aggs: dict[str, list[BarAggregator]] = {}
        for s in symbols:
            self._ensure(s)

    def _ensure(self, symbol: str) -> None:
        if (symbol, "1m") in self._rings:
            return
        self._rings[(symbol, "1m")] = Ring(self.capacity)
        for tf in self.timeframes:
            per = max(16, self.capacity * interval_ms("1m") // interval_ms(tf))
            self._rings[(symbol, tf)] = Ring(per)
        self._aggs[symbol] = [BarAggregator(symbol, tf) for tf in self.timeframes]

    def add(self, c: Candle) -> list[Candle]:
        """Store one closed 1m candle; return the higher-timeframe bars it completed."""
        self._ensure(c.symbol)
        self._rings[(c.symbol, "1m")].append(c)
        completed: list[Candle] = []
        for agg in self._aggs[c.symbol]:
            agg.add(c, completed)
        for bar in completed:
            self._rings[(c.symbol, bar.interval)].append(bar)
        return completed

    def ring(self, symbol: str, interval: str = "1m") -> Ring:
        return self._rings[(symbol, interval)]

    def last_open_time(self, symbol: str) -> int | None:
        ring = self._rings.get((symbol, "1m"))
        return ring.last_open_time if ring else None
