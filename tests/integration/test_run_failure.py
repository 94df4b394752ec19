"""Single-process `smc-quant run` (``shards.app``): a shard that crash-loops ends the process non-zero instead of
staying down for ever, and its Redis client is bounded like the workers' (a Redis that hangs never hangs it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from shards.app import Service, ServiceUnavailable, run_service, run_until_signalled
from shards.supervisor import CrashHistory
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.settings import load_settings
from tests.conftest import TEST_REDIS_URL
from tests.integration.cluster_kit import settings_for
from tests.unit.test_weight_governor import SilentRedis

pytestmark = pytest.mark.integration


class StartedService(Service):
    """The service, saying when its start is done (instead of polling for it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = asyncio.Event()

    async def start(self) -> None:
        await super().start()
        self.started.set()


async def test_a_shard_that_crash_loops_ends_run_with_a_failure(shared_data: Path, pg_dsn: str) -> None:
    """The shard's feed dies past ``max_task_restarts``: ``run_until_signalled`` no longer waits only for SIGTERM —
    it logs ``process_failed`` with the supervisor's reason, stops the service in order and returns False, which
    `smc-quant run` turns into exit 1 (``cmd_run``), so ``restart: unless-stopped`` starts it again, warm from
    PostgreSQL. It used to wait for a stop signal for ever with that shard's symbols unwatched."""
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=60.0, updates_per_candle=1, map_to_exchange_info=True,
                                  max_minutes=5, start_paused=True))
    await emu.start()
    service = StartedService(settings_for(emu, pg_dsn, shards=1, workers=1, cluster={"max_task_restarts": 1}))
    stop = asyncio.Event()
    run: asyncio.Task[bool] | None = None
    try:
        with capture_logs() as logs:
            run = asyncio.create_task(run_until_signalled(service, stop))
            await asyncio.wait([run, asyncio.ensure_future(service.started.wait())],
                               return_when=asyncio.FIRST_COMPLETED, timeout=120)
            assert service.started.is_set() and service.cluster is not None, run.done() and run.exception()
            for _ in range(2):  # one per run of the feed (one worker task): a crash, a restart, a crash
                service.cluster.feeds[0].queue.put_nowait((0, None))  # type: ignore[arg-type]
            clean = await asyncio.wait_for(asyncio.shield(run), 30)
        assert clean is False and not stop.is_set()
        [failed] = [e for e in logs if e["event"] == "process_failed"]
        assert failed["reason"] == "task shard-0 crashed 2 times in 300s"
        events = [e["event"] for e in logs]
        assert events.index("supervisor_giving_up") < events.index("process_failed")
        assert "service_stopped" in events  # the stop ran in order before the exit
    finally:
        stop.set()
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        await emu.stop()


class BrokenReport(StartedService):
    """A service whose heartbeat report raises (a bug in any background task): the fault injected."""

    def report(self) -> dict[str, Any]:
        raise RuntimeError("report broke")


async def test_a_background_task_that_crash_loops_ends_run_with_a_failure(shared_data: Path, pg_dsn: str) -> None:
    """The background tasks of `run` (universe refresh, champion, learner, housekeeping, heartbeat) are supervised
    like the shards' feeds: the heartbeat crashes, is logged with its error and restarted, and past
    ``max_task_restarts`` the run ends with ``process_failed`` (exit 1, the orchestrator restarts it). They used to be
    plain tasks: the crash went unseen until the process stopped, and the run went on without them for good."""
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=60.0, updates_per_candle=1, map_to_exchange_info=True,
                                  max_minutes=5, start_paused=True))
    await emu.start()
    settings = settings_for(emu, pg_dsn, shards=1, workers=1, cluster={"max_task_restarts": 1, "heartbeat_s": 0.01})
    service = BrokenReport(settings)
    stop = asyncio.Event()
    run: asyncio.Task[bool] | None = None
    try:
        with capture_logs() as logs:
            run = asyncio.create_task(run_until_signalled(service, stop))
            clean = await asyncio.wait_for(asyncio.shield(run), 120)
        assert clean is False and not stop.is_set()
        crashed = [e for e in logs if e["event"] == "task_crashed"]
        assert [(e["task"], e["error"]) for e in crashed] == [("heartbeat", "RuntimeError: report broke")] * 2
        assert [e["task"] for e in logs if e["event"] == "task_restarted"] == ["heartbeat"]
        [failed] = [e for e in logs if e["event"] == "process_failed"]
        assert failed["reason"] == "task heartbeat crashed 2 times in 300s"
        assert "service_stopped" in [e["event"] for e in logs]
    finally:
        stop.set()
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        await emu.stop()


async def test_run_counts_its_crashes_and_delays_a_start_after_a_crash_loop(tmp_path: Path, pg_dsn: str) -> None:
    """`smc-quant run` keeps the workers' crash history in the state dir (``run_service``): a start that fails (the
    exchange unreachable, nothing cached) is recorded as a crash; after more than ``cluster.crash_limit`` of them
    within the window the next start waits ``cluster.crash_delay_s`` first — a stop during that wait ends it
    without starting anything. `run` used to restart at full speed into the same failure, every time."""
    settings = load_settings(database_url=pg_dsn, redis_url=None, state_dir=tmp_path, log_level="WARNING",
                             venue={"rest_base": "http://127.0.0.1:9", "request_timeout_s": 2.0},
                             cluster={"crash_limit": 1, "crash_delay_s": 600.0})
    history = CrashHistory(tmp_path, "run", limit=1, window_s=settings.cluster.crash_window_s)
    for attempt in (1, 2):
        with pytest.raises(ServiceUnavailable):
            await run_service(Service(settings), asyncio.Event())
        assert len(history.crashes()) == attempt and not history.marker.exists()
    stop = asyncio.Event()
    stop.set()  # SIGTERM during the wait
    service = Service(settings)
    with capture_logs() as logs:
        assert await run_service(service, stop) is True
    [backoff] = [e for e in logs if e["event"] == "crash_loop_backoff"]
    assert backoff["delay_s"] == 600.0 and backoff["crashes"] == 2
    assert service.pool is None  # nothing was started
    assert len(history.crashes()) == 2 and not history.marker.exists()


async def test_runs_redis_client_is_bounded_like_the_workers(tmp_path: Path) -> None:
    """`run`'s Redis client gets the workers' bounds (connect 2 s, command 5 s, idle connections checked every
    10 s) whatever redis-py's defaults are (pyproject allows redis>=5.0, whose socket timeout default is none):
    with a Redis that accepts the connection and never answers, the start's ping fails after the timeout and the
    service goes on without Redis (``redis_unavailable``) instead of hanging there for ever."""
    bounds = ("socket_connect_timeout", "socket_timeout", "health_check_interval")
    service = Service(load_settings(redis_url=TEST_REDIS_URL, state_dir=tmp_path))
    client = await service._connect_redis()
    if client is None:
        pytest.skip("Redis not reachable")
    try:
        got = {k: client.connection_pool.connection_kwargs.get(k) for k in bounds}
    finally:
        await client.aclose()
    assert got == {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 10}
    async with SilentRedis() as server:
        service = Service(load_settings(redis_url=server.url, state_dir=tmp_path))
        with capture_logs() as logs:
            assert await asyncio.wait_for(service._connect_redis(), 20) is None
        assert [e["error"] for e in logs if e["event"] == "redis_unavailable"] == ["TimeoutError"]
