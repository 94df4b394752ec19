"""``ControlRepository``: the operator's halt / flatten / resume requests (migration 0008, ``control_events``).

The table is append-only and the newest row is the state: ``halt`` and ``flatten`` halt trading (no new
entries; exits, protection and reconciliation go on), ``resume`` ends it. A ``flatten`` also asks the executor
to close every position at market; it stays pending (``done_at`` empty) until the executor has done so, and a
later row supersedes it. Every insert is announced on the ``smc_control`` channel in the same transaction, so
a listening executor learns of it when it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

CHANNEL = "smc_control"
Action = Literal["halt", "flatten", "resume"]
ACTIONS: tuple[Action, ...] = ("halt", "flatten", "resume")
MAX_REASON = 500
DRAWDOWN_BY = "smc-quant (max drawdown)"
"""``requested_by`` of the flatten the executor requests itself at the max drawdown."""
ACCOUNT_MODE_BY = "smc-quant (account mode)"
"""``requested_by`` of the halt recorded when the exchange account leaves Single-Asset Mode."""
EXECUTOR_LOCK_BY = "smc-quant (executor lock lost)"
"""``requested_by`` of the halt recorded by an executor that found another holding its lock (both stop entering)."""


@dataclass(frozen=True, slots=True)
class ControlState:
    """What the newest control row says (``event_id`` 0: no row yet, trading as configured)."""

    event_id: int = 0
    action: Action = "resume"
    reason: str = ""
    requested_by: str = ""
    requested_ms: int = 0
    done: bool = False

    @property
    def halted(self) -> bool:
        return self.action != "resume"

    @property
    def flatten_pending(self) -> bool:
        """A flatten no executor has carried out yet."""
        return self.action == "flatten" and not self.done

    def describe(self) -> str:
        """One line for the operator."""
        if self.event_id == 0:
            return "trading as configured (no halt has ever been requested)"
        who = f" by {self.requested_by}" if self.requested_by else ""
        why = f": {self.reason}" if self.reason else ""
        if not self.halted:
            return f"trading resumed (#{self.event_id}{who}{why})"
        flat = ("; every position is to be closed (waiting for the executor)" if self.flatten_pending
                else "; every position was closed" if self.action == "flatten" else "")
        return f"trading halted: no new entries (#{self.event_id}{who}{why}){flat}"


class ControlRepository:
    """Reads and writes ``control_events`` over a pool or one connection (the watcher reads over the connection
    it listens on, so losing it is noticed)."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._pool = db

    async def request(self, action: Action, reason: str = "", requested_by: str = "") -> ControlState:
        """Append a request and announce it (NOTIFY) in one transaction; returns the new state."""
        if action not in ACTIONS:
            raise ValueError(f"unknown control action {action!r} (one of {', '.join(ACTIONS)})")
        if isinstance(self._pool, asyncpg.Pool):
            async with self._pool.acquire() as conn:
                await self._insert(conn, action, reason, requested_by)
        else:
            await self._insert(self._pool, action, reason, requested_by)
        return await self.state()

    @staticmethod
    async def _insert(conn: Any, action: Action, reason: str, requested_by: str) -> None:
        async with conn.transaction():
            event_id = await conn.fetchval(
                "INSERT INTO control_events (action, reason, requested_by) VALUES ($1, $2, $3) RETURNING id",
                action, reason[:MAX_REASON], requested_by[:MAX_REASON])
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(event_id))

    async def state(self) -> ControlState:
        """The newest row as a :class:`ControlState`."""
        row = await self._pool.fetchrow(
            "SELECT id, action, reason, requested_by, requested_at, done_at IS NOT NULL AS done "
            "FROM control_events ORDER BY id DESC LIMIT 1")
        if row is None:
            return ControlState()
        return ControlState(row["id"], row["action"], row["reason"], row["requested_by"],
                            int(row["requested_at"].timestamp() * 1000), row["done"])

    async def drawdown_baseline(self) -> datetime | None:
        """Where the max drawdown is measured from: the first resume after the latest halt the max drawdown
        requested (the operator accepted that loss), or ``None`` (the account's start)."""
        at: datetime | None = await self._pool.fetchval(
            "SELECT min(requested_at) FROM control_events WHERE action = 'resume' AND id > "
            "(SELECT max(id) FROM control_events WHERE requested_by = $1)", DRAWDOWN_BY)
        return at

    async def flatten_done(self, event_id: int) -> bool:
        """Mark the flatten request ``event_id`` carried out; ``False`` if it was already (or is no flatten)."""
        status = await self._pool.execute(
            "UPDATE control_events SET done_at = now() WHERE id = $1 AND action = 'flatten' AND done_at IS NULL",
            event_id)
        return bool(status.endswith(" 1"))


__all__ = ["ACCOUNT_MODE_BY", "ACTIONS", "CHANNEL", "DRAWDOWN_BY", "EXECUTOR_LOCK_BY", "Action", "ControlRepository",
           "ControlState"]
