"""Chaos on the executor process: SIGKILL it while an entry order is in flight (executed by the exchange, answer
held back); the restarted `smc-quant executor` re-reads its unacknowledged signals from the stream, reconciles,
and no client order id reaches the exchange twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from shards.bus import SignalPublisher
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.trading import Signal
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.orders.client_ids import Leg, parse_client_order_id, signal_digest
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from tests.conftest import TEST_REDIS_URL
from tests.integration.test_scale_kit import Cluster, process_settings, wait_for

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
FEATURES = tuple(float(i) / 10 for i in range(len(FEATURE_SCHEMA)))


def _signal(emu: Emulator, symbol: str, side: str) -> Signal:
    open_time = emu.start_ms + (emu.minutes_replayed - 1) * MINUTE_MS
    price = emu.account.last_price(symbol)
    assert price is not None
    return Signal(f"{symbol}:{side}:{open_time}", symbol, side, open_time, Decimal(price), 0.75,  # type: ignore[arg-type]
                  8.0, 30.0, f"scale@{open_time}", FEATURES, schema_version=FEATURE_SCHEMA.version,
                  created_ms=emu.now_ms)


async def _activate(emu: Emulator) -> None:
    """A symbol is priced by the emulator's account from its first signed request on (as with a real client)."""
    import time

    import aiohttp

    from smc_quant.exchange.governor import WeightGovernor
    from smc_quant.exchange.trade_client import LiveBroker
    from smc_quant.orders.limiter import OrderLimiter
    from smc_quant.orders.signing import RequestSigner

    signer = RequestSigner(emu.config.api_key, emu.config.api_secret, lambda: int(time.time() * 1000),
                           recv_window_ms=5000)
    async with aiohttp.ClientSession() as http:
        broker = LiveBroker(http, emu.rest_url, signer, governor=WeightGovernor(2400, 0.1),
                            limiter=OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event), timeout_s=2.0,
                            ws_base_url=emu.ws_legacy_base)
        for symbol in SYMBOLS:
            await broker.open_orders(symbol)
        await broker.close()


def _legs(log: list[str], signal_id: str) -> list[str]:
    digest = signal_digest(signal_id)
    out = []
    for cid in log:
        parts = parse_client_order_id(cid)
        if parts is not None and parts.digest == digest:
            out.append(str(parts.leg))
    return out


@dataclass
class InProcess:
    """An emulator (paused, speed 0), an ``ExecutorProcess`` on the test Redis (not started yet) and a publisher
    standing in for the shard workers, under keys of the test's own."""

    emu: Emulator
    keys: ClusterKeys
    proc: Any
    rds: aioredis.Redis
    pub: SignalPublisher


@contextlib.asynccontextmanager
async def _in_process(shared_data: Path, pg_dsn: str, tmp_path: Path, *, emulator: dict[str, Any] | None = None,
                      **settings: Any) -> AsyncIterator[InProcess]:
    from shards.executor_main import ExecutorProcess

    await apply_migrations(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=SYMBOLS, speed=0, start_paused=True,
                                  **(emulator or {})))
    await emu.start()
    keys = ClusterKeys(f"t{uuid.uuid4().hex[:10]}")
    proc = ExecutorProcess(process_settings(emu, pg_dsn, tmp_path, keys.prefix, cluster={"claim_idle_s": 1.0},
                                            **settings))
    rds: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)
    pub = SignalPublisher(rds, keys.signals, marks_stream=keys.marks)
    try:
        yield InProcess(emu, keys, proc, rds, pub)
    finally:
        await pub.stop()
        await proc.stop()
        await rds.delete(keys.signals, keys.marks)
        await rds.aclose()
        await emu.stop()


