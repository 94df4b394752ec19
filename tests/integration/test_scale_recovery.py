"""Chaos on the infrastructure: restart Redis, then PostgreSQL, under a running shard worker — both are real
throw-away servers started by the test (redis-server on a free port; a PostgreSQL cluster made with the Debian
package's initdb/pg_ctl). Afterwards the leases are held again, the signal bus works, and every candle is
stored exactly as the emulator served it."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from shards.bus import REDIS_DOWN, SignalConsumer, SignalPublisher
from smc_quant.domain.trading import Signal
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from tests.integration.cluster_kit import assert_exact, stored_candles
from tests.integration.test_scale_kit import Cluster, candle_count, emulator, free_port, universe_of, wait_for

pytestmark = pytest.mark.integration
MINUTES = 12
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class RedisServer:
    """A redis-server of our own on a free port, without persistence (a restart loses everything)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    async def wait_up(self) -> None:
        client: aioredis.Redis = aioredis.from_url(self.url)

        async def up() -> bool:
            try:
                return bool(await client.ping())
            except Exception:
                return False

        try:
            await wait_for(up, 10, "redis-server up", every=0.05)
        finally:
            await client.aclose()


class PostgresCluster:
    """A throw-away PostgreSQL cluster (initdb + pg_ctl), run as the postgres user when we are root."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="smc-pg-"))  # outside pytest's root-only tmp: postgres reads it
        self.root.chmod(0o755)
        workdir = self.root
        self.bin = Path(PG_BIN[-1])
        self.data = workdir / "pgdata"
        self.sock = workdir / "pgsock"
        self.port = free_port()
        self.log = workdir / "pg.log"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        for d in (self.root, self.sock):
            d.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        if os.geteuid() == 0:
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o",
                  f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    if not PG_BIN:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    cluster = PostgresCluster()
    cluster.init()
    cluster.start()
    yield cluster
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)


def _signal(i: int) -> Signal:
    return Signal(f"sig-{i}", "BTCUSDT", "LONG", 1_700_000_000_000 + i, Decimal("27000.1"), 0.7, 1.0, 2.0, "t",
                  (0.5,), created_ms=1)


async def test_bus_survives_a_redis_restart(redis_server: RedisServer) -> None:
    """Publisher buffers while Redis is gone; the consumer recreates its group on the empty server; all arrive."""
    await redis_server.wait_up()
    keys = ClusterKeys("rr")
    rds: aioredis.Redis = aioredis.from_url(redis_server.url, socket_connect_timeout=0.5)
    pub = SignalPublisher(rds, keys.signals, retry_s=0.05)
    consumer = SignalConsumer(rds, keys.signals, keys.signals_group, "executor", claim_idle_ms=0)
    try:
        await consumer.ensure_group()
        pub.start()
        pub.publish(_signal(0))
        assert await pub.drain(5)
        got = await consumer.read(block_ms=100)
        await consumer.ack([e for e, _ in got])
        redis_server.stop()
        for i in range(1, 4):
            pub.publish(_signal(i))  # Redis is down: buffered
        assert not await pub.drain(0.3)
        assert pub.buffered == 3
        with pytest.raises(REDIS_DOWN):  # the executor takes no new entries (and says so)
            await consumer.read(block_ms=10)
        redis_server.start()
        await redis_server.wait_up()
        assert await pub.drain(10)
        seen: list[str] = []

        async def delivered() -> bool:
            batch = await consumer.read(block_ms=50)  # first read after the restart: NOGROUP → group recreated
            seen.extend(s.signal_id for _, s in batch if s)
            await consumer.ack([e for e, _ in batch])
            return len(seen) >= 3

        await wait_for(delivered, 10, "the buffered signals after the restart", every=0.01)
        assert seen == ["sig-1", "sig-2", "sig-3"] and pub.stats.overflow == 0
    finally:
        await pub.stop()
        await rds.aclose()


async def test_worker_recovers_from_redis_then_postgres_restarts(shared_data: Path, tmp_path: Path,
                                                                 redis_server: RedisServer,
                                                                 pg_cluster: PostgresCluster) -> None:
    await redis_server.wait_up()
    admin = await asyncpg.connect(pg_cluster.dsn)
    await admin.execute('CREATE DATABASE "smc"')
    await admin.close()
    dsn = pg_cluster.dsn.rsplit("/", 1)[0] + "/smc"
    await apply_migrations(dsn)
    emu = emulator(shared_data, minutes=MINUTES, speed=30)
    await emu.start()
    cluster = Cluster(emu, dsn, tmp_path / "procs", shards=2, redis_url=redis_server.url, lease_ttl_s=2.0)
    keys = ClusterKeys(cluster.prefix, split=2)
    rds: aioredis.Redis = aioredis.from_url(redis_server.url)
    try:
        symbols = await universe_of(emu)
        cluster.spawn("w1", "shard")

        async def leased() -> bool:
            try:
                return all([await rds.get(keys.shard_lease(k)) for k in range(2)])
            except Exception:
                return False

        async def subscribed() -> bool:
            return bool(emu.stats["subscriptions"] >= len(symbols))

        await wait_for(leased, 90, "the worker holding both shards")
        await wait_for(subscribed, 60, "every symbol subscribed")
        emu.resume()
        await asyncio.wait_for(emu.wait_minutes(3), 60)
        redis_server.stop()
        await asyncio.wait_for(emu.wait_minutes(4), 60)
        redis_server.start()
        await redis_server.wait_up()
        await wait_for(leased, 30, "the leases re-taken on the empty Redis")
        await asyncio.wait_for(emu.wait_minutes(6), 60)
        pg_cluster.stop()
        await asyncio.wait_for(emu.wait_minutes(8), 60)
        pg_cluster.start()
        await asyncio.wait_for(emu.wait_minutes(MINUTES), 120)
        total = len(symbols) * MINUTES

        async def all_stored() -> bool:
            return await candle_count(dsn) >= total

        await wait_for(all_stored, 90, f"{total} candles in PostgreSQL")
        assert_exact(emu, await stored_candles(dsn), symbols, MINUTES)
        assert cluster.procs["w1"].poll() is None  # the worker never died
        events = [e.get("event") for e in cluster.log("w1")]
        assert "redis_unavailable" in events and "redis_recovered" in events
        assert await rds.xlen(keys.marks) > 0  # marks flow again on the new Redis
        assert cluster.stop_all() == {"w1": 0}
    finally:
        cluster.stop_all()
        await rds.aclose()
        await emu.stop()
