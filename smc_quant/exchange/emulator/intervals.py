"""Klines longer than 1m (3m … 1d), aggregated from the real 1m candles as Binance builds them.

A window opens at a multiple of its length (UTC epoch aligned); its kline is the first open, the
extremes, the last close and the sums of volumes, trades and derived fields of the 1m candles in it.
"""

from __future__ import annotations

from smc_quant.domain.candles import INTERVAL_MS, MINUTE_MS
from smc_quant.exchange.emulator.frames import Kline, merge, with_derived
from smc_quant.exchange.emulator.market import Market


def parse_stream(stream: str) -> tuple[str, str] | None:
    """``("btcusdt", "5m")`` for ``"btcusdt@kline_5m"``; ``None`` for other streams or intervals."""
    symbol, sep, kind = stream.partition("@kline_")
    return (symbol, kind) if sep and kind in INTERVAL_MS else None


class Aggregator:
    """Aggregates of closed 1m candles, with one cached window per (series, interval).

    The replay walks forward, so extending the cached window by the minutes since the last call keeps
    each step O(1); any other request (REST) recomputes its window.
    """

    def __init__(self, market: Market) -> None:
        self._market = market
        self._cache: dict[tuple[str, int], tuple[int, int, Kline | None]] = {}

    def closed(self, src: str, length_ms: int, window_open: int, upto: int) -> Kline | None:
        """The real 1m candles of ``src`` with open time in ``[window_open, upto)`` as one kline."""
        key = (src, length_ms)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == window_open and hit[1] <= upto:
            t, agg = hit[1], hit[2]
        else:
            t, agg = window_open, None
        market = self._market
        while t < upto:
            i = market.index(src, t)
            if i is not None:
                agg = merge(agg, with_derived(market.bar(src, i)))
            t += MINUTE_MS
        self._cache[key] = (window_open, upto, agg)
        return agg
