"""Operator-control benchmark: `smc-quant halt` / `resume` request committed → applied by a running executor.

A paper TradingStack (real PostgreSQL, a throw-away database) runs its ControlWatcher; the bench appends halt and
resume requests in turn with ``ControlRepository.request`` (INSERT + NOTIFY in one transaction, then the state
read back, as the command does) and waits until the watcher has applied each. The span covers the commit, the
notification, the watcher's read and the executor's halt/resume. Prints p50/p99/max (never asserts).

Usage: python bench/control.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--n 200]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
import structlog
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shards.trading import TradingStack  # noqa: E402
from smc_quant.datasets import LEVERAGE_TIERS, data_dir, load_exchange_info  # noqa: E402
from smc_quant.exchange.exchange_info import parse_exchange_info  # noqa: E402
from smc_quant.settings import load_settings  # noqa: E402
from smc_quant.store.control import ControlRepository  # noqa: E402
from smc_quant.store.db import create_pool  # noqa: E402
from smc_quant.store.migrations import apply_migrations  # noqa: E402


async def run(admin_dsn: str, n: int) -> None:
    name = f"bench_control_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    try:
        await apply_migrations(dsn)
        pool = await create_pool(dsn, max_size=4)
        root = data_dir()
        info = parse_exchange_info(load_exchange_info(root))
        filters = {s.symbol: s.filters for s in info.symbols if s.symbol == "BTCUSDT"}
        settings = load_settings(state_dir=Path(tempfile.mkdtemp()), mode="paper", trading={"funding_stream": False})
        async with aiohttp.ClientSession() as session:
            stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                                 brackets_file=root / LEVERAGE_TIERS)
            await stack.start()
            assert stack.control is not None
            await stack.control.listening.wait()
            repo, spans = ControlRepository(pool), []
            for i in range(n):
                started = time.perf_counter()
                state = await repo.request("halt" if i % 2 == 0 else "resume", "bench", "bench")
                await stack.control.applied(state.event_id)
                spans.append((time.perf_counter() - started) * 1000)
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{n} requests", flush=True)
            notified = stack.control.stats["notifications"]
            await stack.stop()
        await pool.close()
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    ms = np.array(spans)
    print(f"request committed → applied by the running executor, {n} halt/resume requests "
          f"({notified} notifications received):")
    print(f"  p50 {np.percentile(ms, 50):.2f} ms   p99 {np.percentile(ms, 99):.2f} ms   max {ms.max():.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    uvloop.run(run(args.dsn, args.n))


if __name__ == "__main__":
    main()
