"""Writes on the money path that a database blip must not lose: retried with backoff, never raised.

Fills, closed trades, the book's positions and paper funding payments are written idempotently (a second write of
the same row changes nothing), so a write whose answer was lost can simply be sent again. The caller keeps its
in-memory bookkeeping whatever the database says — the risk manager, the drawdown guard, the learner and the
notifications never wait on PostgreSQL — and a write that still fails after every attempt is logged as an error
with what it carried (``<what>_not_stored``), so nothing is lost silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ATTEMPTS", "FIRST_DELAY_S", "Writer", "retried"]

ATTEMPTS = 6
FIRST_DELAY_S = 0.5
"""Six attempts 0.5, 1, 2, 4 and 8 s apart: about 15 s, longer than a PostgreSQL restart or failover blip."""


async def retried(write: Callable[[], Awaitable[Any]], *, what: str, log: Any, detail: dict[str, Any] | None = None,
                  attempts: int = ATTEMPTS, first_delay_s: float = FIRST_DELAY_S,
                  on_retry: Callable[[], None] = lambda: None,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> bool:
    """Run ``write`` until it succeeds, at most ``attempts`` times, doubling the pause from ``first_delay_s``;
    ``on_retry`` is called after each failed attempt that will be retried. ``False`` (and an error log naming
    ``what`` with ``detail``) when every attempt failed; cancellation propagates, logged the same way when the
    store had refused the write."""
    delay, error = first_delay_s, ""
    try:
        for attempt in range(1, attempts + 1):
            try:
                await write()
                return True
            except Exception as exc:  # any failure of the store; the write is idempotent, so try it again
                error = f"{type(exc).__name__}: {exc}"[:300]
                if attempt == attempts:
                    log.error(f"{what}_not_stored", attempts=attempts, error=error, **(detail or {}))
                    return False
            on_retry()
            log.warning("store_retry", what=what, attempt=attempt, delay_s=delay, error=error)
            await sleep(delay)
            delay *= 2
    except asyncio.CancelledError:
        if error:  # given up (at shutdown) while the store refused it: say what is lost
            log.error(f"{what}_not_stored", error=f"stopped after {error}", **(detail or {}))
        raise
    return False


class Writer:
    """One owner's money-path writes through :func:`retried`: awaited (:meth:`store`) or in the background
    (:meth:`later`, awaited through :attr:`pending`); ``retries`` and ``failures`` counted."""

    def __init__(self, log: Any, *, first_delay_s: float = FIRST_DELAY_S) -> None:
        self.log = log
        self.first_delay_s = first_delay_s
        self.pending: set[asyncio.Future[bool]] = set()
        self.retries = 0
        """Failed attempts that were tried again (a database blip)."""
        self.failures = 0
        """Writes that failed every attempt (each logged as ``<what>_not_stored`` with its content)."""
        self.retry_seen = asyncio.Event()
        """Set at every retry (clear it to wait for the next)."""

    async def store(self, what: str, write: Callable[[], Awaitable[Any]], detail: dict[str, Any]) -> bool:
        ok = await retried(write, what=what, log=self.log, detail=detail, first_delay_s=self.first_delay_s,
                           on_retry=self._retried)
        self.failures += not ok
        return ok

    def later(self, what: str, write: Callable[[], Awaitable[Any]], detail: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self.store(what, write, detail))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def _retried(self) -> None:
        self.retries += 1
        self.retry_seen.set()
