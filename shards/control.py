"""The operator's requests (``smc-quant halt`` / ``halt --flatten`` / ``resume``) carried to the running executor.

``ControlWatcher`` reads the newest ``control_events`` row (:mod:`smc_quant.store.control`) and applies it to
one executor: halt or resume, and for a pending flatten, close every position and mark the request done. It
reads once at start, before the executor takes its first signal (a halt requested while the service was
down holds from its first minute), then listens on the ``smc_control`` channel of a pool connection it holds
and re-reads every ``poll_s`` as the backstop for a notification lost with that connection. A database error
(or any other failure of a read) is counted and logged, the connection is replaced after a backoff, and the
executor keeps its last state: the watcher itself never stops before the service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import structlog

from shards.backoff import exponential_backoff
from smc_quant.executor import Executor
from smc_quant.store.control import CHANNEL, ControlRepository, ControlState
from smc_quant.tasks import cancel_and_wait, within

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
MAX_RETRY_S = 300.0
"""Longest wait between two attempts of a flatten whose closes failed (each failure alarms and notifies)."""


class ControlWatcher:
    """Applies the newest control request to ``executor``; see the module docstring."""

    def __init__(self, pool: asyncpg.Pool, executor: Executor, *, poll_s: float = 5.0,
                 logger: structlog.stdlib.BoundLogger | None = None,
                 backoff: Callable[[], Iterator[float]] = exponential_backoff,
                 on_resume: Callable[[], Awaitable[None]] | None = None) -> None:
        self._pool = pool
        self.repo = ControlRepository(pool)
        self.executor = executor
        self.poll_s = poll_s
        self.log = logger or structlog.get_logger().bind(component="control")
        self._backoff = backoff
        self.on_resume = on_resume
        """Awaited when a halt ends, before the executor resumes (the service re-reads its drawdown baseline)."""
        self.state = ControlState()
        """The newest request applied (``done`` once its flatten has been carried out)."""
        self._applied = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while a connection listens on the channel (``listener_pid`` is its server process)."""
        self.listener_pid = 0
        self._retry_at = 0.0
        self._retry_s = 0.0
        self.stats = {"reads": 0, "notifications": 0, "errors": 0, "flatten_failures": 0, "listens": 0}
        self._hold: tuple[str, int] | None = None

    def hold(self, reason: str) -> None:
        """A halt this process decided (the max drawdown, the account's mode, a lost executor lock): at once, and
        kept whatever the database says until a request newer than the newest one applied now ends it — an
        operator's ``resume`` made after it. Without this, the next read of an older ``resume`` (or of no request
        at all, when the halt could not be recorded) would lift it within seconds."""
        self._hold = (reason, self.state.event_id)
        self.executor.halt(reason)

    async def sync(self, source: asyncpg.Pool | asyncpg.Connection | None = None) -> ControlState:
        """Read the newest request and apply it; returns the state applied."""
        repo = ControlRepository(source or self._pool)
        state = await repo.state()
        self.stats["reads"] += 1
        if state.halted:
            self.executor.halt(state.reason or f"control #{state.event_id}")
        elif self._hold is not None and state.event_id <= self._hold[1]:
            self.executor.halt(self._hold[0])  # no request since our own halt: it stands
        else:
            held, self._hold = self._hold is not None, None
            if (self.state.halted or held) and self.on_resume is not None:
                await self.on_resume()
            self.executor.resume(state.reason)
        if state.flatten_pending and self.executor.started.is_set() and time.monotonic() >= self._retry_at:
            failed = await self.executor.flatten()
            if failed:  # they stay open and protected; tried again after poll_s, doubling up to MAX_RETRY_S
                self.stats["flatten_failures"] += 1
                self._retry_s = min(MAX_RETRY_S, max(self.poll_s, self._retry_s * 2))
                self._retry_at = time.monotonic() + self._retry_s
                self.log.error("flatten_incomplete", event_id=state.event_id, still_open=failed,
                               retry_in_s=self._retry_s)
            else:
                self._retry_at = self._retry_s = 0.0
                await repo.flatten_done(state.event_id)
                state = replace(state, done=True)
                self.log.warning("flatten_done", event_id=state.event_id)
        async with self._applied:
            self.state = state
            self._applied.notify_all()
        return state

    async def applied(self, event_id: int) -> ControlState:
        """Wait until the request ``event_id`` (or a newer one) is applied, its flatten carried out."""
        await self.wait_for(lambda: self.state.event_id >= event_id and not self.state.flatten_pending)
        return self.state

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checked now and after every read."""
        async with self._applied:
            await self._applied.wait_for(predicate)

    def start(self) -> None:
        """Listen for requests in the background (after the executor started: a flatten needs its book)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="control-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def _on_notify(self, *_: Any) -> None:
        self.stats["notifications"] += 1
        self._wake.set()

    def wake(self) -> None:
        """Read now (a request made by this process: do not wait for its notification to come back)."""
        self._wake.set()

    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            try:
                conn = await self._pool.acquire()
                try:
                    await conn.add_listener(CHANNEL, self._on_notify)
                    self.listener_pid = conn.get_server_pid()
                    self.stats["listens"] += 1
                    self.listening.set()
                    delays = None
                    await self._listen(conn)
                finally:
                    self.listening.clear()
                    await self._release(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database, or anything unexpected: never leave the operator without a hand
                self.stats["errors"] += 1
                delays = delays or self._backoff()
                delay = next(delays)
                level = self.log.warning if isinstance(exc, _DB_ERRORS) else self.log.error
                level("control_unavailable", error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _release(self, conn: Any) -> None:
        """Back to the pool without the listener; a connection the server closed cannot UNLISTEN and keeps its
        listener entry, which asyncpg warns about on release — expected here, so that warning is not shown."""
        if not conn.is_closed():
            with contextlib.suppress(*_DB_ERRORS):
                await conn.remove_listener(CHANNEL, self._on_notify)
        if conn.is_closed():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", asyncpg.exceptions.InterfaceWarning)
                await self._pool.release(conn)
        else:
            await self._pool.release(conn)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Read now (anything missed while not listening), then on every notification or ``poll_s``; the reads
        go over the listening connection, so its loss is noticed at the next one."""
        while True:
            self._wake.clear()
            await self.sync(conn)
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), self.poll_s)

    def metrics(self) -> dict[str, float]:
        return {"control_event_id": float(self.state.event_id), **{f"control_{k}": float(v)
                                                                   for k, v in self.stats.items()}}


__all__ = ["ControlWatcher"]