async def test_executor_killed_mid_order_restarts_without_duplicates(shared_data: Path, pg_dsn: str,
                                                                     tmp_path: Path) -> None:
    await apply_migrations(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=SYMBOLS, speed=240, start_paused=True))
    await emu.start()
    emu.resume()
    await emu.wait_minutes(3)
    emu.pause()  # prices stand still: the test decides when anything moves
    cluster = Cluster(emu, pg_dsn, tmp_path, shards=1, BINANCE_API_KEY=emu.config.api_key,
                      BINANCE_API_SECRET=emu.config.api_secret, SMC_TRADING__ORDER_TIMEOUT_S="1",
                      SMC_CLUSTER__CLAIM_IDLE_S="1", SMC_LOG_LEVEL="INFO")
    keys = ClusterKeys(cluster.prefix)
    rds: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)
    try:
        await _activate(emu)
        held = _signal(emu, "BTCUSDT", "LONG")
        other = _signal(emu, "ETHUSDT", "SHORT")
        pub = SignalPublisher(rds, keys.signals, marks_stream=keys.marks)
        pub.start()
        prices = [float(emu.account.last_price(s) or 0) for s in SYMBOLS]
        pub.publish_marks(emu.start_ms + (emu.minutes_replayed - 1) * MINUTE_MS, SYMBOLS, prices)
        pub.publish(held)
        pub.publish(other)
        assert await pub.drain(5)
        await pub.stop()
        emu.faults.order_timeout(1, hold_s=5.0)  # the first entry executes; its answer comes after the kill
        cluster.spawn("exec1", "executor")

        async def entry_executed() -> bool:
            return "en" in _legs(emu.account.order_log, held.signal_id)

        await wait_for(entry_executed, 60, "the first entry reaching the exchange")
        assert cluster.kill("exec1") == -9  # killed mid-order: the entry's answer is still held back
        assert _legs(emu.account.order_log, other.signal_id) == []
        pending = await rds.xpending(keys.signals, keys.signals_group)
        assert pending["pending"] == 2  # nothing was acknowledged

        cluster.spawn("exec2", "executor")

        async def all_handled() -> bool:
            p = await rds.xpending(keys.signals, keys.signals_group)
            return bool(p["pending"] == 0)

        await wait_for(all_handled, 60, "every signal handled and acknowledged after the restart")
        log = list(emu.account.order_log)
        assert len(log) == len(set(log)), "a client id reached the exchange twice"
        for sig in (held, other):
            legs = _legs(log, sig.signal_id)
            assert legs.count(str(Leg.ENTRY)) == 1, (sig.signal_id, legs)
        assert sorted(_legs(log, other.signal_id)) == ["en", "sl", "tp"]  # handled once, protected
        # the held entry filled while nobody listened: the restart adopts that position from the order journal
        # and protects it with the decision's stop and target (journalled with the entry before it left)
        assert sorted(_legs(log, held.signal_id)) == ["en", "sl", "tp"]
        events = [e.get("event") for e in cluster.log("exec2")]
        # the held signal was not handled again: its position was adopted at start, which marks it as seen
        assert events.index("position_adopted") < events.index("signal_seen_before")
        assert "unknown_position" not in events
        algo = {o.client_algo_id: o for o in emu.account.open_algo_orders("BTCUSDT")}
        held_algo = [cid for cid in algo if (parts := parse_client_order_id(cid)) is not None
                     and parts.digest == signal_digest(held.signal_id)]
        assert len(held_algo) == 2, algo  # stop and target live at the exchange
        conn = await asyncpg.connect(pg_dsn)
        try:
            row = await conn.fetchrow("SELECT signal_id, entry_time_ms, sl_client_id, tp_client_id FROM positions "
                                      "WHERE symbol = 'BTCUSDT'")
            entry_ms = await conn.fetchval("SELECT created_ms FROM orders WHERE signal_id = $1 AND kind = 'entry'",
                                           held.signal_id)
        finally:
            await conn.close()
        assert row is not None and row["signal_id"] == held.signal_id
        assert row["entry_time_ms"] == entry_ms  # the 2-hour clock starts at the journalled entry
        assert {row["sl_client_id"], row["tp_client_id"]} == set(held_algo)
        codes = cluster.stop_all()
        assert codes == {"exec2": 0}
    finally:
        cluster.stop_all()
        await rds.delete(*[k async for k in rds.scan_iter(f"{cluster.prefix}:*")] or ["_"])
        await rds.aclose()
        await emu.stop()


