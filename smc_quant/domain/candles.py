"""Candles and intervals: the one shape every layer uses after the exchange adapter."""

from __future__ import annotations

from typing import Final

import msgspec

MINUTE_MS: Final = 60_000

INTERVAL_MS: Final[dict[str, int]] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}


def interval_ms(interval: str) -> int:
    """Length of ``interval`` in milliseconds; ``ValueError`` for an unknown interval."""
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}; known: {', '.join(INTERVAL_MS)}") from None


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One closed candle. Times are UTC epoch milliseconds; ``close_time = open_time + len - 1``.

    An immutable msgspec struct (a tenth of a frozen dataclass's construction cost on the feed's hot
    path); fields are positional in this order.
    """

    symbol: str
    interval: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float = 0.0
    trades: int = 0
    taker_buy_volume: float = 0.0
    taker_buy_quote_volume: float = 0.0

    @property
    def close_time(self) -> int:
        return self.open_time + interval_ms(self.interval) - 1
