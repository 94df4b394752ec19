"""The executor's market exits: a position closed at market (its stop and target armed until it is flat) as a task
of its own that a stop's drain waits for, and its protection checked and put back when the exit fails or is cut
off.

Every exit goes through :meth:`MarketExits.close`: the exit clock (2-hour limit, delisting, breaker), a rotation,
a flatten (the operator's, the drawdown guard's), the reconciliation's. Its callers are cancelled at SIGTERM (the
exit clock's loop, a flatten's watcher, the scaled executor's marks task); the exit itself is not: it used to be
cut off between cancelling the position's stop and target (then cancelled first) and its market exit, leaving the
position open with no exchange-side protection until the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from smc_quant import notify as messages
from smc_quant.book import Book, BookEntry
from smc_quant.domain.trading import ExitReason
from smc_quant.errors import SmcError
from smc_quant.executor_config import ExecutorStats
from smc_quant.reconciler import client_id


class MarketExits:
    """Mixed into the executor, whose state and steps it uses (declared here for the type checker)."""

    book: Book
    marks: dict[str, Decimal]
    manager: Any
    stats: ExecutorStats
    log: Any
    _finishing: set[asyncio.Task[Any]]
    _lock: Callable[[str], asyncio.Lock]

    async def _save(self, entry: BookEntry) -> None:
        raise NotImplementedError  # the executor's

    def _notify(self, text: str, kind: str) -> None:
        raise NotImplementedError  # the executor's

    def _notify_alarm(self, kind: str, detail: str, key: str | None = None) -> None:
        raise NotImplementedError  # the executor's

    async def close(self, symbol: str, reason: ExitReason) -> bool:
        """Close ``symbol``'s position at market (protection cancelled once flat); idempotent. ``True`` when this call
        closed it or there was none; ``False`` when the exit failed or another exit of it is under way.

        The exit runs as its own task, awaited by a stop's drain like an entry: cancelling the caller (the exit
        clock's loop, a flatten, the scaled executor's marks task — all cancelled at SIGTERM) used to cut it off
        between cancelling the position's stop and target and its market exit, leaving the position open with no
        exchange-side protection until the next start."""
        entry = self.book.get(symbol)
        if entry is None:
            return True
        if entry.status == "closing":
            return False
        return bool(await self._shielded(self._track(self._close(symbol, entry, reason), f"close:{symbol}",
                                                     unwatched=False)))

    async def _close(self, symbol: str, entry: BookEntry, reason: ExitReason) -> bool:
        async with self._lock(symbol):
            if entry.status == "closing" or self.book.get(symbol) is not entry:
                return False  # another exit got here first, or the position is gone
            before = entry.exit_reason
            entry.status, entry.exit_reason = "closing", reason
            await self._save(entry)
            mark = self.marks.get(symbol)
            flat_already = False
            try:
                result = await self.manager.close(entry.position, reason, mark=mark)
                failed = None if getattr(result, "closed", True) else str(getattr(result, "detail", "alarm"))
                flat_already = getattr(result, "outcome", "") == "already_flat"
            except SmcError as exc:
                failed = str(exc)
            except asyncio.CancelledError:  # a stop's budget ran out mid-exit: its protection is checked again
                entry.status = "open"
                if entry.exit_reason is reason:
                    entry.exit_reason = before
                self._track(self._reprotect(entry, mark), f"reprotect:{symbol}")  # the stop's second drain waits
                raise
            if self.book.get(symbol) is not entry:
                # The trade settled while the exit's answer was awaited (its fills heard first): the manager forgot
                # its counters then, and the closer counted its last try after that.
                self.manager.forget(entry.position.signal_id)
            if failed is not None:
                self.stats.alarms += 1
                self.log.error("exit_failed", symbol=symbol, reason=reason.value, error=failed)
                entry.status = "open"
                if entry.exit_reason is reason:  # still open: how it ends is for whatever closes it later
                    entry.exit_reason = before
                stop = await self._reprotect(entry, mark)
                state = "its stop is in place at the exchange" if stop else "its stop is NOT confirmed at the exchange"
                self._notify_alarm(f"exit failed {symbol} ({reason.value})", f"{failed} · {state}; tried again",
                                   key=f"exit_failed:{symbol}:{reason.value}:{stop}")
                return False
        if flat_already:
            # nothing of ours was sent: the exchange closed it (its stop or target while we could not hear, a person,
            # a liquidation) — named by that fill, or by the reconciliation that learns it, not by this exit
            if entry.exit_reason is reason:
                entry.exit_reason = before
            self.log.info("exit_found_flat", symbol=symbol, reason=reason.value,
                          note="no forced exit sent: the position's own fills name how it ended")
            return True
        if reason in (ExitReason.TIME, ExitReason.DELISTING):
            self.stats.forced_exits += 1
            self._notify(messages.forced_exit(entry.position, reason), "forced_exit")
        return True

    async def _reprotect(self, entry: BookEntry, mark: Decimal | None) -> bool:
        """After a failed exit: its stop and target stay armed, unless an exit refused for a conflict with them
        cancelled them or they fired or were cancelled meanwhile — checked, and placed again when missing, now
        rather than at the next reconciliation (the exit is tried again by whoever asked for it: the exit clock,
        the breaker, a flatten). ``True`` when its stop is known to be in place."""
        try:
            sl, tp = await self.manager.ensure_protection(entry.position, mark or entry.position.entry_price)
        except SmcError as exc:
            self.stats.errors += 1
            self.log.error("reprotect_failed", symbol=entry.position.symbol, error=str(exc),
                           note="the reconciliation tries again")
            return False
        entry.sl_client_id = client_id(sl) or entry.sl_client_id
        entry.tp_client_id = client_id(tp) or entry.tp_client_id
        if entry.position.symbol in self.book:
            await self._save(entry)
        self.log.warning("reprotected_after_failed_exit", symbol=entry.position.symbol, stop=sl is not None)
        return sl is not None

    def _failed_unwatched(self, task: asyncio.Task[Any]) -> None:
        """A task nobody awaits (any more) ended: its failure, if any, is logged here."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.stats.errors += 1
            self.log.error("task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")

    def _track(self, work: Coroutine[Any, Any, Any], name: str, *, unwatched: bool = True) -> asyncio.Task[Any]:
        """Run ``work`` as a task that idle() and a stop's drain wait for; ``unwatched``: nobody awaits it (its
        failure is logged)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        if unwatched:
            task.add_done_callback(self._failed_unwatched)
        return task

    async def _shielded(self, task: asyncio.Task[Any]) -> Any:
        """``task``'s result, for a caller that may be cancelled: the task goes on (a stop's drain waits for it),
        and its failure, should it come after the caller is gone, is logged."""
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.add_done_callback(self._failed_unwatched)
            raise


__all__ = ["MarketExits"]
