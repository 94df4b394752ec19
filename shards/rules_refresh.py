"""Re-read the exchange's rules soon after an order was refused on one our copy got wrong.

Binance changes a symbol's filters (tick, step, lot size) or status now and then; the universe refresh reads
them every hour. Between the change and that read every order on the symbol would be refused, and a refused
stop closes its position at market. The live broker reports such refusals (``LiveBroker.on_stale_rules``:
``smc_quant.orders.reactions.STALE_RULES``); :class:`RulesRefresh` turns them into one exchangeInfo read at once.
Requests while a read runs, or within ``min_interval_s`` of the last one's start, are coalesced: they are the
same incident (a stop's three tries), and a change the read missed shows again with the next refused order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from smc_quant.tasks import wait_cancelled


class RulesRefresh:
    """Runs ``refresh`` on request: one at a time, at most one start per ``min_interval_s``."""

    def __init__(self, refresh: Callable[[], Awaitable[object]], *, min_interval_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self._refresh = refresh
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._log = logger or structlog.get_logger()
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.requests = 0
        self.runs = 0
        self.failures = 0

    def request(self, code: int) -> bool:
        """A refusal with Binance ``code`` says our rules are stale: read them again now, unless a read runs or
        started less than ``min_interval_s`` ago. Returns whether a read started."""
        self.requests += 1
        now = self._clock()
        if (self._task is not None and not self._task.done()) or (
                self._last is not None and now - self._last < self._min_interval_s):
            return False
        self._last = now
        self.runs += 1
        self._log.warning("exchange_rules_refresh", code=code, note="an order was refused on a stale rule")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rules-refresh")
        return True

    async def _run(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:  # the hourly refresh remains; a failed read never takes anything down
            self.failures += 1
            self._log.error("exchange_rules_refresh_failed", error=f"{type(exc).__name__}: {exc}")

    async def idle(self) -> None:
        """Return once no read is running (however it ended)."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def stop(self) -> None:
        """Cancel a read in flight."""
        if self._task is not None:
            self._task.cancel()
            await wait_cancelled(self._task)

    def metrics(self) -> dict[str, float]:
        return {"rules_refresh_requests": float(self.requests), "rules_refresh_runs": float(self.runs),
                "rules_refresh_failures": float(self.failures)}
