"""Process lifecycle for a service that runs for months: supervised tasks, crash-loop backoff, a loop
watchdog, the heartbeat line and aggregation of repeated log lines.

* :class:`Supervisor` runs named long-lived coroutines; one that raises is logged (with its traceback)
  and restarted after an exponential backoff (started over once a run lasted ``healthy_s``: a task that crashes
  once a week restarts after the initial delay, not the maximum); more than ``max_restarts`` crashes of one task
  within ``window_s`` marks the supervisor failed — the process then stops and exits non-zero so the
  orchestrator (Docker, systemd) sees it.
* :class:`CrashHistory` remembers, in the state dir, when earlier runs of this role died without a clean
  stop (a marker file written at start and removed at a clean exit; a SIGKILL leaves it behind). More
  than ``limit`` crashes within ``window_s`` → the next start waits ``delay_s`` first, so a crash loop
  does not hammer the exchange or the database.
* :class:`LoopWatchdog` is a thread that notices the event loop not ticking for ``stall_s`` and logs it
  with the stack of the loop's thread (what blocks it).
* :class:`Heartbeat` logs one WARNING-level line every ``interval_s`` (15 min by default) with whatever
  the process reports (per-shard throughput and lag, open positions, PnL, model version), so a quiet
  log at the default WARNING level still proves the process is alive.
* :func:`stop_within` runs a graceful stop under the process's stop budget; one that overruns is
  cancelled and logged with the stacks of the tasks it was waiting for.
* :class:`ErrorAggregator` is a structlog processor: the same warning/error (event + error text) repeated
  within ``window_s`` is printed once, then once more with ``repeated=N`` when the window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Coroutine, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from smc_quant.tasks import within

TaskFactory = Callable[[], Coroutine[Any, Any, None]]
RECANCEL_S = 0.5
"""A supervised task still running this long after its cancellation is cancelled again."""
CANCEL_GRACE_S = 2.0
"""How long a stop that overran its budget gets to end once cancelled (:func:`stop_within`)."""


@dataclass(slots=True)
class TaskRecord:
    """One supervised task: its factory, running task and crash times (monotonic seconds)."""

    name: str
    factory: TaskFactory
    task: asyncio.Task[None] | None = None
    crashes: list[float] = field(default_factory=list)
    restarts: int = 0
    runner: asyncio.Task[None] | None = None


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` of ``exc``, or of the first failure inside an exception group (a TaskGroup's)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def traceback_tail(exc: BaseException, limit: int = 4000) -> str:
    """The end of ``exc``'s formatted traceback (a log field)."""
    return "".join(traceback.format_exception(exc))[-limit:]


def callable_name(fn: Callable[..., Any]) -> str:
    """A readable name of a listener or sink: ``MinuteAnalyzer.on_candle``, ``TradingStack.on_candle``…"""
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


