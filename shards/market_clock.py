"""The trading stack's clock: the wall clock live and on paper, the replayed market's in a replay."""

from __future__ import annotations

import time

from smc_quant.domain.candles import MINUTE_MS, Candle


class MarketClock:
    """Milliseconds: the wall clock in live/paper mode, the latest candle close in replay (the emulator's time)."""

    def __init__(self, replay: bool) -> None:
        self.replay = replay
        self.latest_close_ms = 0

    def observe(self, candle: Candle) -> None:
        self.advance_to(candle.open_time + MINUTE_MS)

    def advance_to(self, close_ms: int) -> None:
        """A close seen elsewhere (the warm start's newest candle); the clock never goes back."""
        if close_ms > self.latest_close_ms:
            self.latest_close_ms = close_ms

    def __call__(self) -> int:
        if self.replay:
            return self.latest_close_ms
        return int(time.time() * 1000)

    def wall_or_market(self) -> int:
        """Like calling the clock, but before the first candle of a replay: the wall clock."""
        return self() or int(time.time() * 1000)


__all__ = ["MarketClock"]
