"""PostgreSQL refusing the money-path writes for a while: the executor's book, breaker and drawdown never wait on
it, the writes are retried and land once it answers, and a write that never lands is counted and logged with its
content. Real emulator (signed orders, the user-data stream), real PostgreSQL made to fail by a trigger."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import structlog

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from tests.integration.trading_kit import Rig, trading_rig

pytestmark = pytest.mark.integration
TABLES = ("fills", "trades")


@pytest.fixture
async def rig(shared_data: Path, pg_dsn: str) -> AsyncIterator[Rig]:
    async with trading_rig(shared_data, pg_dsn) as r:
        yield r


async def store_down(pool: asyncpg.Pool, down: bool, tables: tuple[str, ...] = TABLES) -> None:
    """Every insert into ``tables`` (fills and trades) raises (a BEFORE trigger) — or no longer does."""
    async with pool.acquire() as conn:
        if down:
            await conn.execute("CREATE OR REPLACE FUNCTION store_down() RETURNS trigger LANGUAGE plpgsql AS "
                               "$$ BEGIN RAISE EXCEPTION 'store down (test)'; END $$")
        for table in tables:
            await conn.execute(f"DROP TRIGGER IF EXISTS store_down ON {table}")
            if down:
                await conn.execute(f"CREATE TRIGGER store_down BEFORE INSERT ON {table} "
                                   "FOR EACH ROW EXECUTE FUNCTION store_down()")


async def refused(ex: Executor, trades: int, retries: int) -> None:
    """Wait until ``trades`` trades are booked and the store has refused ``retries`` writes (bounded)."""
    async def wait() -> None:
        while True:
            ex.writes.retry_seen.clear()  # cleared before the check: a retry after it wakes us
            if len(ex.trades) >= trades and ex.writes.retries >= retries:
                return
            await ex.writes.retry_seen.wait()
    await asyncio.wait_for(wait(), 10)


async def open_btc(rig: Rig, ex: Executor) -> None:
    assert ex.submit(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=5.0, target_pct=8.0))
    await ex.idle()
    assert "BTCUSDT" in ex.book, ex.stats.skip_reasons


async def test_a_close_during_a_database_blip_is_booked_at_once_and_stored_when_it_answers(rig: Rig) -> None:
    ex = await rig.executor(store_retry_s=0.2)  # retries 0.2, 0.4, 0.8, 1.6, 3.2 s apart: ~6 s in all
    await open_btc(rig, ex)
    signal_id = ex.book["BTCUSDT"].position.signal_id
    await store_down(rig.pool, True)
    try:
        close = asyncio.ensure_future(ex.close("BTCUSDT", ExitReason.MANUAL))
        await refused(ex, trades=1, retries=2)  # the exit fill and the trade were both refused
        # booked while the database refuses: the book, the day's PnL and the drawdown path have the trade
        [trade] = ex.trades
        assert "BTCUSDT" not in ex.book and ex.stats.closed == 1
        assert ex.risk.realised_today == trade.net_pnl and ex.drawdown_guard.pnl == trade.net_pnl
        assert await rig.repo.trades() == []
    finally:
        await store_down(rig.pool, False)
    await close
    await ex.idle()  # the retries land
    assert ex.writes.failures == 0 and ex.metrics()["executor_store_retries"] >= 2
    assert await rig.repo.trades() == [trade]
    fills = await rig.repo.fills_for_signal(signal_id)
    assert [f.side for f in fills] == ["BUY", "SELL"]  # the entry and the exit fill that was refused first
    assert [p for p, _ in await rig.repo.open_positions()] == []


async def test_a_write_that_never_lands_is_counted_and_logged_with_what_it_carried(rig: Rig) -> None:
    ex = await rig.executor(store_retry_s=0.01)  # six attempts within 0.31 s
    await open_btc(rig, ex)
    await store_down(rig.pool, True)
    try:
        with structlog.testing.capture_logs() as logs:
            await ex.close("BTCUSDT", ExitReason.MANUAL)
            await ex.idle()
    finally:
        await store_down(rig.pool, False)
    [trade] = ex.trades  # booked all the same
    assert ex.writes.failures == 2 and ex.metrics()["executor_store_failures"] == 2.0  # the exit fill, the trade
    [lost] = [e for e in logs if e["event"] == "trade_not_stored"]
    assert lost["attempts"] == 6 and "store down (test)" in lost["error"] and lost["trade"] == repr(trade)
    [fill] = [e for e in logs if e["event"] == "fill_not_stored"]
    assert fill["symbol"] == "BTCUSDT" and fill["qty"] == str(trade.quantity)
    assert await rig.repo.trades() == []


async def test_a_stop_during_an_outage_gives_the_writes_up_in_bounded_time_and_says_what_is_lost(rig: Rig) -> None:
    """SIGTERM while the store refuses: the stop waits ``stop_wait_s`` for the retries, then gives them up — each
    logged with what it held — instead of outliving the container's grace period."""
    ex = await rig.executor(store_retry_s=0.2, stop_wait_s=0.3)  # the retries alone would take ~6 s
    await open_btc(rig, ex)
    await store_down(rig.pool, True)
    try:
        with structlog.testing.capture_logs() as logs:
            await ex.close("BTCUSDT", ExitReason.MANUAL)
            await refused(ex, trades=1, retries=2)
            await ex.stop()  # gives up after stop_wait_s: "stopped after" below, not the sixth attempt's refusal
    finally:
        await store_down(rig.pool, False)
    [trade] = ex.trades
    lost = {e["event"]: e for e in logs if e["event"].endswith("_not_stored")}
    assert set(lost) == {"trade_not_stored", "fill_not_stored"}
    assert lost["trade_not_stored"]["trade"] == repr(trade)
    assert lost["trade_not_stored"]["error"].startswith("stopped after ") and "store down (test)" in lost[
        "trade_not_stored"]["error"]


