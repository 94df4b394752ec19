"""Shard leases in Redis: who runs which shard slot, with expiry, fenced renewal and rebalancing.

A worker owns slot ``k`` while the key ``<prefix>:lease:shard:<k>`` holds its token. It takes a free
slot with ``SET key token NX PX ttl`` and renews it every ``renew`` seconds with a Lua script that
extends the expiry only if the value is still its own token (the fencing check: a worker that lost its
lease — it stalled longer than the TTL and another took over — never extends someone else's). A
killed worker stops renewing, its keys expire after the TTL and the survivors take its slots.

Membership: every worker refreshes its entry in a sorted set scored by expiry (Redis server time, so
clocks of different hosts do not matter); the live members, sorted, split the slots round-robin
(slot ``k`` → ``members[k mod n]``). Every worker computes the same split from the same list, so a
joining worker makes the others release slots to it and a dead one's slots go to the survivors; a
change of ``SHARD_COUNT`` changes the split the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from smc_quant.store.keys import ClusterKeys

RENEW_LUA = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
"""1: renewed; 2: the key was gone (e.g. Redis restarted empty) and is ours again; 0: someone else holds it."""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

MEMBERS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] ~= '0' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def desired_slots(members: Sequence[str], me: str, shard_count: int) -> set[int]:
    """Slots ``me`` should run: slot k goes to ``sorted(members)[k mod n]`` (``me`` counts as a member)."""
    ordered = sorted(set(members) | {me})
    n = len(ordered)
    mine = ordered.index(me)
    return {k for k in range(shard_count) if k % n == mine}


class LeaseManager:
    """One worker's view of the shard leases: acquire, renew (fenced), release, membership.

    ``redis`` is a ``redis.asyncio.Redis``; every call may raise its ``ConnectionError`` when Redis is
    down — the caller decides (a worker keeps running the shards it has until it learns otherwise).
    """

    def __init__(self, redis: Any, keys: ClusterKeys, *, ttl_ms: int, owner: str | None = None) -> None:
        if ttl_ms < 100:
            raise ValueError("lease ttl must be ≥ 100 ms")
        self.redis = redis
        self.keys = keys
        self.ttl_ms = ttl_ms
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self.held: set[int] = set()
        self.lost = 0
        self.reacquired = 0
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._members = redis.register_script(MEMBERS_LUA)

    async def try_acquire(self, slot: int) -> bool:
        """Take ``slot`` if nobody holds it (SET NX PX)."""
        ok = await self.redis.set(self.keys.shard_lease(slot), self.owner, nx=True, px=self.ttl_ms)
        if ok:
            self.held.add(slot)
        return bool(ok)

    async def renew(self, slot: int) -> bool:
        """Extend ``slot``'s expiry if it is still ours; ``False`` (and forgotten) when another owns it."""
        result = int(await self._renew(keys=[self.keys.shard_lease(slot)], args=[self.owner, self.ttl_ms]))
        if result == 0:
            self.held.discard(slot)
            self.lost += 1
            return False
        if result == 2:
            self.reacquired += 1
        return True

    async def release(self, slot: int) -> bool:
        """Give ``slot`` up (only if it is still ours) so another worker can take it at once."""
        self.held.discard(slot)
        return bool(int(await self._release(keys=[self.keys.shard_lease(slot)], args=[self.owner])))

    async def holder(self, slot: int) -> str | None:
        """The owner token of ``slot`` (None when free)."""
        value = await self.redis.get(self.keys.shard_lease(slot))
        return value.decode() if isinstance(value, bytes) else value

    async def heartbeat(self) -> list[str]:
        """Refresh our membership (expires after the TTL) and return the live members, sorted."""
        raw = await self._members(keys=[self.keys.workers], args=[self.owner, self.ttl_ms])
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)

    async def leave(self) -> None:
        """Drop our membership and every lease we hold (graceful shutdown)."""
        await self._members(keys=[self.keys.workers], args=[self.owner, 0])
        for slot in sorted(self.held):
            await self.release(slot)
