"""Feed benchmark: one shard process against the emulator running in another process.

Prints (never asserts):
  1. max frames/s one shard process ingests (emulator as fast as it can, 21 frames per candle) and loss;
  2. p50/p99 latency, frame received → candle in the store, at a steady ~10,000 frames/s, for one
     process holding all 347 symbols and for one shard of SHARD_COUNT=4 (~87 symbols). The emulator
     writes every symbol's final frame of a minute in one burst, so the last of N finals waits for
     the N-1 before it: the worst case of Binance's minute close;
     Next to it, the minute close: from the first final of a minute received to the last final of that
     minute in the store (per minute, p50/max) — what a consumer waiting for the whole minute sees. The
     reader yields to the workers every few frames, so frames not yet read wait in aiohttp's buffer,
     before our receive stamp: per-frame latency does not show that wait, the minute close does;
  3. peak RSS with 300+ symbols × 1,000 candles in the store (and in PostgreSQL).

Usage: python bench/feed.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shards.feed import ShardFeed  # noqa: E402
from shards.sink import CandleSink  # noqa: E402
from smc_quant.exchange.governor import WeightGovernor  # noqa: E402
from smc_quant.exchange.rest import BinanceRestClient  # noqa: E402
from smc_quant.settings import FeedSettings  # noqa: E402
from smc_quant.store.candles import CandleRepository  # noqa: E402
from smc_quant.store.db import create_pool  # noqa: E402
from smc_quant.store.migrations import apply_migrations  # noqa: E402


@dataclass
class Emu:
    proc: subprocess.Popen[str]
    rest: str
    market: str


def start_emulator(speed: float, updates: int, minutes: int) -> Emu:
    cmd = [sys.executable, "-m", "smc_quant.exchange.emulator", "--map-to-exchange-info", "--speed", str(speed),
           "--updates-per-candle", str(updates), "--max-minutes", str(minutes), "--start-paused",
           "--port", "0", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    return Emu(proc, fields["rest"], fields["market"])


async def fresh_db(admin_dsn: str) -> str:
    name = f"smc_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


async def drop_db(admin_dsn: str, dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    await conn.close()


async def progress(feed: ShardFeed, total: int, label: str) -> None:
    while True:
        await asyncio.sleep(1.0)
        done = feed.metrics.accepted
        print(f"  [{label}] {done:,}/{total:,} candles, {feed.metrics.frames:,} frames", flush=True)


async def phase(label: str, admin_dsn: str, *, speed: float, updates: int, minutes: int,
                ring: int = 1500, every: int = 1) -> dict[str, float]:
    emu = start_emulator(speed, updates, minutes)
    dsn = await fresh_db(admin_dsn)
    try:
        await apply_migrations(dsn)
        pool = await create_pool(dsn)
        async with aiohttp.ClientSession() as session:
            async with session.get(emu.rest + "/_emulator/state") as resp:
                state = await resp.json()
            async with session.get(emu.rest + "/fapi/v1/exchangeInfo") as resp:
                symbols = [s["symbol"] for s in (await resp.json())["symbols"]][::every]
            rest = BinanceRestClient(session, emu.rest, WeightGovernor())
            settings = FeedSettings(ring_size=ring, queue_size=1 << 20, control_messages_per_s=10.0)
            feed_ref: list[ShardFeed] = []
            sink = CandleSink(CandleRepository(pool), _metrics(feed_ref), flush_interval_s=0.5, flush_batch=5000)

            async def backfill(sym: str, iv: str, a: int, b: int) -> list:  # type: ignore[type-arg]
                return await rest.closed_klines(sym, iv, a, b, now_ms=b + 60_000, limit=1000)

            feed = ShardFeed(shard=0, symbols=symbols, session=session, market_base=emu.market,
                             settings=settings, sink=sink, backfill=backfill)
            feed_ref.append(feed)
            sink._metrics = feed.metrics
            closes: dict[int, list[int]] = {}
            latency = feed.metrics.latency_ns

            def minute_close(candle, _completed) -> None:  # type: ignore[no-untyped-def]
                now = time.perf_counter_ns()  # just after the latency sample of this candle
                span = closes.get(candle.open_time)
                if span is None:
                    closes[candle.open_time] = [now - latency[-1], now]
                else:
                    span[0] = min(span[0], now - latency[-1])
                    span[1] = now

            feed.listeners.append(minute_close)
            gc.collect()
            gc.freeze()  # as the service does after its warm start
            tasks = [asyncio.create_task(feed.run()), asyncio.create_task(sink.run())]
            await feed.wait_subscribed()
            total = len(symbols) * minutes
            ticker = asyncio.create_task(progress(feed, total, label))
            async with session.post(emu.rest + "/_emulator/faults", json={"action": "resume"}) as resp:
                assert resp.status == 200
            t0 = time.perf_counter()
            await feed.wait_until(state["start_ms"] + (minutes - 1) * 60_000)
            elapsed = time.perf_counter() - t0
            ticker.cancel()
            await sink.wait_idle()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            m = feed.metrics
            lat = np.array(m.latency_ns, dtype=np.float64) / 1e3
            spans = np.array([b - a for a, b in closes.values()], dtype=np.float64) / 1e3
            stored = await pool.fetchval("SELECT count(*) FROM candles")
            await pool.close()
            return {
                "symbols": len(symbols), "minutes": minutes, "seconds": elapsed,
                "frames": m.frames, "frames_per_s": m.frames / elapsed, "candles": m.accepted,
                "stored": stored, "expected": total,
                "loss": m.queue_drops + sum(m.rejected.values()) + m.gaps_unfilled,
                "backfilled": m.candles_backfilled,
                "lat_p50_us": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                "lat_p99_us": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
                "close_p50_us": float(np.percentile(spans, 50)) if len(spans) else float("nan"),
                "close_max_us": float(spans.max()) if len(spans) else float("nan"),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
    finally:
        emu.proc.terminate()
        emu.proc.wait(10)
        await drop_db(admin_dsn, dsn)


def _metrics(ref: list[ShardFeed]):  # type: ignore[no-untyped-def]
    from smc_quant.ops.metrics import FeedMetrics

    return FeedMetrics(shard=0)


def report(label: str, r: dict[str, float]) -> None:
    print(f"{label}: {r['symbols']:.0f} symbols × {r['minutes']:.0f} min in {r['seconds']:.2f} s — "
          f"{r['frames_per_s']:,.0f} frames/s ({r['frames']:,.0f} frames), candles {r['candles']:,.0f}/"
          f"{r['expected']:,.0f}, stored {r['stored']:,.0f}, loss {r['loss']:.0f}, backfilled {r['backfilled']:.0f}, "
          f"latency p50 {r['lat_p50_us']:.0f} µs p99 {r['lat_p99_us']:.0f} µs (minute close p50 "
          f"{r['close_p50_us']:.0f} µs max {r['close_max_us']:.0f} µs), peak RSS {r['rss_mb']:.0f} MB",
          flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=os.environ.get("SMC_TEST_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    print("feed benchmark (emulator in another process; 347 exchangeInfo symbols mapped onto real 2023 candles)")
    r1 = await phase("throughput", args.dsn, speed=0, updates=20, minutes=120 // scale)
    report("1. max throughput", r1)
    frames_per_minute = r1["symbols"] * 10
    speed = 10_000 * 60 / frames_per_minute
    r2 = await phase("latency", args.dsn, speed=speed, updates=9, minutes=60 // scale)
    report(f"2. steady ~10k frames/s (speed {speed:.0f}×)", r2)
    r2b = await phase("latency/4", args.dsn, speed=speed * 4, updates=9, minutes=60 // scale, every=4)
    report(f"2b. one shard of SHARD_COUNT=4 at ~10k frames/s (speed {speed * 4:.0f}×)", r2b)
    r3 = await phase("memory", args.dsn, speed=0, updates=0, minutes=1000 // scale, ring=1000)
    report("3. 1,000 candles per symbol", r3)


if __name__ == "__main__":
    uvloop.run(main())