async def test_no_entry_goes_out_while_its_journal_row_cannot_be_written_and_exits_still_do(rig: Rig) -> None:
    """The order journal row is written before an entry leaves, so that a crash after its fill can be repaired
    (the restart adopts the position from it). With PostgreSQL refusing it, the entry used to go out all the
    same; it is now dropped (``journal_unavailable``) — while the exit of a position already held goes out."""
    ex = await rig.executor()
    await open_btc(rig, ex)
    sent = len(rig.account.order_log)
    await store_down(rig.pool, True, ("orders",))
    try:
        with structlog.testing.capture_logs() as logs:
            assert ex.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=5.0, target_pct=8.0))
            await ex.idle()
            assert "ETHUSDT" not in ex.book and len(rig.account.order_log) == sent, "an entry went out unjournalled"
            [refusal] = [e for e in logs if e["event"] == "entry_not_opened"]
            assert refusal["reason"].startswith("journal_unavailable")
            assert await ex.close("BTCUSDT", ExitReason.MANUAL)  # exits are never held by the journal
            await ex.idle()
    finally:
        await store_down(rig.pool, False, ("orders",))
    assert "BTCUSDT" not in ex.book and [p.symbol for p in rig.account.positions()] == []
    assert ex.manager.stats["journal_errors"] >= 2


async def test_a_journal_write_stuck_behind_a_lock_drops_the_entry_instead_of_holding_it(rig: Rig) -> None:
    """A database that hangs rather than refuses (here: the orders table locked elsewhere) used to hold every order
    for the pool's 300 s statement bound. A journal write waits ``journal_timeout_s`` at most: the entry is dropped,
    and one after the lock is gone goes out."""
    ex = await rig.executor(orders={"journal_timeout_s": 0.3})
    blocker = await rig.pool.acquire()
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            assert ex.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=5.0, target_pct=8.0))
            await ex.idle()
            assert "ETHUSDT" not in ex.book and rig.account.positions() == []
    finally:
        await rig.pool.release(blocker)
    await open_btc(rig, ex)


async def test_the_executors_database_probe_says_since_when_postgresql_has_not_answered(pg_dsn: str) -> None:
    """``TradingRepository.check_executor`` (every 30 s) is also the probe behind ``/health``'s ``database_down``:
    ``down_since`` is set by the first failure and kept through the next ones, cleared once PostgreSQL answers."""
    from smc_quant.store.trading import TradingRepository

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{port}/postgres", min_size=0, max_size=1)
    live = await asyncpg.create_pool(pg_dsn, min_size=0, max_size=2)
    try:
        away = TradingRepository(dead)
        assert away.down_since is None
        with pytest.raises(OSError, match=r"Connect call failed|refused"):
            await away.check_executor()
        first = away.down_since
        assert first is not None
        with pytest.raises(OSError, match=r"Connect call failed|refused"):
            await away.check_executor()
        assert away.down_since == first

        here = TradingRepository(live)
        here.down_since = first  # as if it had been away
        await here.check_executor()
        assert here.down_since is None
        await here.release_executor()
    finally:
        await dead.close()
        await live.close()


async def test_a_statement_stuck_behind_a_lock_times_out_instead_of_hanging(pg_dsn: str) -> None:
    """With the service's statement bound (here 0.3 s), a write blocked by a lock held elsewhere raises
    ``TimeoutError`` — its caller counts and retries it — instead of waiting for ever with nothing in the logs.
    The server-side statement is cancelled, and the pool goes on working once the lock is gone."""
    from smc_quant.store.db import create_pool

    table = f"lock_probe_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(pg_dsn, max_size=1, command_timeout=0.3)
    blocker = await asyncpg.connect(pg_dsn)
    try:
        await blocker.execute(f"CREATE TABLE {table} (x int)")
        async with blocker.transaction():
            await blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(TimeoutError):
                await pool.execute(f"INSERT INTO {table} VALUES (1)")
        await pool.execute(f"INSERT INTO {table} VALUES (2)")
        assert await blocker.fetch(f"SELECT x FROM {table}") == [(2,)]
    finally:
        await blocker.execute(f"DROP TABLE IF EXISTS {table}")
        await blocker.close()
        await pool.close()