async def test_executor_keeps_managing_exits_while_redis_is_down(shared_data: Path, pg_dsn: str,
                                                                 tmp_path: Path) -> None:
    """Redis (a real redis-server of the test's own) goes away with a position open: the exchange-side stop
    fires and the executor still records the closed trade (user-data stream, PostgreSQL); when Redis comes back
    empty, the executor recreates its group and takes new signals again."""
    import asyncpg

    from tests.integration.test_scale_recovery import RedisServer

    await apply_migrations(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=SYMBOLS, speed=240, start_paused=True))
    await emu.start()
    emu.resume()
    await emu.wait_minutes(3)
    emu.pause()
    server = RedisServer(tmp_path)
    server.start()
    await server.wait_up()
    cluster = Cluster(emu, pg_dsn, tmp_path / "procs", shards=1, redis_url=server.url,
                      BINANCE_API_KEY=emu.config.api_key, BINANCE_API_SECRET=emu.config.api_secret)
    keys = ClusterKeys(cluster.prefix)

    async def publish(*signals: Signal) -> None:
        rds: aioredis.Redis = aioredis.from_url(server.url)
        pub = SignalPublisher(rds, keys.signals, marks_stream=keys.marks)
        pub.start()
        prices = [float(emu.account.last_price(s) or 0) for s in SYMBOLS]
        pub.publish_marks(emu.start_ms + (emu.minutes_replayed - 1) * MINUTE_MS, SYMBOLS, prices)
        for s in signals:
            pub.publish(s)
        assert await pub.drain(5)
        await pub.stop()
        await rds.aclose()

    async def trades() -> list[str]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return [r["exit_reason"] for r in await conn.fetch("SELECT exit_reason FROM trades")]
        finally:
            await conn.close()

    try:
        await _activate(emu)
        # a stop the real path reaches: against the larger move of the next 15 minutes, half of it away
        entry = float(emu.account.last_price("ETHUSDT") or 0)
        first = emu.start_ms + emu.minutes_replayed * MINUTE_MS
        path = [emu.market.candle("ETHUSDT", first + m * MINUTE_MS) for m in range(15)]
        up = max(c.high for c in path if c) / entry - 1
        down = 1 - min(c.low for c in path if c) / entry
        side = "SHORT" if up >= down else "LONG"
        base = _signal(emu, "ETHUSDT", side)
        stopped = Signal(base.signal_id, base.symbol, base.side, base.open_time, base.price, base.confidence,
                         100 * max(up, down) * 0.5, 6.0, base.setup, base.features,
                         schema_version=base.schema_version, created_ms=base.created_ms)
        await publish(stopped)
        cluster.spawn("exec", "executor")

        async def protected() -> bool:
            return sorted(_legs(emu.account.order_log, stopped.signal_id)) == ["en", "sl", "tp"]

        await wait_for(protected, 60, "the position opened and protected")
        server.stop()  # Redis is gone
        emu.resume()
        await emu.wait_minutes(emu.minutes_replayed + 15)
        emu.pause()

        async def closed() -> bool:
            return await trades() == ["stop_loss"]

        await wait_for(closed, 60, "the stop's exit recorded while Redis is down")
        assert cluster.procs["exec"].poll() is None
        server.start()  # back, empty: no group, no stream
        await server.wait_up()
        fresh = _signal(emu, "XRPUSDT", "LONG")
        await publish(fresh)

        async def taken() -> bool:
            return "en" in _legs(emu.account.order_log, fresh.signal_id)

        await wait_for(taken, 60, "a new signal taken after Redis came back")
        events = [e.get("event") for e in cluster.log("exec")]
        assert "redis_unavailable" in events and "redis_recovered" in events
        assert cluster.stop_all() == {"exec": 0}
    finally:
        cluster.stop_all()
        server.stop()
        await emu.stop()