class Supervisor:
    """Runs and restarts named tasks; see the module docstring. ``failed`` is set when one crash-loops."""

    def __init__(self, *, max_restarts: int = 5, window_s: float = 300.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, healthy_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        """``healthy_s``: a run that lasted this long starts the restart backoff over (default: the longest
        backoff, the rule of the stream reconnects); ``clock`` and ``sleep`` are injectable for tests."""
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_s = backoff_max_s if healthy_s is None else healthy_s
        self.clock = clock
        self.sleep = sleep
        self.log = logger or structlog.get_logger()
        self.records: dict[str, TaskRecord] = {}
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self._runners: list[asyncio.Task[None]] = []

    def spawn(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as a supervised task named ``name`` (restarted when it raises)."""
        record = TaskRecord(name, factory)
        self.records[name] = record
        record.runner = asyncio.create_task(self._keep(record), name=f"supervise-{name}")
        self._runners.append(record.runner)

    @property
    def crash_count(self) -> int:
        """Crashes of every task so far."""
        return sum(len(r.crashes) for r in self.records.values())

    async def _keep(self, record: TaskRecord) -> None:
        delay = self.backoff_initial_s
        while True:
            started = self.clock()
            record.task = asyncio.create_task(record.factory(), name=record.name)
            try:
                await record.task
                return  # finished on its own: nothing to restart
            except Exception as exc:
                now = self.clock()
                if now - started >= self.healthy_s:  # it ran healthily for a while: this crash is not a loop's
                    delay = self.backoff_initial_s
                record.crashes = [t for t in record.crashes if now - t <= self.window_s] + [now]
                self.log.error("task_crashed", task=record.name, error=describe_error(exc),
                               crashes_in_window=len(record.crashes), traceback=traceback_tail(exc))
                if len(record.crashes) > self.max_restarts:
                    self.failure = f"task {record.name} crashed {len(record.crashes)} times in {self.window_s:g}s"
                    self.log.error("supervisor_giving_up", task=record.name, reason=self.failure)
                    self.failed.set()
                    return
                await self.sleep(delay)
                record.restarts += 1
                self.log.warning("task_restarted", task=record.name, restarts=record.restarts, after_s=delay)
                delay = min(self.backoff_max_s, delay * 2)

    async def stop(self, names: Collection[str] | None = None) -> None:
        """Cancel the supervised tasks named in ``names`` (default: every one) and wait for them.

        A task that swallows its cancellation — redis-py's asyncio client can, when the cancel lands inside
        a blocking read (redis/redis-py#2028) — is cancelled again every ``RECANCEL_S`` until it ends
        (``task_ignored_cancel``) instead of being waited for forever; the process's stop budget bounds it.
        """
        if names is None:
            pending = {*self._runners, *(r.task for r in self.records.values() if r.task is not None)}
        else:
            records = [r for name, r in self.records.items() if name in names]
            pending = {t for r in records for t in (r.runner, r.task) if t is not None}
        stopping = set(pending)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
            if pending:
                self.log.warning("task_ignored_cancel", tasks=sorted(t.get_name() for t in pending))
        self._runners = [t for t in self._runners if t not in stopping]


class CrashHistory:
    """Crash times of earlier runs of one role, kept in ``<state_dir>/crashes-<role>.json``."""

    def __init__(self, state_dir: Path, role: str, *, limit: int = 3, window_s: float = 300.0,
                 delay_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.path = state_dir / f"crashes-{role}.json"
        self.marker = state_dir / f"running-{role}.pid"
        self.limit = limit
        self.window_s = window_s
        self.delay_s = delay_s
        self.clock = clock

    def _load(self) -> list[float]:
        try:
            data = json.loads(self.path.read_text())
            return [float(t) for t in data if isinstance(t, int | float)]
        except (OSError, ValueError, TypeError):
            return []

    def crashes(self) -> list[float]:
        """Crash times within the window (epoch seconds)."""
        now = self.clock()
        return [t for t in self._load() if now - t <= self.window_s]

    def record_crash(self) -> None:
        """Remember a crash now (a non-zero exit, or a previous run that left its marker behind)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps([*self.crashes(), self.clock()]))

    def begin(self) -> float:
        """At start: count an unclean previous run as a crash, write our marker, return the delay to wait."""
        if self.marker.exists():
            self.record_crash()
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(os.getpid()))
        return self.delay_s if len(self.crashes()) > self.limit else 0.0

    def end(self, clean: bool) -> None:
        """At exit: a clean stop removes the marker; a failure is recorded as a crash."""
        if not clean:
            self.record_crash()
        with contextlib.suppress(OSError):
            self.marker.unlink()


class LoopWatchdog:
    """A daemon thread that logs when the event loop has not ticked for ``stall_s`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stall_s: float = 5.0, tick_s: float = 0.5,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.loop = loop
        self.stall_s = stall_s
        self.tick_s = tick_s
        self.log = logger or structlog.get_logger()
        self.stalls = 0
        self.last_stack = ""
        self.stalled = threading.Event()
        self._last_tick = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start ticking (call from the loop's thread) and start the watching thread."""
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread.start()

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self._handle = self.loop.call_later(self.tick_s, self._tick)

    def _watch(self) -> None:
        in_stall = False
        while not self._stop.wait(self.tick_s / 2):
            lag = time.monotonic() - self._last_tick
            if lag > self.stall_s and not in_stall:
                in_stall = True
                self.stalls += 1
                frame = sys._current_frames().get(self._loop_thread)
                self.last_stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
                self.log.error("event_loop_stalled", seconds=round(lag, 1), stack=self.last_stack[-4000:])
                self.stalled.set()
            elif lag <= self.stall_s:
                in_stall = False

    def stop(self) -> None:
        """Stop the thread and the ticks."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


class Heartbeat:
    """Logs ``heartbeat`` at WARNING every ``interval_s`` with the fields ``report()`` returns."""

    def __init__(self, report: Callable[[], dict[str, Any]], *, interval_s: float = 900.0,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.report = report
        self.interval_s = interval_s
        self.log = logger or structlog.get_logger()
        self.beats = 0

    def beat(self) -> dict[str, Any]:
        """Log one heartbeat line now and return its fields."""
        fields = self.report()
        self.beats += 1
        self.log.warning("heartbeat", **fields)
        return fields

    async def run(self) -> None:
        """Beat every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.beat()


async def run_guarded(run: Callable[[], Awaitable[bool]], *, state_dir: Path, role: str, cluster: Any,
                      stop: asyncio.Event, log: Any) -> bool:
    """``run()`` — a process's whole life, ``True`` when it ended clean — as every long-running command runs it:
    first the crash-loop delay of ``role``'s :class:`CrashHistory` in ``state_dir`` (a stop during it ends here,
    ``True``: nothing started), then with the :class:`LoopWatchdog` on; a run that ends unclean or raises counts as
    a crash. ``cluster``: the settings' cluster section (crash limits, watchdog)."""
    history = CrashHistory(state_dir, role, limit=cluster.crash_limit, window_s=cluster.crash_window_s,
                           delay_s=cluster.crash_delay_s)
    delay = history.begin()
    if delay:
        log.warning("crash_loop_backoff", delay_s=delay, crashes=len(history.crashes()))
        with contextlib.suppress(TimeoutError):
            await within(stop.wait(), delay)
        if stop.is_set():
            history.end(True)
            return True
    watchdog = LoopWatchdog(asyncio.get_running_loop(), stall_s=cluster.watchdog_stall_s, logger=log)
    watchdog.start()
    clean = False
    try:
        clean = await run()
    finally:
        watchdog.stop()
        history.end(clean)
    return clean


async def stop_within(stop: Awaitable[None], timeout_s: float, log: Any, *,
                      cancel_grace_s: float = CANCEL_GRACE_S) -> bool:
    """Await the graceful ``stop`` for at most ``timeout_s``; ``False`` when it overran (it is then
    cancelled, after logging ``shutdown_incomplete`` with where every task waits) or raised.

    A cancelled stop gets ``cancel_grace_s`` to end; one that does not (it swallowed the cancellation: a library
    read, a bug) is left behind with ``shutdown_stuck`` logged and where every task waits, and the process goes on
    to its exit: the event loop's close cancels it once more, which ends one that swallowed a single cancellation
    (redis-py's blocking read). It used to be awaited without a bound, with nothing logged."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait([stopping], timeout=timeout_s)
    if not done:
        log.error("shutdown_incomplete", error="timeout", seconds=timeout_s, stacks=task_stacks()[-6000:])
        stopping.cancel()
        ended, _ = await asyncio.wait([stopping], timeout=cancel_grace_s)
        if not ended:
            log.error("shutdown_stuck", seconds=cancel_grace_s, stacks=task_stacks()[-6000:],
                      note="the stop did not end when cancelled: left behind (the event loop's close cancels it "
                           "once more; one that never ends holds the process until SIGKILL)")
        elif not stopping.cancelled() and (exc := stopping.exception()) is not None:
            log.error("shutdown_incomplete", error=f"{type(exc).__name__}: {exc}", note="raised once cancelled")
        return False
    if (exc := stopping.exception()) is not None:
        log.error("shutdown_incomplete", error=f"{type(exc).__name__}: {exc}")
        return False
    return True


def task_stacks() -> str:
    """The stacks of every pending task (what a shutdown that overran is waiting for)."""
    lines: list[str] = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        lines.append(f"task {task.get_name()}:")
        coro: Any = task.get_coro()
        while coro is not None:  # follow the await chain down to where it waits
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(lines)


class ErrorAggregator:
    """structlog processor folding repeats of one warning/error into one line with a count.

    Key: (level, event, ``error`` field) — or, without an ``error`` field, all the other fields. The first
    occurrence passes; repeats within ``window_s`` are
    dropped and counted; the first occurrence after the window passes with ``repeated=<dropped count>``.
    """

    LEVELS = frozenset({"warning", "error", "critical", "exception"})

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str, str], list[float]] = {}  # key → [window start, suppressed count]
        self.suppressed = 0

    def __call__(self, _logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if method not in self.LEVELS or event.get("event") == "heartbeat":
            return event
        if "error" in event:  # the same failure, whatever the other fields say
            detail = str(event["error"])[:200]
        else:  # otherwise only an identical line is a repeat
            detail = repr(sorted((k, repr(v)) for k, v in event.items() if k not in ("event", "timestamp")))[:500]
        key = (method, str(event.get("event")), detail)
        now = self.clock()
        state = self._seen.get(key)
        if state is not None and now - state[0] < self.window_s:
            state[1] += 1
            self.suppressed += 1
            raise structlog.DropEvent
        if state is not None and state[1]:
            event["repeated"] = int(state[1])
        if len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = [now, 0]
        return event


def install_error_aggregation(window_s: float = 60.0) -> ErrorAggregator:
    """Insert an :class:`ErrorAggregator` just before structlog's renderer (after ``configure_logging``)."""
    aggregator = ErrorAggregator(window_s)
    processors = list(structlog.get_config()["processors"])
    processors.insert(max(0, len(processors) - 1), aggregator)
    structlog.configure(processors=processors)
    return aggregator
