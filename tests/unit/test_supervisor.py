"""Lifecycle pieces: supervised restarts and giving up, crash-loop backoff on disk, the loop watchdog,
the heartbeat line and the aggregation of repeated errors."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from shards.supervisor import CrashHistory, ErrorAggregator, Heartbeat, LoopWatchdog, Supervisor, stop_within
from smc_quant.tasks import within


async def test_crashed_task_restarts_with_backoff_and_is_reported() -> None:
    runs: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        done.set()
        await asyncio.Event().wait()

    sup = Supervisor(backoff_initial_s=0.01, max_restarts=5)
    with capture_logs() as logs:
        sup.spawn("flaky", flaky)
        await asyncio.wait_for(done.wait(), 5)
    assert len(runs) == 3 and sup.crash_count == 2 and not sup.failed.is_set()
    crashed = [e for e in logs if e["event"] == "task_crashed"]
    assert len(crashed) == 2 and crashed[0]["task"] == "flaky" and "RuntimeError: boom" in crashed[0]["error"]
    assert "Traceback" in crashed[0]["traceback"]
    assert [e["restarts"] for e in logs if e["event"] == "task_restarted"] == [1, 2]
    await sup.stop()


async def test_stop_cancels_again_a_task_that_swallowed_its_cancellation() -> None:
    """redis-py's asyncio client can swallow a cancellation that lands inside a blocking read; stop()
    cancels such a task again until it ends, instead of waiting for it forever."""
    started = asyncio.Event()
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        started.set()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # swallowed, as the redis client does when the cancel hits its race window
                raise

    sup = Supervisor()
    sup.spawn("signals", stubborn)
    await started.wait()
    with capture_logs() as logs:
        await asyncio.wait_for(sup.stop(), 10)
    assert cancels == 2
    assert [e["tasks"] for e in logs if e["event"] == "task_ignored_cancel"] == [["signals", "supervise-signals"]]


async def test_repeated_crashes_fail_the_supervisor() -> None:
    async def broken() -> None:
        raise ValueError("always")

    sup = Supervisor(backoff_initial_s=0.001, max_restarts=3, window_s=60)
    sup.spawn("broken", broken)
    await asyncio.wait_for(sup.failed.wait(), 5)
    assert sup.crash_count == 4 and sup.failure is not None and "broken" in sup.failure
    await sup.stop()


def test_crash_history_delays_a_crash_loop(tmp_path: Path) -> None:
    now = [1_000_000.0]
    hist = CrashHistory(tmp_path, "shard", limit=3, window_s=300, delay_s=60, clock=lambda: now[0])
    assert hist.begin() == 0.0
    hist.end(clean=True)  # a clean stop is not a crash
    assert hist.crashes() == []
    for _ in range(4):  # four SIGKILLed runs leave their marker behind
        assert hist.begin() == 0.0 or len(hist.crashes()) > 3
        now[0] += 10
    assert len(hist.crashes()) == 3
    assert hist.begin() == 60.0  # the 4th crash within 5 min → wait 60 s before starting
    hist.end(clean=False)
    assert len(hist.crashes()) == 5
    now[0] += 301  # five minutes later the history no longer counts
    assert hist.begin() == 0.0
    (tmp_path / "crashes-shard.json").write_text("not json")
    assert hist.crashes() == []  # a damaged file is an empty history, not a crash


async def test_watchdog_reports_a_stalled_loop_with_its_stack() -> None:
    dog = LoopWatchdog(asyncio.get_running_loop(), stall_s=0.3, tick_s=0.05)
    with capture_logs() as logs:
        dog.start()
        await asyncio.sleep(0)

        def blocking_call_in_the_loop() -> None:
            dog.stalled.wait(5)  # blocks the loop thread until the watchdog noticed

        blocking_call_in_the_loop()
        dog.stop()
    assert dog.stalls == 1
    assert "blocking_call_in_the_loop" in dog.last_stack
    stalled = [e for e in logs if e["event"] == "event_loop_stalled"]
    assert len(stalled) == 1 and stalled[0]["seconds"] >= 0.3


async def test_watchdog_is_quiet_while_the_loop_ticks() -> None:
    dog = LoopWatchdog(asyncio.get_running_loop(), stall_s=0.5, tick_s=0.05)
    dog.start()
    await asyncio.sleep(0.8)  # a healthy loop for longer than the stall threshold (the time passing is the test)
    dog.stop()
    assert dog.stalls == 0


def test_heartbeat_line_carries_the_report() -> None:
    hb = Heartbeat(lambda: {"shards": {"0": {"frames_per_s": 12.5, "lag_s": 0.4}}, "open_positions": 2,
                            "pnl": "12.5", "model_version": 3}, interval_s=900)
    with capture_logs() as logs:
        fields = hb.beat()
    assert logs == [{"event": "heartbeat", "log_level": "warning", **fields}]
    assert hb.beats == 1


def test_repeated_errors_aggregate_into_one_line_with_a_count() -> None:
    now = [0.0]
    agg = ErrorAggregator(window_s=60, clock=lambda: now[0])
    out: list[Any] = []

    def emit(level: str, event: str, **kw: Any) -> None:
        with contextlib.suppress(structlog.DropEvent):
            out.append(agg(None, level, {"event": event, **kw}))

    for _ in range(50):
        emit("error", "redis_down", error="ConnectionError: refused")
        now[0] += 1
    emit("error", "other_failure", error="x")  # another key passes at once
    emit("info", "redis_down")  # below warning: never aggregated
    assert [e["event"] for e in out] == ["redis_down", "other_failure", "redis_down"]
    now[0] += 60
    emit("error", "redis_down", error="ConnectionError: refused")
    assert out[-1]["repeated"] == 49 and agg.suppressed == 49


@pytest.mark.parametrize("level", ["warning", "error"])
def test_aggregator_keys_on_the_error_text(level: str) -> None:
    agg = ErrorAggregator(window_s=60, clock=lambda: 0.0)
    assert agg(None, level, {"event": "e", "error": "a"})
    assert agg(None, level, {"event": "e", "error": "b"})
    with pytest.raises(structlog.DropEvent):
        agg(None, level, {"event": "e", "error": "a"})


def test_lines_without_an_error_field_aggregate_only_when_identical() -> None:
    agg = ErrorAggregator(window_s=60, clock=lambda: 0.0)
    assert agg(None, "warning", {"event": "slot_started", "slot": 0})
    assert agg(None, "warning", {"event": "slot_started", "slot": 1})
    with pytest.raises(structlog.DropEvent):
        agg(None, "warning", {"event": "slot_started", "slot": 1, "timestamp": "later"})


from shards.worker import ClusterProcess, run_process  # noqa: E402
from smc_quant.settings import load_settings  # noqa: E402


class _Proc(ClusterProcess):
    """A minimal cluster process for ``run_process``: one supervised task, optionally crashing."""

    def __init__(self, tmp: Path, *, crash: bool) -> None:
        super().__init__(load_settings(state_dir=tmp, cluster={"max_task_restarts": 2, "crash_delay_s": 0.2,
                                                               "crash_limit": 1, "watchdog_stall_s": 5.0}))
        self.supervisor.backoff_initial_s = 0.001
        self.crash = crash
        self.stopped = False
        self.started = asyncio.Event()

    async def start(self) -> None:
        async def work() -> None:
            self.started.set()
            if self.crash:
                raise RuntimeError("boom")
            await asyncio.Event().wait()

        self.supervisor.spawn("work", work)

    async def stop(self) -> None:
        await self.supervisor.stop()
        self.stopped = True


async def _run(proc: _Proc, stop: asyncio.Event) -> int:
    return await run_process(proc, stop)


async def test_run_process_exits_non_zero_when_a_task_crash_loops(tmp_path: Path) -> None:
    proc = _Proc(tmp_path, crash=True)
    assert await asyncio.wait_for(_run(proc, asyncio.Event()), 10) == 1
    assert proc.stopped
    history = CrashHistory(tmp_path, "process")
    assert len(history.crashes()) == 1 and not history.marker.exists()


async def test_run_process_stops_cleanly_on_request_and_backs_off_after_crash_loops(tmp_path: Path) -> None:
    proc = _Proc(tmp_path, crash=False)
    stop = asyncio.Event()
    run = asyncio.create_task(_run(proc, stop))
    await asyncio.wait_for(proc.started.wait(), 5)
    stop.set()  # SIGTERM
    assert await asyncio.wait_for(run, 10) == 0 and proc.stopped
    history = CrashHistory(tmp_path, "process")
    assert history.crashes() == []
    history.record_crash()
    history.record_crash()  # two crashes > crash_limit 1: the next start waits crash_delay_s first
    proc = _Proc(tmp_path, crash=False)
    stop = asyncio.Event()
    with capture_logs() as logs:
        run = asyncio.create_task(_run(proc, stop))
        await asyncio.wait_for(proc.started.wait(), 5)
        stop.set()
        assert await asyncio.wait_for(run, 10) == 0
    assert any(e["event"] == "crash_loop_backoff" and e["delay_s"] == 0.2 for e in logs)


async def test_restart_backoff_starts_over_after_a_healthy_run() -> None:
    """Four quick crashes grow the backoff to its maximum; a run that then lasted longer than the longest wait
    (here two minutes of the supervisor's clock) was healthy: its crash restarts after the initial delay again —
    not the maximum for the rest of the process's life."""
    now = [0.0]
    delays: list[float] = []
    runs = 0
    done = asyncio.Event()

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    async def crashes() -> None:
        nonlocal runs
        runs += 1
        if runs == 5:
            now[0] += 120.0  # this run lasted two minutes before it crashed
        if runs == 7:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError(f"crash {runs}")

    sup = Supervisor(backoff_initial_s=0.125, backoff_max_s=1.0, max_restarts=100, window_s=1e9,
                     clock=lambda: now[0])
    sup.sleep = sleep
    with capture_logs() as logs:
        sup.spawn("flaky", crashes)
        await asyncio.wait_for(done.wait(), 10)
    await sup.stop()
    assert delays == [0.125, 0.25, 0.5, 1.0, 0.125, 0.25]
    assert [e["after_s"] for e in logs if e["event"] == "task_restarted"] == delays


async def test_stop_of_named_tasks_leaves_the_others_running() -> None:
    """A worker stops everything but its signal flusher first, and the flusher after the final drain."""
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    def forever(name: str) -> Any:
        async def run() -> None:
            started[name].set()
            await asyncio.Event().wait()
        return run

    sup = Supervisor()
    sup.spawn("a", forever("a"))
    sup.spawn("b", forever("b"))
    await asyncio.gather(*(e.wait() for e in started.values()))
    await sup.stop(["a"])
    a, b = sup.records["a"].task, sup.records["b"].task
    assert a is not None and a.cancelled() and b is not None and not b.done()
    await sup.stop()
    assert b.cancelled()


async def test_a_stop_that_does_not_end_when_cancelled_is_left_behind() -> None:
    """The stop overran its budget and was cancelled, but its cleanup does not end (a read that swallows the
    cancellation). It was awaited without a bound: SIGTERM never ended the process, until the orchestrator's
    SIGKILL. It gets a grace, then is left behind, said with where it waits."""
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise

    with capture_logs() as logs:
        clean = await within(stop_within(stubborn(), 0.01, structlog.get_logger(), cancel_grace_s=0.01), 10)
    assert clean is False
    assert [e["event"] for e in logs] == ["shutdown_incomplete", "shutdown_stuck"]
    assert "stubborn" in logs[1]["stacks"]
    release.set()  # let it end before the test's loop closes
