"""One ShardWorker in process (real Redis, PostgreSQL, the emulator): converge, a universe change restarts only
the slots whose symbols changed, a joining worker gets its share handed back, a slot whose feed keeps dying is
restarted, and the stop leaves nothing behind (no membership, no lease)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from shards.assignment import assign
from shards.lease import desired_slots
from shards.worker import ShardWorker
from smc_quant.settings import load_settings
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from tests.conftest import TEST_REDIS_URL
from tests.integration.test_scale_kit import emulator

pytestmark = pytest.mark.integration


async def test_worker_converges_and_follows_universe_and_members(shared_data: Path, pg_dsn: str,
                                                                     tmp_path: Path) -> None:
    await apply_migrations(pg_dsn)
    emu = emulator(shared_data, minutes=2, speed=60)
    await emu.start()
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def make_worker(shards: int, owner: str = "w-a") -> ShardWorker:
        s = load_settings(shard_count=shards, database_url=pg_dsn, redis_url=TEST_REDIS_URL, mode="replay",
                          state_dir=tmp_path, log_level="WARNING",
                          venue={"rest_base": emu.rest_url, "ws_market_base": emu.ws_market_base,
                                 "ws_public_base": emu.ws_public_base},
                          universe={"quote_assets": ("USDT", "USDC")}, ops={"port": 0},
                          feed={"heartbeat_timeout_s": 30.0}, learner={"enabled": False},
                          cluster={"key_prefix": prefix, "lease_ttl_s": 5.0, "lease_renew_s": 60.0})
        return ShardWorker(s, owner=owner)

    rds: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)
    keys = ClusterKeys(prefix, split=3)  # the leases and members of the 3-shard split
    worker = make_worker(3)
    try:
        await worker.start()
        await worker.converge()  # the lease loop's first round may still be running: one more is harmless
        assert worker.converged.is_set() and sorted(worker.slots) == [0, 1, 2]
        assert [await rds.get(keys.shard_lease(k)) for k in range(3)] == [b"w-a"] * 3
        report = worker.report()  # the heartbeat line's fields
        assert report["owner"] == "w-a" and set(report["shards"]) == {"0", "1", "2"}
        assert report["signals_buffered"] == 0 and report["redis_down"] is False
        assert report["setups"] == 0 and worker.metrics()["strategy_best_confidence"] == 0.0
        full = worker.symbols
        assert sum(len(f.symbols) for m in worker.slots.values() for f in m.feeds) == len(full) >= 300
        # the universe loses five symbols: only the slots that owned them restart
        gone = full[:5]
        old, new = assign(full, 3), assign(full[5:], 3)
        restarted = await worker.apply_universe(full[5:])
        assert restarted == [k for k in range(3) if old[k] != new[k]]
        assert all(set(gone).isdisjoint(f.symbols) for m in worker.slots.values() for f in m.feeds)
        # another worker joins: the split gives it a share, ours is released (flushed first)
        other = f"{prefix}-b"
        await rds.zadd(keys.workers, {other: 10**15})
        await worker.converge()
        mine = desired_slots([other, "w-a"], "w-a", 3)
        assert set(worker.slots) == mine and len(mine) in (1, 2)
        for k in set(range(3)) - mine:
            assert await rds.get(keys.shard_lease(k)) is None  # handed back for the newcomer
        # a worker of another SHARD_COUNT (a rolling restart changing it) splits among its own kind: it takes
        # both of its slots, ours keep theirs — every symbol watched, none left to nobody
        await rds.zrem(keys.workers, other)
        await worker.converge()
        two = make_worker(2, owner="w-2")
        try:
            await two.start()
            await two.converge()
            await worker.converge()
            assert sorted(two.slots) == [0, 1] and sorted(worker.slots) == [0, 1, 2]
            assert {s for m in two.slots.values() for f in m.feeds for s in f.symbols} == set(two.symbols)
        finally:
            await two.stop()
    finally:
        await rds.zrem(keys.workers, f"{prefix}-b")
        await worker.stop()
        assert await rds.zcard(keys.workers) == 0
        assert [await rds.get(keys.shard_lease(k)) for k in range(3)] == [None] * 3
        await rds.aclose()
        await emu.stop()


async def test_a_slot_whose_feed_keeps_dying_is_restarted_from_postgres(shared_data: Path, pg_dsn: str,
                                                                         tmp_path: Path) -> None:
    """A slot's feed dies past ``max_task_restarts``: ``/health`` fails at once naming the shard; the next lease round
    stops the slot, hands its lease back and takes it again, warm-started — instead of renewing the lease of a dead
    slot for ever."""
    await apply_migrations(pg_dsn)
    emu = emulator(shared_data, minutes=2, speed=60)
    await emu.start()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    s = load_settings(shard_count=1, database_url=pg_dsn, redis_url=TEST_REDIS_URL, mode="replay", state_dir=tmp_path,
                      log_level="WARNING", venue={"rest_base": emu.rest_url, "ws_market_base": emu.ws_market_base,
                                                  "ws_public_base": emu.ws_public_base},
                      universe={"quote_assets": ("USDT", "USDC")}, ops={"port": 0},
                      feed={"heartbeat_timeout_s": 30.0, "workers": 1, "bootstrap_candles": 0},
                      learner={"enabled": False},
                      cluster={"key_prefix": prefix, "lease_ttl_s": 5.0, "lease_renew_s": 60.0, "max_task_restarts": 1})
    worker = ShardWorker(s, owner="w-a")
    rds: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)
    try:
        await worker.start()
        await worker.converge()
        assert worker.ops is not None and worker.ops.health()[0]
        dead = worker.slots[0]
        for _ in range(2):  # one per run of the feed (one worker task): a crash, a restart, a crash
            dead.feeds[0].queue.put_nowait((0, None))  # type: ignore[arg-type]
        await asyncio.wait_for(dead.failed.wait(), 10)
        ok, body = worker.ops.health()
        assert not ok and body["stale_shards"] == [0]
        assert "TypeError" in body["shards"][0]["down"]  # type: ignore[index]
        with capture_logs() as logs:
            await worker.converge()
        [failed] = [e for e in logs if e["event"] == "slot_failed"]
        assert (failed["slot"], failed["reason"]) == (0, "task shard-0 crashed 2 times in 300s")
        assert worker.slots[0] is not dead and worker.slots[0].failure is None
        assert await rds.get(ClusterKeys(prefix, split=1).shard_lease(0)) == b"w-a"
        assert worker.metrics()["worker_slot_failures"] == 1 and worker.ops.health()[0]
    finally:
        await worker.stop()
        await rds.aclose()
        await emu.stop()
