"""In-memory candle store: bounded per-symbol ring buffers of closed candles, 1m and aggregated.

Pure code. Each symbol keeps its latest ``capacity`` 1m candles in column arrays; 5m/15m/1h/1d bars
are built locally from the closed 1m candles on UTC boundaries (:class:`BarAggregator`) and kept in
rings of their own — a higher-timeframe bar appears only once it is complete, never partially.

``add`` is on the feed's latency path (every symbol's final candle of a minute arrives in one burst),
so a ring row is written with one ``struct.pack_into`` into the numpy buffer rather than numpy item
assignment, and the aggregators' common case (a minute inside the current bucket) is a handful of
local comparisons and sums.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from smc_quant.domain.candles import MINUTE_MS, Candle, interval_ms

HIGHER_TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "1h", "1d")
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume")
_ROW = struct.Struct(f"={len(FIELDS)}d")
_ROW_BYTES = _ROW.size
_pack_row = _ROW.pack_into


class Ring:
    """A fixed-capacity ring of candles stored column-wise (open time + 7 float columns)."""

    __slots__ = ("_n", "_times", "capacity", "open_time", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.open_time = np.zeros(capacity, dtype=np.int64)
        self.values = np.zeros((capacity, len(FIELDS)), dtype=np.float64)
        self._times = self.open_time.data  # a memoryview: item writes skip numpy's scalar conversion
        self._n = 0

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def append(self, c: Candle) -> None:
        n = self._n
        i = n % self.capacity
        self._times[i] = c.open_time
        _pack_row(self.values.data, i * _ROW_BYTES, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                  c.taker_buy_volume)
        self._n = n + 1

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
    whose first minute was not seen (start mid-bucket) is never emitted. Completed bars also go to
    ``ring`` when one is given.
    """

    __slots__ = ("_end", "_last", "_start", "_whole", "c", "h", "interval", "l", "length_ms", "n", "o", "q",
                 "ring", "symbol", "tq", "tv", "v")

    def __init__(self, symbol: str, interval: str, ring: Ring | None = None) -> None:
        self.symbol = symbol
        self.interval = interval
        self.length_ms = interval_ms(interval)
        self.ring = ring
        self._start = self._end = -1
        self._last = -1
        """Open time of the bucket's last minute (``_end - 1m``); -1 when no bucket is open."""
        self._whole = False
        self.o = self.h = self.l = self.c = self.v = self.q = self.tv = self.tq = 0.0
        self.n = 0

    def add(self, c: Candle, out: list[Candle]) -> None:
        """Fold one 1m candle in, appending to ``out`` the bars it completes."""
        t = c.open_time
        if t < self._end:
            h = c.high
            if h > self.h:
                self.h = h
            low = c.low
            if low < self.l:
                self.l = low
            self.c = c.close
            self.v += c.volume
            self.q += c.quote_volume
            self.n += c.trades
            self.tv += c.taker_buy_volume
            self.tq += c.taker_buy_quote_volume
        else:
            if self._end > 0:
                self._emit(out)
            length = self.length_ms
            self._start = start = t - t % length
            self._end = start + length
            self._last = start + length - MINUTE_MS
            self._whole = t == start
            self.o, self.h, self.l, self.c = c.open, c.high, c.low, c.close
            self.v, self.q, self.n = c.volume, c.quote_volume, c.trades
            self.tv, self.tq = c.taker_buy_volume, c.taker_buy_quote_volume
        if t == self._last:
            self._emit(out)

    def _emit(self, out: list[Candle]) -> None:
        if self._whole:
            bar = Candle(self.symbol, self.interval, self._start, self.o, self.h, self.l, self.c, self.v,
                         self.q, self.n, self.tv, self.tq)
            out.append(bar)
            if self.ring is not None:
                self.ring.append(bar)
        self._end = self._last = -1


class CandleStore:
    """Rings for every symbol and timeframe; ``add`` takes closed 1m candles in order per symbol."""

    def __init__(self, symbols: Iterable[str], capacity: int, timeframes: tuple[str, ...] = HIGHER_TIMEFRAMES):
        self.capacity = capacity
        self.timeframes = timeframes
        self._rings: dict[tuple[str, str], Ring] = {}
        self._aggs: dict[str, list[BarAggregator]] = {}
        self._slots: dict[str, tuple[Ring, tuple[BarAggregator, ...]]] = {}
        for s in symbols:
            self._ensure(s)

    def _ensure(self, symbol: str) -> tuple[Ring, tuple[BarAggregator, ...]]:
        slot = self._slots.get(symbol)
        if slot is not None:
            return slot
        ring = self._rings[(symbol, "1m")] = Ring(self.capacity)
        aggs = []
        for tf in self.timeframes:
            per = max(16, self.capacity * interval_ms("1m") // interval_ms(tf))
            tf_ring = self._rings[(symbol, tf)] = Ring(per)
            aggs.append(BarAggregator(symbol, tf, tf_ring))
        self._aggs[symbol] = aggs
        slot = self._slots[symbol] = (ring, tuple(aggs))
        return slot

    def add(self, c: Candle) -> list[Candle]:
        """Store one closed 1m candle; return the higher-timeframe bars it completed (already stored)."""
        slot = self._slots.get(c.symbol) or self._ensure(c.symbol)
        ring, aggs = slot
        ring.append(c)
        completed: list[Candle] = []
        for agg in aggs:
            agg.add(c, completed)
        return completed

    def ring(self, symbol: str, interval: str = "1m") -> Ring:
        return self._rings[(symbol, interval)]

    def last_open_time(self, symbol: str) -> int | None:
        ring = self._rings.get((symbol, "1m"))
        return ring.last_open_time if ring else None
