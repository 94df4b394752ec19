"""Small builders for test inputs; each test states only what matters to it."""

from __future__ import annotations

from smc_quant.datasets import KlineSeries, derived_fields
from smc_quant.domain.candles import Candle


def candle_at(series: KlineSeries, i: int, symbol: str | None = None) -> Candle:
    """Row ``i`` of a real series as a closed 1m candle, with the documented derived fields."""
    o, h, low, c, v = (float(series.open[i]), float(series.high[i]), float(series.low[i]),
                       float(series.close[i]), float(series.volume[i]))
    q, n, tb, tq = derived_fields(o, h, low, c, v)
    return Candle(symbol or series.symbol, "1m", int(series.open_time[i]), o, h, low, c, v, q, n, tb, tq)


def candles_of(series: KlineSeries, start: int = 0, stop: int | None = None, symbol: str | None = None) -> list[Candle]:
    """Rows ``start:stop`` of a real series as candles."""
    end = len(series) if stop is None else stop
    return [candle_at(series, i, symbol) for i in range(start, end)]