async def test_paper_executor_walks_each_bar_from_the_marks_stream(shared_data: Path, pg_dsn: str,
                                                                   tmp_path: Path) -> None:
    """Paper account in the executor process: a worker's bar (open, high, low, close) reaches it over the marks
    stream, so a stop inside the bar fills at its trigger although the bar closes above it. The correlation
    guard's ring starts with the stored candles of the last two hours and follows the marks stream."""
    import numpy as np

    from smc_quant.datasets import KLINES_2023_1M, read_klines
    from smc_quant.domain.trading import ExitReason
    from smc_quant.store.candles import CandleRepository
    from smc_quant.store.db import create_pool
    from tests.builders import candles_of
    from tests.integration.test_scale_kit import wait_for as poll

    async with _in_process(shared_data, pg_dsn, tmp_path, emulator={"history_minutes": 200}) as run:
        emu, proc, pub = run.emu, run.proc, run.pub
        btc = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz")
        first = int(np.searchsorted(btc.open_time, emu.start_ms - 150 * MINUTE_MS))
        stored = candles_of(btc, first, int(np.searchsorted(btc.open_time, emu.start_ms)))
        pool = await create_pool(pg_dsn)
        try:
            await CandleRepository(pool).upsert(stored)
        finally:
            await pool.close()
        t = emu.start_ms
        await proc.start()
        assert proc.trading.paper is not None  # no keys: the paper account
        seeded = proc.trading.returns.window("BTCUSDT", stored[-1].open_time)
        assert seeded is not None and list(seeded) == [c.close for c in stored[-len(seeded):]]
        pub.start()
        pub.publish_marks(t, ["BTCUSDT"], [27000.0], [(t, 27000.0, 27010.0, 26990.0)])

        async def clock_at(ms: int) -> bool:
            return bool(proc.trading.clock.latest_close_ms == ms)

        await poll(lambda: clock_at(t + MINUTE_MS), 10, "the first minute's marks")
        window = proc.trading.returns.window("BTCUSDT", t)
        assert window is not None and window[-1] == 27000.0  # the correlation guard's ring is fed too
        pub.publish(Signal(f"BTCUSDT:LONG:{t}", "BTCUSDT", "LONG", t, Decimal("27000"), 0.75, 1.0, 5.0, "bar@t",
                           FEATURES, schema_version=FEATURE_SCHEMA.version, created_ms=t + MINUTE_MS))

        async def opened() -> bool:
            return "BTCUSDT" in proc.trading.executor.book

        await poll(opened, 10, "the paper position")
        stop = proc.trading.executor.book["BTCUSDT"].position
        pub.publish_marks(t + MINUTE_MS, ["BTCUSDT"], [27005.0], [(t + MINUTE_MS, 27000.0, 27050.0, 26600.0)])

        async def closed() -> bool:
            return bool(proc.trading.executor.stats.closed == 1)

        await poll(closed, 10, "the stop inside the bar")
        trades = await proc.trading.repo.trades()
        assert [tr.exit_reason for tr in trades] == [ExitReason.STOP_LOSS]
        assert trades[0].exit_price < Decimal("27000") and trades[0].exit_price > Decimal("26600")  # the trigger
        assert stop.quantity == trades[0].quantity

        # the executor process re-reads exchangeInfo for scheduled delistings (its own refresh round)
        emu.market.schedule_delisting("ETHUSDT", t + 86_400_000)
        assert await proc.refresh_delistings() == ["ETHUSDT"]
        assert proc.trading.risk.delistings == {"ETHUSDT": t + 86_400_000}
        assert await proc.refresh_delistings() == []  # announced once
        # and the symbols' filters: a tick size Binance moved is used from the next order on
        emu.set_filter("BTCUSDT", "PRICE_FILTER", tickSize="0.50")
        assert await proc.refresh_delistings() == []
        assert proc.trading.filters["BTCUSDT"].tick_size == proc.trading.risk.filters["BTCUSDT"].tick_size == Decimal(
            "0.50")


