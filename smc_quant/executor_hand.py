"""The operator's hand on a running :class:`~smc_quant.executor.Executor`: halt, resume, flatten.

``shards.control`` carries ``smc-quant halt`` / ``resume`` / ``halt --flatten`` from PostgreSQL to these methods;
the max-drawdown guard calls them too. A halt stops new entries only: exits, protection, the 2-hour limit and
reconciliation go on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from smc_quant.book import Book
from smc_quant.domain.trading import ExitReason
from smc_quant.executor_config import ExecutorStats
from smc_quant.risk import DrawdownGuard


class OperatorHand:
    """Mixed into the executor, whose state and steps it uses (declared here for the type checker)."""

    halted: str | None
    book: Book
    stats: ExecutorStats
    drawdown_guard: DrawdownGuard
    log: Any
    _no_entry_in_flight: asyncio.Event

    def _notify(self, text: str, kind: str) -> None:
        raise NotImplementedError  # the executor's

    def _lock(self, symbol: str) -> asyncio.Lock:
        raise NotImplementedError  # the executor's

    async def close(self, symbol: str, reason: ExitReason) -> bool:
        raise NotImplementedError  # the executor's

    def halt(self, reason: str) -> None:
        """Stop taking new entries (every signal is skipped with ``halted``); exits, protection, the 2-hour
        limit and reconciliation go on. Idempotent; a new reason replaces the old one."""
        changed = self.halted is None
        self.halted = reason
        if changed:
            self.log.warning("trading_halted", reason=reason, positions=len(self.book))
            self._notify(f"HALTED no new entries · {len(self.book)} open · {reason or 'no reason given'}", "halt")

    def resume(self, reason: str = "") -> None:
        """Take signals again (idempotent)."""
        if self.halted is None:
            return
        self.halted = None
        self.drawdown_guard.rearm()
        self.log.warning("trading_resumed", reason=reason)
        self._notify(f"RESUMED new entries allowed · {reason or 'no reason given'}", "resume")

    async def flatten(self) -> list[str]:
        """Close every position at market (:attr:`ExitReason.MANUAL`, protection cancelled once flat); returns the
        symbols whose close failed (they stay open and protected; call again). Call it halted: an entry still
        in flight is waited for first, so it is closed too. A close already under way (the 2-hour limit, a
        rotation) is waited for; if it went out, that position counts as done: its exit is on its way."""
        await self._no_entry_in_flight.wait()
        failed: list[str] = []
        closed = 0
        for symbol in sorted(self.book):
            entry = self.book.get(symbol)
            if entry is None:
                continue
            if entry.status == "closing":
                async with self._lock(symbol):  # its close holds the lock until its order is done
                    pass
            else:
                await self.close(symbol, ExitReason.MANUAL)
            after = self.book.get(symbol)
            if after is not None and after.status != "closing":
                failed.append(symbol)
            else:
                closed += 1
        self.stats.flattened += closed
        self.log.warning("flattened", closed=closed, failed=failed)
        return failed


__all__ = ["OperatorHand"]
