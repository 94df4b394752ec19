"""Shard leases against the real Redis: exclusive acquire, fenced renewal, expiry, membership split."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from shards.lease import LeaseManager, desired_slots
from smc_quant.store.keys import ClusterKeys


@pytest.fixture
def keys() -> ClusterKeys:
    return ClusterKeys(f"t{uuid.uuid4().hex[:10]}")


async def test_only_one_worker_holds_a_slot(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    a, b = LeaseManager(rds, keys, ttl_ms=5000, owner="a"), LeaseManager(rds, keys, ttl_ms=5000, owner="b")
    assert await a.try_acquire(0)
    assert not await b.try_acquire(0)
    assert await b.holder(0) == "a"
    assert a.held == {0} and b.held == set()
    await rds.delete(keys.shard_lease(0))


async def test_renew_is_fenced(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """A worker whose lease was taken over never extends the new owner's lease and learns it lost it."""
    a, b = LeaseManager(rds, keys, ttl_ms=5000, owner="a"), LeaseManager(rds, keys, ttl_ms=5000, owner="b")
    assert await a.try_acquire(1)
    await rds.set(keys.shard_lease(1), "b", px=5000)  # as if a's lease expired while it stalled and b took it
    assert not await a.renew(1)
    assert a.held == set() and a.lost == 1
    assert await b.holder(1) == "b"
    assert not await a.release(1)  # releasing is fenced too
    assert await b.holder(1) == "b"
    await rds.delete(keys.shard_lease(1))


async def test_renew_extends_and_reclaims_after_a_redis_flush(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    a = LeaseManager(rds, keys, ttl_ms=1000, owner="a")
    assert await a.try_acquire(2)
    await rds.pexpire(keys.shard_lease(2), 50)
    assert await a.renew(2)
    assert 500 < await rds.pttl(keys.shard_lease(2)) <= 1000
    await rds.delete(keys.shard_lease(2))  # Redis restarted without persistence
    assert await a.renew(2) and a.reacquired == 1
    assert await a.holder(2) == "a"
    assert await a.release(2)
    assert await a.holder(2) is None


async def test_expired_lease_is_taken_by_another(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    a, b = LeaseManager(rds, keys, ttl_ms=150, owner="a"), LeaseManager(rds, keys, ttl_ms=150, owner="b")
    assert await a.try_acquire(3)
    for _ in range(100):  # a stops renewing (killed); b polls like a worker's heartbeat
        if await b.try_acquire(3):
            break
        await asyncio.sleep(0.02)
    assert await b.holder(3) == "b"
    await b.release(3)


async def test_membership_expires_and_split_follows(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    a, b = LeaseManager(rds, keys, ttl_ms=200, owner="a"), LeaseManager(rds, keys, ttl_ms=5000, owner="b")
    assert await a.heartbeat() == ["a"]
    assert await b.heartbeat() == ["a", "b"]
    assert desired_slots(["a", "b"], "a", 4) == {0, 2} and desired_slots(["a", "b"], "b", 4) == {1, 3}
    members = ["a", "b"]
    for _ in range(100):  # a dies: its membership expires
        members = await b.heartbeat()
        if members == ["b"]:
            break
        await asyncio.sleep(0.02)
    assert members == ["b"]
    assert desired_slots(members, "b", 4) == {0, 1, 2, 3}
    await b.leave()
    assert await rds.zcard(keys.workers) == 0


def test_split_covers_every_slot_once() -> None:
    members = ["w3", "w1", "w2"]
    for count in (1, 2, 5, 8):
        parts = [desired_slots(members, m, count) for m in members]
        assert sorted(s for p in parts for s in p) == list(range(count))
    assert desired_slots([], "solo", 3) == {0, 1, 2}
