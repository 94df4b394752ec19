"""Soak: the multi-process deployment for a long run on accelerated replay; does memory or any queue grow?

Starts the emulator (this process) replaying 300+ real symbols at --speed, --workers `smc-quant shard`
processes (SHARD_COUNT = --shards) and one `smc-quant executor` (paper account, marks from the bus), on a
fresh PostgreSQL database and a fresh Redis key prefix. Every --sample seconds it records each process's
RSS (/proc/<pid>/status VmRSS), the workers' feed queue depths and signal buffers (/metrics), the signal
stream length and the executor's pending entries. At the end it prints (never asserts), per process, the
RSS slope after the warm-up (least squares over the samples after --warmup of the run, MB/h) and the
growth of every queue, plus candles stored vs expected. Writes the raw samples as CSV with --csv.

Usage: python bench/soak.py [--duration 3600] [--speed 60] [--workers 2] [--shards 2] [--sample 10]
                            [--warmup 0.25] [--csv soak.csv] [--dsn ...] [--redis ...]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import signal
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
sys.path.insert(0, str(ROOT / "bench"))

from scale import free_port, universe_size, worker_env  # noqa: E402

from smc_quant.datasets import data_dir  # noqa: E402
from smc_quant.exchange.emulator import Emulator, EmulatorConfig  # noqa: E402
from smc_quant.store.keys import ClusterKeys  # noqa: E402
from smc_quant.store.migrations import apply_migrations  # noqa: E402

SMC_CLI = Path(sys.executable).parent / "smc-quant"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M))


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per hour."""
    pts = [(t, y) for t, y in zip(ts, ys, strict=True) if y == y]
    if len(pts) < 3:
        return float("nan")
    mt = sum(t for t, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((t - mt) ** 2 for t, _ in pts)
    return 3600 * sum((t - mt) * (y - my) for t, y in pts) / var if var else float("nan")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--duration", type=float, default=3600.0, help="wall-clock seconds (default one hour)")
    p.add_argument("--speed", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--sample", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of the run ignored for the slopes")
    p.add_argument("--csv", default=None)
    args = p.parse_args()

    name = f"smc_soak_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = args.dsn.rsplit("/", 1)[0] + f"/{name}"
    await apply_migrations(dsn)
    minutes = int(args.duration * args.speed / 60) + 5
    emu = Emulator(EmulatorConfig(data_dir=data_dir(), speed=args.speed, updates_per_candle=2,
                                  map_to_exchange_info=True, max_minutes=minutes, start_paused=True))
    await emu.start()
    prefix = f"soak{uuid.uuid4().hex[:8]}"
    keys = ClusterKeys(prefix)
    rds: aioredis.Redis = aioredis.from_url(args.redis)
    env = {**worker_env(emu, dsn, args.redis, prefix, args.shards), "SMC_LOG_LEVEL": "WARNING",
           "SMC_CLUSTER__HEARTBEAT_S": "300"}
    state = Path(tempfile.mkdtemp(prefix="smc-soak-"))
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    rows: list[dict[str, float]] = []
    try:
        symbols = await universe_size(emu)
        roles = [("executor", "executor")] + [(f"shard{i}", "shard") for i in range(args.workers)]
        for label, role in roles:
            port = free_port()
            log = (state / f"{label}.log").open("ab")
            procs[label] = (subprocess.Popen([str(SMC_CLI), role],  # noqa: ASYNC220 - a bench, started once
                                             env={**env, "SMC_OPS__PORT": str(port),
                                                  "SMC_STATE_DIR": str(state / label)},
                                             stdout=log, stderr=subprocess.STDOUT), port)
            log.close()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            held = [await rds.get(keys.shard_lease(k)) for k in range(args.shards)]
            owners = {h for h in held if h}
            if None not in held and len(owners) == min(args.workers, args.shards) \
                    and emu.stats["subscriptions"] >= symbols:
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the workers did not lease and subscribe in time")
        print(f"soak: {symbols} symbols, {args.workers} workers, SHARD_COUNT={args.shards}, speed {args.speed}x, "
              f"{args.duration:.0f}s, logs in {state}", flush=True)
        emu.resume()
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < args.duration:
            row: dict[str, float] = {"t": elapsed, "minutes": float(emu.minutes_replayed)}
            for label, (proc, port) in procs.items():
                row[f"rss_{label}"] = rss_mb(proc.pid)
                if label.startswith("shard"):
                    text = scrape(port)
                    row[f"queue_{label}"] = metric_sum(text, "smc_feed_queue_depth")
                    row[f"buffer_{label}"] = metric_sum(text, "smc_signal_buffered")
                    row[f"drops_{label}"] = metric_sum(text, "smc_feed_queue_drops_total")
            row["stream_signals"] = float(await rds.xlen(keys.signals))
            try:
                pending = await rds.xpending(keys.signals, keys.signals_group)
                row["pending"] = float(pending["pending"])
            except Exception:
                row["pending"] = 0.0
            rows.append(row)
            alive = {k: v[0].poll() is None for k, v in procs.items()}
            if not all(alive.values()):
                print(f"a process died: {alive}", flush=True)
                break
            await asyncio.sleep(args.sample)
        conn = await asyncpg.connect(dsn)
        stored = int(await conn.fetchval("SELECT count(*) FROM candles"))
        await conn.close()
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stop_s = {}
        for label, (proc, _) in procs.items():
            t = time.monotonic()
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            stop_s[label] = (code, time.monotonic() - t)
        await rds.delete(*[k async for k in rds.scan_iter(f"{prefix}:*")] or ["_"])
        await rds.aclose()
        await emu.stop()
        admin = await asyncpg.connect(args.dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    if args.csv and rows:
        with open(args.csv, "w", newline="") as fh:  # noqa: ASYNC230 - once, at the end
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    warm = [r for r in rows if r["t"] >= args.warmup * args.duration]
    ts = [r["t"] for r in warm]
    replayed = rows[-1]["minutes"] if rows else 0
    print(f"replayed {replayed:.0f} minutes; candles stored {stored} (≥ {symbols} × minutes at the last sample = "
          f"{symbols * replayed:.0f})")
    print(f"{'series':<22} {'first':>9} {'last':>9} {'max':>9} {'slope/h after warm-up':>22}")
    for key in rows[0] if rows else []:
        if key in ("t", "minutes"):
            continue
        ys = [r[key] for r in warm]
        print(f"{key:<22} {rows[0][key]:>9.1f} {rows[-1][key]:>9.1f} {max(r[key] for r in rows):>9.1f} "
              f"{slope_per_hour(ts, ys):>22.2f}")
    print("graceful stop (exit code, seconds): " + ", ".join(f"{k}={c}/{s:.1f}s" for k, (c, s) in stop_s.items()))


if __name__ == "__main__":
    asyncio.run(main())
