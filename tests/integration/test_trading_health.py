"""``/health`` of a trading process follows its trading side: a live stack (signed REST and the user-data stream
against the emulator, PostgreSQL) served by an ``OpsServer`` as the scaled executor serves it (no shards).

The limits are minutes long, so the verdict past them is read from ``OpsServer.health(now)`` at a later
monotonic time; the HTTP answers show the same verdict at the real time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.errors import TemporaryError
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.emulator.account import account_filters
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.ops.health import RECONCILE_MISSES, STREAM_GRACE_S
from smc_quant.ops.server import OpsServer
from smc_quant.orders.broker import StreamExpired
from smc_quant.settings import load_settings
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations

pytestmark = pytest.mark.integration
START_MS = 1_689_696_000_000


async def get_health(http: aiohttp.ClientSession, ops: OpsServer) -> tuple[int, Any]:
    async with http.get(f"http://127.0.0.1:{ops.port}/health") as resp:
        return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def _served_stack(shared_data: Path, pg_dsn: str, tmp_path: Path, http: aiohttp.ClientSession,
                        mode: str) -> AsyncIterator[tuple[Emulator, TradingStack, OpsServer]]:
    """A trading stack in ``mode`` with keys (signed REST and the user-data stream against the emulator, on 2023's
    clock), PostgreSQL, served by an ``OpsServer`` as the scaled executor serves it."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=4)
    em = Emulator(EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=("BTCUSDT",),
                                 start_time_ms=START_MS, max_minutes=10))
    await em.start()
    settings = load_settings(
        state_dir=tmp_path, mode=mode, binance_api_key=em.config.api_key, binance_api_secret=em.config.api_secret,
        trading={"funding_stream": False},
        venue={"rest_base": em.rest_url, "ws_market_base": em.ws_market_base, "ws_private_base": em.ws_private_base,
               "ws_public_base": em.ws_public_base})
    stack = TradingStack(settings, filters=account_filters(em.market), session=http, pool=pool,
                         governor=WeightGovernor(2400, 0.1), brackets_file=shared_data / LEVERAGE_TIERS)
    ops = OpsServer([], window_s=90.0, fraction=0.99, queue_depth=lambda _s: 0, ready=lambda: True,
                    trading=stack.health_state)
    await stack.start()
    await ops.start("127.0.0.1", 0)
    try:
        yield em, stack, ops
    finally:
        await ops.stop()
        await stack.executor.stop()
        await stack.stop()
        await em.stop()
        await pool.close()


async def test_health_turns_503_when_the_user_stream_stays_down_or_reconciliation_keeps_failing(
        shared_data: Path, pg_dsn: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with _served_stack(shared_data, pg_dsn, tmp_path, http, "replay") as (em, stack, ops):
        stream = stack.live.stream if stack.live is not None else None
        assert stream is not None
        await asyncio.wait_for(stream.connected.wait(), 10)
        status, body = await get_health(http, ops)
        assert status == 200 and body["status"] == "ok" and body["trading"]["problems"] == []
        assert stack.metrics()["user_stream_down_s"] == 0.0

        # the user-data stream loses its key and cannot get a new one (listenKey answered 503)
        expiries: asyncio.Queue[StreamExpired] = asyncio.Queue()
        stack.broker.subscribe(lambda e: expiries.put_nowait(e) if isinstance(e, StreamExpired) else None)
        em.faults.http_error(503, count=1_000, path="/fapi/v1/listenKey")
        assert em.user_data.expire() == 1
        await asyncio.wait_for(expiries.get(), 10)  # the stream has closed its socket by the time we run
        down = stream.down_since
        assert down is not None and not stream.connected.is_set()
        assert stack.metrics()["user_stream_down_s"] > 0.0  # the gauge to alert on
        status, body = await get_health(http, ops)
        assert status == 200 and body["trading"]["user_stream_down_s"] < STREAM_GRACE_S  # a reconnect's worth
        ok, body = ops.health(now=down + STREAM_GRACE_S + 1)
        assert not ok and body["status"] == "impaired" and body["trading"]["problems"] == ["user_stream_down"]
        with structlog.testing.capture_logs() as logs:  # the stack's own watch says so once (and notifies)
            assert not stack.check_health(now=down + STREAM_GRACE_S + 1)
            assert not stack.check_health(now=down + STREAM_GRACE_S + 2)
        [changed] = [e for e in logs if e["event"] == "trading_health_changed"]
        assert changed["problems"] == ["user_stream_down"] and changed["log_level"] == "error"
        assert changed["text"].startswith("TRADING IMPAIRED · user-data stream down 61 s")
        em.faults.http_error(503, count=0, path="/fapi/v1/listenKey")  # the exchange answers again
        await asyncio.wait_for(expiries.get(), 15)  # delivered once the new socket is open
        assert stream.down_since is None and ops.health(now=down + STREAM_GRACE_S + 1)[0]
        assert stack.check_health() and stack.health_watch.problems == ()  # and says it is healthy again

        # reconciliation cannot read the positions: the latest success ages until the limit
        last = stack.executor.last_reconciled
        assert last is not None
        em.faults.http_error(503, count=1_000, path="/fapi/v3/positionRisk")
        with pytest.raises(TemporaryError):
            await stack.executor.reconcile()
        assert stack.executor.last_reconciled == last
        limit = RECONCILE_MISSES * stack.executor.config.reconcile_interval_s
        assert ops.health(now=last + limit - 1)[0]
        ok, body = ops.health(now=last + limit + 1)
        assert not ok and body["trading"]["problems"] == ["reconcile_failing"]
        em.faults.http_error(503, count=0, path="/fapi/v3/positionRisk")
        await stack.executor.reconcile()
        again = stack.executor.last_reconciled
        assert again is not None and again > last
        assert ops.health(now=again + limit - 0.01)[0]  # the clock restarted at the success

        stack.executor.halt("operator: test")  # a decision, not a fault
        status, body = await get_health(http, ops)
        assert status == 200 and body["trading"]["halted"] == "operator: test"


async def test_a_live_stack_whose_clock_is_off_the_exchanges_is_impaired(shared_data: Path, pg_dsn: str,
                                                                          tmp_path: Path,
                                                                          http: aiohttp.ClientSession) -> None:
    """Live: the offset the signing measured is judged. The emulator's exchange runs on 2023's clock, so this
    host's is years off it: signing copes (the stack starts and reconciles), and /health says so, naming it. A
    replay stack (the test above) against the same exchange is not judged: its exchange runs on market time."""
    async with _served_stack(shared_data, pg_dsn, tmp_path, http, "live") as (_em, stack, ops):
        status, body = await get_health(http, ops)
        offset = body["trading"]["clock_offset_ms"]
        assert offset < -365 * 86_400_000  # the exchange's clock is 2023's: years behind this host's
        assert status == 503 and body["trading"]["problems"] == ["clock_skew"]
        assert stack.metrics()["exchange_clock_offset_ms"] == float(offset)
