"""Stopping background tasks: cancel them all, then wait for each to finish its cleanup; and bounded waits that never
swallow a cancellation (:func:`within`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task, then await each one. Its cancellation is absorbed; the first other exception one ends with
    propagates once every task has been awaited, so a failure is not hidden by the shutdown — and does not leave the
    tasks after it running (the first failure used to end the wait there)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    failure: BaseException | None = None
    for task in pending:
        try:
            await wait_cancelled(task)
        except asyncio.CancelledError:
            raise  # the caller's own
        except BaseException as exc:  # re-raised below, once the rest are awaited
            if failure is None:
                failure = exc
    if failure is not None:
        raise failure


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


async def within(work: Awaitable[T], seconds: float) -> T:
    """``await work``, bounded: ``TimeoutError`` after ``seconds`` (``work`` is then cancelled).

    Use it instead of ``asyncio.wait_for`` (the linter bans that here). On Python 3.11 ``wait_for`` waits on a
    future of its own, released by a callback once ``work`` is done. A cancellation that lands between the two (a
    stop cancelling a loop just as one of its bounded reads answers) is dropped: ``wait_for`` returns the result,
    and the cancelled task runs on. It did: the executor's exit loop, cancelled by a stop while its first check read
    the last summary day, ran on, and the stop waited for it forever (a rare hang of the trading tests' teardown; in
    production the stop would have run out its budget and skipped the rest of the shutdown). Here ``work`` is awaited
    directly under ``asyncio.timeout``, so the cancellation reaches it."""
    async with asyncio.timeout(seconds):
        return await work


__all__ = ["cancel_and_wait", "wait_cancelled", "within"]