async def test_executor_loops_outlive_a_redis_that_refuses(shared_data: Path, pg_dsn: str, tmp_path: Path,
                                                           rds: aioredis.Redis) -> None:
    """A Redis that answers but refuses (here WRONGTYPE on the marks key; READONLY after a failover, OOM, MISCONF
    alike) is what an unreachable one is to the executor's loops: Redis reported down (``/health`` after the
    grace), the loops keep running, and the next good read recovers. They used to crash on it until the process
    gave up."""
    from shards.executor_main import ExecutorProcess

    await apply_migrations(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=SYMBOLS, speed=0, start_paused=True))
    await emu.start()
    keys = ClusterKeys(f"t{uuid.uuid4().hex[:10]}")
    await rds.set(keys.marks, b"not a stream")
    settings = process_settings(emu, pg_dsn, tmp_path, keys.prefix)
    proc = ExecutorProcess(settings)
    try:
        await proc.start()

        async def down() -> bool:
            return proc._redis_down_since is not None

        await wait_for(down, 10, "the refused marks read reported as Redis down")
        assert not proc.supervisor.failed.is_set()
        await rds.delete(keys.marks)

        async def recovered() -> bool:
            return proc._redis_down_since is None

        await wait_for(recovered, 10, "the next good read")
        assert not proc.supervisor.failed.is_set()
    finally:
        await proc.stop()
        await rds.delete(keys.signals, keys.marks)
        await emu.stop()


async def test_paper_executor_charges_funding_from_its_stream(shared_data: Path, pg_dsn: str, tmp_path: Path) -> None:
    """The executor process's paper account pays funding as the one-process service's does: before each bar of
    the marks stream it reads the funding quote of its own stream (the bars from the marks stream used to skip
    it: paper PnL, the drawdown and the learner's experience rows left every funding payment out)."""
    from decimal import ROUND_HALF_UP

    from tests.integration.test_scale_kit import wait_for as poll

    rate = Decimal("0.0004")  # under the funding guard's 0.05 %: the long opens
    async with _in_process(shared_data, pg_dsn, tmp_path,
                           emulator={"funding_rates": (("BTCUSDT", rate),), "funding_interval_h": 1}) as run:
        emu, proc, pub = run.emu, run.proc, run.pub
        await proc.start()
        stack = proc.trading
        assert stack.paper is not None and stack.funding is not None and stack.funding_feed is not None
        await asyncio.wait_for(stack.funding_feed.connection.subscribed.wait(), 10)
        emu.resume()  # one market minute: the stream pushes its quotes
        await emu.wait_minutes(emu.minutes_replayed + 1)
        emu.pause()
        await asyncio.wait_for(stack.funding_feed.quoted.wait(), 10)
        quote = stack.funding.quote("BTCUSDT")
        assert quote is not None and quote.rate == rate
        bar = emu.candles("BTCUSDT")[-1]
        t, price = bar.open_time, bar.close
        pub.start()
        pub.publish_marks(t, ["BTCUSDT"], [price], [(t, price, price, price)])
        pub.publish(Signal(f"BTCUSDT:LONG:{t}", "BTCUSDT", "LONG", t, Decimal(repr(price)), 0.75, 1.0, 5.0,
                           "funding@t", FEATURES, schema_version=FEATURE_SCHEMA.version, created_ms=t + MINUTE_MS))

        async def opened() -> bool:
            return "BTCUSDT" in stack.executor.book

        await poll(opened, 10, "the paper position")
        qty = stack.executor.book["BTCUSDT"].position.quantity
        due = quote.next_ms
        assert t + MINUTE_MS < due <= t + 3_600_000
        pub.publish_marks(due - MINUTE_MS, ["BTCUSDT"], [price], [(due - MINUTE_MS, price, price, price)])

        async def charged() -> bool:
            return bool(stack.paper is not None and stack.paper.funding_payments)

        await poll(charged, 10, "the funding payment")
        [payment] = stack.paper.funding_payments
        assert (payment.symbol, payment.time_ms, payment.rate) == ("BTCUSDT", due, rate)
        amount = (qty * Decimal(repr(price)) * rate).quantize(Decimal("0.00000001"), ROUND_HALF_UP)
        assert payment.amount == amount > 0
        await stack.settle()
        assert stack.repo is not None and await stack.repo.funding_paid() == amount
        assert "BTCUSDT" in stack.executor.book  # still held: the flat bars hit neither stop nor target


