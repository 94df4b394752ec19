"""The executor's daily summary: once per UTC day, the day's trades, net PnL, funding and the equity, as one message.

Each told day is claimed in PostgreSQL (``daily_summaries``) before the message goes out, so no day is told twice,
and a start that finds days untold (a restart across midnight, a downtime of days) tells each of them, the newest
:data:`SUMMARY_CATCH_UP_DAYS` at most. A day is told :data:`SUMMARY_GRACE_MS` after its midnight, not at it: a trade
whose exit filled at 23:59:59 is stored only when its fills have settled, seconds later, and the summary told at
midnight used to leave it out. The equity is the account's when the day is told: a day told late says when that was.
The exit check asks for it (:meth:`DailySummary.summarise`) and it runs beside the exits and the intake, never before
them: its reads are bounded at 10 s each, and a week's catch-up after a downtime, with PostgreSQL or the exchange
slow, used to hold up the exits, the breaker and the max drawdown for minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from smc_quant import notify as messages
from smc_quant.domain.trading import ZERO, AccountSnapshot, Trade
from smc_quant.risk import DAY_MS
from smc_quant.tasks import within

SUMMARY_GRACE_MS = 300_000
"""How long after its midnight a day is told: an exit filled just before midnight settles (its fills read, its trade
stored) within seconds, or within a reconciliation round (3 min) when the user stream was down."""
SUMMARY_CATCH_UP_DAYS = 7
"""After a downtime, the untold days told at the start, the newest first among them kept (older ones are logged)."""
DayFunding = Callable[[int, int], Awaitable[Decimal]]
"""The funding the account booked at times in ``[start_ms, end_ms)``: received positive, paid negative."""


class DailySummary:
    """Mixed into the executor, whose state and steps it uses (declared here for the type checker)."""

    clock: Callable[[], int]
    repo: Any | None
    trades: list[Trade]
    log: Any
    _summary_day: int | None
    _summarising: asyncio.Task[Any] | None
    _summary_wanted: bool
    day_funding: DayFunding | None

    def _failed_unwatched(self, task: asyncio.Task[Any]) -> None:
        raise NotImplementedError  # the executor's

    def _notify(self, text: str, kind: str) -> None:
        raise NotImplementedError  # the executor's

    def snapshot(self) -> AccountSnapshot:
        raise NotImplementedError  # the executor's

    def summarise(self) -> None:
        """Tell the days that ended, in the background (:meth:`daily_summary`): one run at a time, and a request made
        while one runs is served by another run after it, which reads the clock again. Nothing is started while no
        day has ended since the last run (every exit check asks). Neither the exits nor ``idle()`` wait for it —
        the scaled executor's intake waits for ``idle()`` after every batch of signals; the stop cancels it. A
        failure is logged (``task_failed``) and the next exit check asks again."""
        if self._summary_day is not None and (self.clock() - SUMMARY_GRACE_MS) // DAY_MS <= self._summary_day:
            return
        self._summary_wanted = True
        if self._summarising is None or self._summarising.done():
            task = asyncio.get_running_loop().create_task(self._summaries(), name="daily-summary")
            task.add_done_callback(self._failed_unwatched)
            self._summarising = task

    async def summarised(self) -> None:
        """Wait until the summary runs under way are over (tests)."""
        while (task := self._summarising) is not None and not task.done():
            await asyncio.wait({task})

    async def _summaries(self) -> None:
        while self._summary_wanted:
            self._summary_wanted = False
            await self.daily_summary()

    async def daily_summary(self) -> bool:
        """Once per UTC day (asked for by every exit check): the day's trades, net PnL and the equity, as one message.
        The trades are read from PostgreSQL (bounded at 10 s), so those closed before a restart count too; with
        no database, or none answering, those this process closed. A told day is claimed in PostgreSQL first, so
        none is told twice, and a start that finds days untold since the last one told tells each (at most
        :data:`SUMMARY_CATCH_UP_DAYS`). A day ends for the summary :data:`SUMMARY_GRACE_MS` after its midnight, so
        the trades settled just after it count. ``True`` when a day was told."""
        day = (self.clock() - SUMMARY_GRACE_MS) // DAY_MS
        if self._summary_day is None:
            self._summary_day = day
            if self.repo is None or (last := await self._last_summary_day()) is None or last >= day - 1:
                return False
            first = max(last + 1, day - SUMMARY_CATCH_UP_DAYS)
            if first > last + 1:
                self.log.warning("daily_summaries_not_told", days=first - last - 1, first_day=last + 1,
                                 note=f"only the last {SUMMARY_CATCH_UP_DAYS} untold days are told")
            self._summary_day = first
        told_any = False
        while self._summary_day < day:
            told = self._summary_day
            self._summary_day = told + 1
            told_any = await self._tell_day(told) or told_any
        self.trades = [t for t in self.trades if t.exit_time_ms >= (day - 1) * DAY_MS]  # keep memory bounded
        return told_any

    async def _tell_day(self, told: int) -> bool:
        """Claim and tell UTC day ``told``; ``False`` when another process told it already."""
        start, end = told * DAY_MS, (told + 1) * DAY_MS
        done = [t for t in self.trades if start <= t.exit_time_ms < end]
        equity, now = self.snapshot().equity, self.clock()
        funding = await self._funding(start, end)  # read before the claim: a stop that cuts a read loses no day
        if self.repo is not None:
            try:
                done = await within(self.repo.trades(since_ms=start, until_ms=end - 1), 10.0)
                net = sum((t.net_pnl for t in done), ZERO)
                if not await within(self.repo.claim_summary(told, len(done), net, equity), 10.0):
                    return False  # told already (by a process before this one)
            except Exception as exc:  # told all the same, from memory when the trades could not be read
                self.log.warning("daily_summary_unrecorded", error=f"{type(exc).__name__}: {exc}")
        late = now - end > 2 * SUMMARY_GRACE_MS  # told well after its end: the equity is not the day's
        self._notify(messages.daily_summary(done, equity, told, funding=funding, equity_at_ms=now if late else None),
                     "daily_summary")
        return True

    async def _funding(self, start: int, end: int) -> Decimal | None:
        """The day's funding (bounded at 10 s), ``None`` when there is no source or it could not say."""
        if self.day_funding is None:
            return None
        try:
            return await within(self.day_funding(start, end), 10.0)
        except Exception as exc:  # the summary goes out without it
            self.log.warning("daily_summary_funding_unknown", error=f"{type(exc).__name__}: {exc}")
            return None

    async def _last_summary_day(self) -> int | None:
        assert self.repo is not None
        try:
            return await within(self.repo.last_summary_day(), 10.0)
        except Exception as exc:  # unknown: no day is told late
            self.log.warning("daily_summary_unknown", error=f"{type(exc).__name__}: {exc}")
            return None


__all__ = ["SUMMARY_CATCH_UP_DAYS", "SUMMARY_GRACE_MS", "DailySummary", "DayFunding"]
