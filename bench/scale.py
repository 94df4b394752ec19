"""Scale benchmark: cluster frames/s and signal-path latency with 1, 2 and 4 `smc-quant shard` processes.

For each N in --workers (default 1 2 4): a fresh PostgreSQL database, a fresh Redis key prefix, N worker
processes with SHARD_COUNT=N (one shard slot each), the emulator (this process) replaying 300+ real symbols
at --speed. Prints, per N (never asserts):
  * frames/s ingested by the whole cluster (sum of the workers' ``smc_feed_frames_total``) over the replay;
  * candles stored vs expected (a worker that cannot keep up shows as missing or late candles);
  * signal-path latency p50/p99/max: from the emulator finishing a minute to that minute's entry on the
    Redis bus, as the executor's reader sees it. Every shard publishes each minute's feature batch on the
    marks stream by the same route its signals take (analyzer → publisher → XADD → XREAD); with no champion
    model in the fresh database there are no signals, so the marks entries are what is timed.

The machine's cores bound the figures: with 2 cores, 4 worker processes share them with the emulator.

Usage: python bench/scale.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/15]
                             [--workers 1 2 4] [--minutes 8] [--speed 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shards.bus import MarksReader  # noqa: E402
from smc_quant.datasets import data_dir  # noqa: E402
from smc_quant.exchange.emulator import Emulator, EmulatorConfig  # noqa: E402
from smc_quant.exchange.exchange_info import parse_exchange_info  # noqa: E402
from smc_quant.settings import UniverseSettings  # noqa: E402
from smc_quant.store.keys import ClusterKeys  # noqa: E402
from smc_quant.store.migrations import apply_migrations  # noqa: E402
from smc_quant.universe import select_universe  # noqa: E402

SMC_CLI = Path(sys.executable).parent / "smc-quant"
FRAMES = re.compile(r'^smc_feed_frames_total\{shard="\d+"\} ([0-9.e+]+)$', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(emu: Emulator, dsn: str, redis_url: str, prefix: str, shards: int) -> dict[str, str]:
    """The environment of every worker: the emulator, the database, Redis under ``prefix``, replay mode."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SMC_", "SHARD_", "REDIS_", "DATABASE_"))}
    return {**base, "DATABASE_URL": dsn, "REDIS_URL": redis_url, "SHARD_COUNT": str(shards),
            "SMC_CLUSTER__KEY_PREFIX": prefix, "SMC_CLUSTER__LEASE_TTL_S": "3", "SMC_CLUSTER__LEASE_RENEW_S": "0.75",
            "SMC_VENUE__REST_BASE": emu.rest_url, "SMC_VENUE__WS_MARKET_BASE": emu.ws_market_base,
            "SMC_VENUE__WS_PUBLIC_BASE": emu.ws_public_base, "SMC_UNIVERSE__QUOTE_ASSETS": '["USDT","USDC"]',
            "SMC_MODE": "replay", "SMC_FEED__HEARTBEAT_TIMEOUT_S": "30", "SMC_FEED__FLUSH_INTERVAL_S": "0.2",
            "SMC_LOG_FORMAT": "json", "SMC_LOG_LEVEL": "ERROR", "SMC_LEARNER__ENABLED": "false"}


async def universe_size(emu: Emulator) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{emu.rest_url}/fapi/v1/exchangeInfo") as resp:
        payload = await resp.json()
    return len(select_universe(parse_exchange_info(payload), UniverseSettings(quote_assets=("USDT", "USDC")),
                               "exchange").symbols)


def scrape_frames(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(v) for v in FRAMES.findall(text))


async def until(check: object, limit_s: float) -> bool:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if await check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def run_one(n: int, args: argparse.Namespace, admin_dsn: str) -> dict[str, object]:
    name = f"smc_scale_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    await apply_migrations(dsn)
    emu = Emulator(EmulatorConfig(data_dir=data_dir(), speed=args.speed, updates_per_candle=2,
                                  map_to_exchange_info=True, max_minutes=args.minutes, start_paused=True))
    await emu.start()
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    keys = ClusterKeys(prefix)
    rds: aioredis.Redis = aioredis.from_url(args.redis)
    env = worker_env(emu, dsn, args.redis, prefix, n)
    state = Path(tempfile.mkdtemp(prefix="smc-scale-"))
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        symbols = await universe_size(emu)
        for i in range(n):
            port = free_port()
            worker = {**env, "SMC_OPS__PORT": str(port), "SMC_STATE_DIR": str(state / str(i))}
            proc = subprocess.Popen([str(SMC_CLI), "shard"], env=worker,  # noqa: ASYNC220 - a bench, started once
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append((proc, port))

        async def ready() -> bool:
            held = [await rds.get(keys.shard_lease(k)) for k in range(n)]
            settled = None not in held and len(set(held)) == n  # one slot per worker: rebalancing is over
            return bool(settled and emu.stats["subscriptions"] >= symbols)

        if not await until(ready, 180):
            raise RuntimeError(f"{n} workers did not lease and subscribe in time")
        reader = MarksReader(rds, keys.marks)
        await reader.read(block_ms=None)
        done_at: dict[int, float] = {}
        arrived: dict[int, float] = {}

        def on_minute() -> None:
            done_at[emu.start_ms + (emu.minutes_replayed - 1) * 60_000] = time.perf_counter()

        async def watch_minutes() -> None:
            for m in range(1, args.minutes + 1):
                await emu.wait_minutes(m)
                on_minute()

        async def read_marks() -> None:
            while True:
                for open_time, *_rest in await reader.read(block_ms=200):
                    arrived[open_time] = time.perf_counter()  # the last shard's batch of the minute wins

        frames0 = sum(scrape_frames(p) for _, p in procs)
        t0 = time.perf_counter()
        emu.resume()
        tasks = [asyncio.create_task(watch_minutes()), asyncio.create_task(read_marks())]
        await tasks[0]
        elapsed = time.perf_counter() - t0
        frames = sum(scrape_frames(p) for _, p in procs) - frames0
        expected = symbols * args.minutes

        async def stored_all() -> bool:
            conn = await asyncpg.connect(dsn)
            try:
                return bool(int(await conn.fetchval("SELECT count(*) FROM candles")) >= expected)
            finally:
                await conn.close()

        complete = await until(stored_all, 60)
        await asyncio.sleep(3)  # the last minute's batches (analyzer grace 2 s) reach the bus
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        lat = sorted((arrived[t] - done_at[t]) * 1000 for t in done_at if t in arrived)
        return {"workers": n, "symbols": symbols, "frames_per_s": frames / elapsed, "complete": complete,
                "lat_p50_ms": statistics.median(lat) if lat else float("nan"),
                "lat_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
                "lat_max_ms": lat[-1] if lat else float("nan"), "minutes_timed": len(lat)}
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await rds.delete(*[k async for k in rds.scan_iter(f"{prefix}:*")] or ["_"])
        await rds.aclose()
        await emu.stop()
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--minutes", type=int, default=8)
    parser.add_argument("--speed", type=float, default=60.0, help="replay speed (60: one minute per second)")
    args = parser.parse_args()
    print(f"cores={os.cpu_count()} minutes={args.minutes} speed={args.speed}x")
    print(f"{'workers':>7} {'symbols':>7} {'frames/s':>9} {'complete':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for n in args.workers:
        r = await run_one(n, args, args.dsn)
        print(f"{r['workers']:>7} {r['symbols']:>7} {r['frames_per_s']:>9.0f} {r['complete']!s:>8} "
              f"{r['lat_p50_ms']:>8.0f} {r['lat_p99_ms']:>8.0f} {r['lat_max_ms']:>8.0f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