async def test_paper_executor_skips_the_signals_held_up_while_it_was_down(shared_data: Path, pg_dsn: str,
                                                                         tmp_path: Path) -> None:
    """Paper measures a signal's age on market time (the newest close of the marks stream): a signal published
    while the executor was down, its candle closed ten minutes before the newest marks, is skipped as
    ``stale_signal`` and stored so; the same setup on the newest closed minute opens. The age limit used to apply
    to live trading only, so a paper account (and the learner's experience rows) took setups minutes old."""
    from tests.integration.test_scale_kit import wait_for as poll

    def long(open_time: int) -> Signal:
        return Signal(f"BTCUSDT:LONG:{open_time}", "BTCUSDT", "LONG", open_time, Decimal("27000"), 0.75, 1.0, 5.0,
                      f"held@{open_time}", FEATURES, schema_version=FEATURE_SCHEMA.version,
                      created_ms=open_time + MINUTE_MS)

    async with _in_process(shared_data, pg_dsn, tmp_path, mode="paper") as run:
        emu, proc, pub = run.emu, run.proc, run.pub
        assert proc.settings.mode == "paper" and proc.settings.trading.max_signal_age_s == 120
        t, newest = emu.start_ms, emu.start_ms + 10 * MINUTE_MS
        pub.start()  # while the executor is down: a signal of minute t, then ten more minutes of marks
        pub.publish(long(t))
        for minute in range(t, newest + MINUTE_MS, MINUTE_MS):
            pub.publish_marks(minute, ["BTCUSDT"], [27000.0], [(minute, 27000.0, 27010.0, 26990.0)])
        assert await pub.drain(10)  # in Redis (the publisher keeps the newest minutes of marks)
        await proc.start()
        stack = proc.trading
        assert stack.paper is not None and stack.clock.latest_close_ms == newest + MINUTE_MS

        async def handled(n: int) -> bool:
            return bool(stack.executor.stats.skipped + len(stack.executor.book) >= n)

        await poll(lambda: handled(1), 10, "the held-up signal")
        assert stack.executor.stats.skip_reasons == {"stale_signal": 1} and not stack.executor.book
        pub.publish(long(newest))
        await poll(lambda: handled(2), 10, "the fresh signal")
        assert "BTCUSDT" in stack.executor.book
        await stack.settle()
        conn = await asyncpg.connect(pg_dsn)
        try:
            stored = await conn.fetchrow("SELECT decision, decision_reason FROM signals WHERE signal_id = $1",
                                         f"BTCUSDT:LONG:{t}")
        finally:
            await conn.close()
        assert tuple(stored) == ("skip", "stale_signal")


async def test_the_executors_learner_labels_rows_with_the_live_warm_up_behind_them(shared_data: Path, pg_dsn: str,
                                                                                   tmp_path: Path) -> None:
    """Multi-process mode: the executor's learner fetches ``learner.min_history_candles`` of warm-up before its
    window and labels only the window, as the single-process service's does (docs/learning.md, "Warm-up"), over
    the horizon of the traded forced exit (it kept 120 bars whatever ``trading.max_hold_s`` said)."""
    async with _in_process(shared_data, pg_dsn, tmp_path, learner={"enabled": True, "cold_start": False,
                                                                    "min_history_candles": 2880},
                           trading={"max_hold_s": 3600.0}) as rig:
        await rig.proc.start()
        assert rig.proc.learner is not None and rig.proc.learner.labelling["min_history"] == 2880
        assert rig.proc.learner.labelling["barrier"]["horizon"] == 60
