"""Stopping background tasks: cancel them all, then wait for each to finish its cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task, then await each one. Its cancellation is absorbed; any other exception it ends with
    propagates, so a failure is not hidden by the shutdown."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        await wait_cancelled(task)


async def wait_cancelled(task: asyncio.Future[Any]) -> None:
    """Await ``task``, which the caller cancelled: its cancellation is absorbed, the caller's own is not.

    ``suppress(CancelledError)`` around the await absorbed both, so a bound on the stop (``wait_for``, the
    shutdown budget) was not enforced: the stop returned normally, late, instead of being cut off in time."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


__all__ = ["cancel_and_wait", "wait_cancelled"]
