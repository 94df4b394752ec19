"""The replay clock: one task advancing minute by minute, in step across every served symbol.

Each minute's in-candle updates are spread over the minute's wall duration (``60 / speed`` s), the
final frames close it. At speed 0 the steps follow one another as fast as the clients drain them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from smc_quant.domain.candles import MINUTE_MS
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.frames import Bar, in_candle_path
from smc_quant.exchange.emulator.hub import Hub
from smc_quant.exchange.emulator.market import Market
from smc_quant.exchange.emulator.steps import Minute, Step, StepBuilder
from smc_quant.logging import get_logger


class Replay:
    """Replay state (minutes done, the update in progress, the clock) and the task that drives it."""

    def __init__(self, config: EmulatorConfig, market: Market, hub: Hub) -> None:
        self._config = config
        self._market = market
        self._hub = hub
        self._builder = StepBuilder(market, config.updates_per_candle, config.funding_rate_of,
                                    config.funding_interval_h * 3_600_000)
        self.minutes_replayed = 0
        self.update = -1
        self.done = asyncio.Event()
        self._running = asyncio.Event()
        if not config.start_paused:
            self._running.set()
        self._minute: Minute | None = None
        self._last_event_ms = market.start_ms
        self._anchor_wall = 0.0
        self._anchor_sim = float(market.start_ms)
        self._progress = asyncio.Condition()
        self.step_listeners: list[Callable[[Step], None]] = []
        """Called after each step is written, with the step (the account's price feed)."""

    @property
    def streams(self) -> dict[str, str]:
        return self._builder.streams

    def _wall_now(self) -> float:
        return asyncio.get_running_loop().time()

    def now_ms(self) -> int:
        """Replay clock: open time of the current minute plus the progress through it."""
        if self._config.speed == 0 or self.done.is_set() or not self._running.is_set():
            return int(max(self._last_event_ms, self._anchor_sim))
        sim = self._anchor_sim + (self._wall_now() - self._anchor_wall) * self._config.speed * 1000.0
        upper = self._next_event_ms() - 1
        return int(min(max(sim, self._last_event_ms), upper))

    def _next_event_ms(self) -> int:
        u = self.update + 1
        open_ms = self._market.start_ms + self.minutes_replayed * MINUTE_MS
        return open_ms + MINUTE_MS * (u + 1) // (self._config.updates_per_candle + 1)

    def pause(self) -> None:
        """Freeze the replay clock (no further steps until :meth:`resume`)."""
        if self._running.is_set():
            self._anchor_sim = float(self.now_ms())
            self._running.clear()

    def resume(self) -> None:
        """Restart the replay clock where it was paused."""
        if not self._running.is_set():
            self._anchor_wall = self._wall_now()
            self._running.set()

    async def run(self) -> None:
        """Replay every minute; sets :attr:`done` at the end."""
        self._anchor_wall = self._wall_now()
        try:
            for m in range(self._market.n_minutes):
                for u in range(self._config.updates_per_candle + 1):
                    await self._pace()
                    self._emit(m, u)
                async with self._progress:
                    self._progress.notify_all()
        finally:
            self.done.set()
            get_logger(component="emulator").info("replay_done", minutes=self.minutes_replayed)
            async with self._progress:
                self._progress.notify_all()

    async def _pace(self) -> None:
        speed = self._config.speed
        while True:
            await self._running.wait()
            if speed == 0:
                await self._hub.drained()
                await asyncio.sleep(0)
                if self._running.is_set():
                    return
                continue
            target = self._anchor_wall + (self._next_event_ms() - self._anchor_sim) / (speed * 1000.0)
            delay = target - self._wall_now()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def _emit(self, m: int, u: int) -> None:
        if u == 0:
            self._minute = self._builder.minute(m)
        assert self._minute is not None
        comb, raw = self._hub.wanted()
        step = self._builder.step(self._minute, u, comb, raw)
        self._hub.broadcast(step)
        self._last_event_ms = step.event_ms
        self.update = u
        if step.final:
            self.minutes_replayed = m + 1
            self.update = -1
        for listener in self.step_listeners:
            listener(step)

    async def wait_minutes(self, n: int) -> None:
        """Return once ``n`` minutes are fully replayed (final frames written)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.minutes_replayed >= n or self.done.is_set())
        if self.minutes_replayed < n:
            raise RuntimeError(f"the replay ended after {self.minutes_replayed} minutes, before {n}")

    def open_bar(self, symbol: str) -> tuple[int, Bar] | None:
        """The still-open bar of ``symbol`` as the clients last saw it (REST's last klines row)."""
        if self.done.is_set() or self.minutes_replayed >= self._market.n_minutes:
            return None
        open_ms = self._market.start_ms + self.minutes_replayed * MINUTE_MS
        src = self._market.source_of[symbol]
        i = self._market.index(src, open_ms)
        if i is None:
            return None
        real = self._market.bar(src, i)
        if self.update < 0:
            return open_ms, Bar(real.open, real.open, real.open, real.open, 0.0)
        prec = self._market.precision[src]
        return open_ms, in_candle_path(real, self._config.updates_per_candle, prec)[self.update]
