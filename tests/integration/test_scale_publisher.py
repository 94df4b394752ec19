"""The worker's signal publisher when Redis refuses writes (real Redis): the error is not a connection error —
like ``READONLY`` after a failover, ``OOM`` under ``noeviction`` or ``MISCONF`` — so it used to end the flusher
for good, silently: every later signal and mark dropped, ``/health`` green, and the stop re-raising it (leases
and sockets never released).

The real error comes from the real server, on this test's own keys only: the stream key is made a plain string,
so every ``XADD`` to it answers ``WRONGTYPE`` (a ``ResponseError``, the family of the three above); deleting the
key lets writes through again. Nothing server-wide is touched, so tests running concurrently on the same Redis
are not disturbed."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from shards.bus import SignalPublisher, decode_signal
from shards.worker import ShardWorker
from smc_quant.domain.trading import Signal
from smc_quant.settings import Settings, load_settings
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from tests.conftest import TEST_REDIS_URL
from tests.integration.test_scale_kit import emulator

pytestmark = pytest.mark.integration


def _worker_settings(emu: Any, pg_dsn: str, tmp_path: Path, prefix: str) -> Settings:
    """One worker of one slot on the emulator, leases under ``prefix``, rounds only when the test runs them."""
    return load_settings(shard_count=1, database_url=pg_dsn, redis_url=TEST_REDIS_URL, mode="replay",
                         state_dir=tmp_path, log_level="WARNING",
                         venue={"rest_base": emu.rest_url, "ws_market_base": emu.ws_market_base,
                                "ws_public_base": emu.ws_public_base},
                         universe={"quote_assets": ("USDT", "USDC")}, ops={"port": 0},
                         feed={"heartbeat_timeout_s": 30.0}, learner={"enabled": False},
                         cluster={"key_prefix": prefix, "lease_ttl_s": 60.0, "lease_renew_s": 60.0,
                                  "shutdown_timeout_s": 3.0})


def _signal(i: int) -> Signal:
    return Signal(f"sig-{i}", "BTCUSDT", "LONG", 1_700_000_000_000 + i * 60_000, Decimal("27123.45"), 0.73, 0.8,
                  1.6, "sweep>choch>fvg", (0.1, -2.5), 0.42, 7, "v3", 1_700_000_000_500 + i)


class HeldBackoff:
    """The publisher's retry wait, held until the test lets it go: ``backing_off`` says the flusher met an error
    and is alive, waiting to retry (instead of a sleep-poll)."""

    def __init__(self) -> None:
        self.backing_off = asyncio.Event()
        self.release = asyncio.Event()
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.backing_off.set()
        await self.release.wait()


async def test_a_refused_write_is_retried_and_the_signals_kept(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """Redis refuses the writes: the flusher counts the error, logs it once, keeps the signals and retries with
    backoff; data unwritten past the grace period turns its health "stuck". Once Redis takes writes again every
    signal is delivered, in order, and the health is back."""
    now = [1_000.0]
    held = HeldBackoff()
    pub = SignalPublisher(rds, keys.signals, retry_s=0.01)
    pub.sleep, pub.monotonic = held, lambda: now[0]  # type: ignore[method-assign]
    await rds.set(keys.signals, b"not a stream")
    pub.start()
    try:
        with capture_logs() as logs:
            pub.publish(_signal(1))
            await asyncio.wait_for(held.backing_off.wait(), 10)
        assert pub._task is not None and not pub._task.done()  # alive, waiting to retry
        assert pub.stats.redis_errors == 1 and pub.last_error is not None and "WRONGTYPE" in pub.last_error
        [down] = [e for e in logs if e["event"] == "signal_bus_unavailable"]
        assert "ResponseError" in down["error"] and down["buffered"] == 1
        assert pub.health()[0]  # within the grace period
        now[0] += pub.grace_s + 1
        pub.publish(_signal(2))  # published while refused: kept
        ok, body = pub.health()
        assert not ok and body["status"] == "stuck" and body["buffered"] == 2 and body["unwritten_s"] > pub.grace_s
        assert "WRONGTYPE" in body["error"]
        await rds.delete(keys.signals)  # Redis takes writes again
        with capture_logs() as logs:
            held.release.set()
            assert await pub.drain(10)
        assert [e["event"] for e in logs] == ["signal_bus_recovered"]
        entries: Any = await rds.xrange(keys.signals)
        assert [decode_signal(f[b"s"]).signal_id for _, f in entries] == ["sig-1", "sig-2"]
        ok, body = pub.health()
        assert ok and body["status"] == "ok" and body["error"] is None and pub.stats.published == 2
    finally:
        await pub.stop()


async def test_stop_never_raises(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """Stopping while Redis still refuses writes, or after the flusher died of a bug, returns normally (the
    worker's stop goes on to hand back its leases and close its sockets)."""
    held = HeldBackoff()
    pub = SignalPublisher(rds, keys.signals)
    pub.sleep = held  # type: ignore[method-assign]
    await rds.set(keys.signals, b"not a stream")
    pub.start()
    pub.publish(_signal(1))
    await asyncio.wait_for(held.backing_off.wait(), 10)
    await pub.stop()

    class Broken:
        def pipeline(self, **_: Any) -> Any:
            raise RuntimeError("a bug in the flusher")

    buggy = SignalPublisher(Broken(), keys.signals)
    buggy.start()
    buggy.publish(_signal(2))
    assert buggy._task is not None
    await asyncio.wait([buggy._task])
    with capture_logs() as logs:
        await buggy.stop()
    [failed] = [e for e in logs if e["event"] == "signal_publisher_failed"]
    assert failed["error"] == "RuntimeError: a bug in the flusher"


async def test_worker_health_shows_a_publisher_that_cannot_write_and_its_stop_still_releases(
        shared_data: Path, pg_dsn: str, tmp_path: Path, rds: aioredis.Redis) -> None:
    """A worker whose Redis refuses the signal writes: its flusher stays alive (supervised, retrying), ``/health``
    answers 503 with ``signal_bus`` "stuck" once signals waited past the grace; the stop, with Redis still
    refusing, gives up the drain after its bound and still hands back its leases and membership."""
    await apply_migrations(pg_dsn)
    emu = emulator(shared_data, minutes=2, speed=60)  # paused: no candles, no marks, only the test's signal
    await emu.start()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    s = _worker_settings(emu, pg_dsn, tmp_path, prefix)
    keys, lease_keys = ClusterKeys(prefix), ClusterKeys(prefix, split=1)
    worker = ShardWorker(s, owner="w-a")
    now = [1_000.0]
    held = HeldBackoff()
    try:
        await worker.start()
        await worker.converge()
        pub, ops = worker.publisher, worker.ops
        assert pub is not None and ops is not None and await rds.get(lease_keys.shard_lease(0)) == b"w-a"
        pub.sleep, pub.monotonic = held, lambda: now[0]  # type: ignore[method-assign]
        await rds.set(keys.signals, b"not a stream")
        pub.publish(_signal(1))
        await asyncio.wait_for(held.backing_off.wait(), 10)
        flusher = worker.supervisor.records["publisher"].task
        assert flusher is not None and not flusher.done()
        assert ops.health()[1]["signal_bus"]["status"] == "ok"  # type: ignore[index]  # within the grace
        now[0] += pub.grace_s + 1
        ok, body = ops.health()
        bus: Any = body["signal_bus"]
        assert not ok and bus["status"] == "stuck" and bus["buffered"] == 1 and "WRONGTYPE" in bus["error"]
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{ops.port}/health") as resp:
            assert resp.status == 503 and (await resp.json())["signal_bus"]["status"] == "stuck"
        assert worker.metrics()["signal_redis_errors"] == 1 and worker.report()["signal_bus_error"] == bus["error"]
    finally:
        await worker.stop()  # Redis still refuses the stream: the drain gives up, the rest of the stop goes on
        assert await rds.zcard(lease_keys.workers) == 0 and await rds.get(lease_keys.shard_lease(0)) is None
        await rds.delete(keys.signals, keys.marks)
        await emu.stop()


async def test_a_lease_round_that_redis_refuses_keeps_the_slots_running(
        shared_data: Path, pg_dsn: str, tmp_path: Path, rds: aioredis.Redis) -> None:
    """The lease loop met a refusal (here WRONGTYPE on the membership key; READONLY/OOM/MISCONF alike) as a crash:
    restarted until the supervisor gave up and the process exited, its buffered signals lost. A refused round is
    now what an unreachable Redis is: the slots keep running, and the next good round recovers."""
    await apply_migrations(pg_dsn)
    emu = emulator(shared_data, minutes=2, speed=60)
    await emu.start()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    s = _worker_settings(emu, pg_dsn, tmp_path, prefix)
    lease_keys = ClusterKeys(prefix, split=1)
    worker = ShardWorker(s, owner="w-a")
    try:
        await worker.start()
        await worker.converge()
        assert set(worker.slots) == {0}
        await rds.delete(lease_keys.workers)
        await rds.set(lease_keys.workers, b"not a sorted set")
        with capture_logs() as logs:
            await worker.lease_round()  # refused: no exception, the slot stays
        assert set(worker.slots) == {0}
        [error] = [e["error"] for e in logs if e["event"] == "redis_unavailable"]
        assert error.startswith("ResponseError: WRONGTYPE")
        await rds.delete(lease_keys.workers)
        with capture_logs() as logs:
            await worker.lease_round()
        assert "redis_recovered" in [e["event"] for e in logs] and set(worker.slots) == {0}
    finally:
        await worker.stop()
        await rds.delete(lease_keys.workers)
        await emu.stop()
