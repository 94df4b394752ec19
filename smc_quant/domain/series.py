"""A symbol's candle history as column arrays: the input of every batch computation (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class KlineSeries:
    """One symbol's candles as column arrays (open_time in ms, OHLCV as float64)."""

    symbol: str
    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def slice(self, start: int, stop: int) -> KlineSeries:
        """Rows ``start:stop`` as a new series."""
        return KlineSeries(
            self.symbol,
            self.open_time[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )
