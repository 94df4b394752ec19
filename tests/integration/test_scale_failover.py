"""Chaos on the multi-process deployment: a second worker joins (the first hands it a shard), then SIGKILL a
shard worker; its lease expires and the survivor takes its shard within 30 s; every candle is in PostgreSQL
exactly as the emulator served it (no gap left unfilled); the survivor stops gracefully within 10 s."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from tests.conftest import TEST_REDIS_URL
from tests.integration.cluster_kit import assert_exact, stored_candles
from tests.integration.test_scale_kit import Cluster, candle_count, emulator, universe_of, wait_for

pytestmark = pytest.mark.integration
MINUTES = 10


async def test_killed_worker_shard_is_taken_over_without_a_gap(shared_data: Path, pg_dsn: str,
                                                               tmp_path: Path) -> None:
    await apply_migrations(pg_dsn)
    emu = emulator(shared_data, minutes=MINUTES, speed=30)
    await emu.start()
    cluster = Cluster(emu, pg_dsn, tmp_path, shards=2, lease_ttl_s=2.0)
    keys = ClusterKeys(cluster.prefix, split=2)  # the leases of the 2-shard split
    rds: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)

    async def holders() -> list[str | None]:
        values = [await rds.get(keys.shard_lease(k)) for k in range(2)]
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    try:
        cluster.spawn("w1", "shard")

        async def w1_alone_holds_both() -> bool:
            h = await holders()
            return None not in h and h[0] == h[1]

        await wait_for(w1_alone_holds_both, 90, "the first worker holding both shards")
        cluster.spawn("w2", "shard")  # joining: w1 hands one shard over (flushed, then released)

        async def split() -> bool:
            h = await holders()
            return None not in h and h[0] != h[1]

        symbols = await universe_of(emu)
        assert len(symbols) >= 300

        async def subscribed() -> bool:
            return bool(emu.stats["subscriptions"] >= len(symbols))

        await wait_for(split, 90, "two workers holding one shard each")
        await wait_for(subscribed, 60, "every symbol subscribed")
        emu.resume()
        await asyncio.wait_for(emu.wait_minutes(3), 60)
        owners = await holders()
        w1_log = cluster.log("w1")
        started = [e["slot"] for e in w1_log if e.get("event") == "slot_started"]
        stopped = [e["slot"] for e in w1_log if e.get("event") == "slot_stopped"]
        assert sorted(started) == [0, 1] and len(stopped) == 1  # rebalanced when w2 joined
        victim_slot = next(s for s in started if s not in stopped)
        victim_owner = owners[victim_slot]
        assert cluster.kill("w1") == -9

        async def taken_over() -> bool:
            h = await holders()
            return h[victim_slot] not in (None, victim_owner) and h[0] == h[1]

        took = await wait_for(taken_over, 30, "the survivor taking the dead worker's shard")
        assert took < 30
        await asyncio.wait_for(emu.wait_minutes(MINUTES), 120)
        total = len(symbols) * MINUTES

        async def all_stored() -> bool:
            return await candle_count(pg_dsn) >= total

        await wait_for(all_stored, 90, f"{total} candles in PostgreSQL")
        assert_exact(emu, await stored_candles(pg_dsn), symbols, MINUTES)
        survivor = [e for e in cluster.log("w2") if e.get("event") == "slot_started"]
        assert sorted(e["slot"] for e in survivor) == [0, 1]
        print(f"shard taken over {took:.1f}s after the SIGKILL")
        stop_started = asyncio.get_running_loop().time()
        codes = cluster.stop_all()
        assert codes == {"w2": 0}  # graceful SIGTERM stop of the survivor ...
        assert asyncio.get_running_loop().time() - stop_started < 10  # ... within 10 s
        assert await rds.zcard(keys.workers) == 0 and await holders() == [None, None]  # left cleanly
    finally:
        cluster.stop_all()
        await rds.delete(*[k async for k in rds.scan_iter(f"{cluster.prefix}:*")] or ["_"])
        await rds.aclose()
        await emu.stop()
