"""The executor's daily summary: once per UTC day, the day's trades, net PnL and the equity, as one message.

Each told day is claimed in PostgreSQL (``daily_summaries``) before the message goes out, so no day is told twice,
and a start that finds yesterday untold (a restart across midnight) tells it. A day is told
:data:`SUMMARY_GRACE_MS` after its midnight, not at it: a trade whose exit filled at 23:59:59 is stored only when its
fills have settled, seconds later, and the summary told at midnight used to leave it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from smc_quant import notify as messages
from smc_quant.domain.trading import ZERO, AccountSnapshot, Trade
from smc_quant.risk import DAY_MS

SUMMARY_GRACE_MS = 300_000
"""How long after its midnight a day is told: an exit filled just before midnight settles (its fills read, its trade
stored) within seconds, or within a reconciliation round (3 min) when the user stream was down."""


class DailySummary:
    """Mixed into the executor, whose state and steps it uses (declared here for the type checker)."""

    clock: Callable[[], int]
    repo: Any | None
    trades: list[Trade]
    log: Any
    _summary_day: int | None

    def _notify(self, text: str, kind: str) -> None:
        raise NotImplementedError  # the executor's

    def snapshot(self) -> AccountSnapshot:
        raise NotImplementedError  # the executor's

    async def daily_summary(self) -> bool:
        """Once per UTC day (checked after the exits): the day's trades, net PnL and the equity, as one message.
        The trades are read from PostgreSQL (bounded at 10 s), so those closed before a restart count too; with
        no database, or none answering, those this process closed. A told day is claimed in PostgreSQL first, so
        none is told twice, and a start that finds yesterday untold (a restart across midnight) tells it. A day ends
        for the summary :data:`SUMMARY_GRACE_MS` after its midnight, so the trades settled just after it count."""
        day = (self.clock() - SUMMARY_GRACE_MS) // DAY_MS
        if self._summary_day is None:
            self._summary_day = day
            if self.repo is None or (last := await self._last_summary_day()) is None or last >= day - 1:
                return False
            self._summary_day = day - 1
        if day <= self._summary_day:
            return False
        told, start, end = self._summary_day, self._summary_day * DAY_MS, day * DAY_MS
        self._summary_day = day
        done = [t for t in self.trades if start <= t.exit_time_ms < end]
        self.trades = [t for t in self.trades if t.exit_time_ms >= end - DAY_MS]  # keep memory bounded
        equity = self.snapshot().equity
        if self.repo is not None:
            try:
                done = await asyncio.wait_for(self.repo.trades(since_ms=start, until_ms=end - 1), 10.0)
                net = sum((t.net_pnl for t in done), ZERO)
                if not await asyncio.wait_for(self.repo.claim_summary(told, len(done), net, equity), 10.0):
                    return False  # told already (by a process before this one)
            except Exception as exc:  # told all the same, from memory when the trades could not be read
                self.log.warning("daily_summary_unrecorded", error=f"{type(exc).__name__}: {exc}")
        self._notify(messages.daily_summary(done, equity, told), "daily_summary")
        return True

    async def _last_summary_day(self) -> int | None:
        assert self.repo is not None
        try:
            return await asyncio.wait_for(self.repo.last_summary_day(), 10.0)
        except Exception as exc:  # unknown: no day is told late
            self.log.warning("daily_summary_unknown", error=f"{type(exc).__name__}: {exc}")
            return None


__all__ = ["SUMMARY_GRACE_MS", "DailySummary"]
