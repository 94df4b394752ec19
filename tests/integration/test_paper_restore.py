"""Paper mode across a restart, at the TradingStack: positions stored in PostgreSQL come back in the simulated
account and are protected again; one on a symbol no longer traded, or with no quantity, is reported, and the
start goes on."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import structlog
import structlog.testing

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS, load_exchange_info
from smc_quant.domain.trading import ExitReason, Position, Trade
from smc_quant.exchange.exchange_info import parse_exchange_info
from smc_quant.settings import load_settings
from smc_quant.store.control import ControlRepository
from smc_quant.store.db import create_pool
from smc_quant.store.trading import AccountConflict, TradingRepository

pytestmark = pytest.mark.integration
T0 = 1_700_006_400_000
LIVE = "live https://fapi.binance.com"


async def test_stored_paper_positions_are_restored_and_a_delisted_one_is_reported(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path) -> None:
    info = parse_exchange_info(load_exchange_info(shared_data))
    filters = {s.symbol: s.filters for s in info.symbols if s.symbol in ("BTCUSDT", "ETHUSDT")}
    settings = load_settings(state_dir=tmp_path, mode="paper")
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                             brackets_file=shared_data / LEVERAGE_TIERS)
        assert stack.repo is not None and stack.paper is not None
        held = Position("BTCUSDT", "SHORT", Decimal("0.010"), Decimal("37000.0"), T0, 5, "BTCUSDT:SHORT:1", 0.7,
                        Decimal("37500.0"), Decimal("36000.0"))
        gone = Position("GONEUSDT", "LONG", Decimal("3"), Decimal("1.5"), T0, 5, "GONEUSDT:LONG:1", 0.7,
                        Decimal("1.4"), Decimal("1.7"))
        empty = Position("ETHUSDT", "LONG", Decimal("0"), Decimal("2000"), T0, 5, "ETHUSDT:LONG:1", 0.7)
        for p in (held, gone, empty):
            await stack.repo.save_position(p, status="open", sl_client_id=None, tp_client_id=None)
        assert await stack.repo.record_funding("BTCUSDT", T0 + 3_600_000, Decimal("0.0001"), Decimal("-0.037"))
        assert await stack.repo.record_funding("XRPUSDT", T0 + 3_600_000, Decimal("0.0100"), Decimal("1.250"))
        assert not await stack.repo.record_funding("XRPUSDT", T0 + 3_600_000, Decimal("0.0100"), Decimal("1.250"))
        await stack.start()
        try:
            account = stack.paper.account
            [restored] = account.positions()
            assert (restored.symbol, restored.side, restored.quantity, restored.entry_price, restored.leverage) == (
                "BTCUSDT", "SHORT", Decimal("0.010"), Decimal("37000.0"), 5)
            # no trade, no fill: the configured balance less the funding paid (BTC received 0.037, XRP paid 1.25)
            assert account.balance().wallet == Decimal("10000.0") + Decimal("0.037") - Decimal("1.250")
            algos = {(a.type, a.trigger_price) for a in account.open_algo_orders("BTCUSDT")}
            assert algos == {("STOP_MARKET", Decimal("37500.0")), ("TAKE_PROFIT_MARKET", Decimal("36000.0"))}
            assert set(stack.executor.book) == {"BTCUSDT"}
            alarms = await stack.repo.open_alarms()
            assert sorted((a["kind"], a["detail"]) for a in alarms) == [
                ("position_vanished", "ETHUSDT ETHUSDT:LONG:1"), ("position_vanished", "GONEUSDT GONEUSDT:LONG:1")]
        finally:
            await stack.executor.stop()
            await stack.stop()


async def test_paper_does_not_inherit_a_live_book_or_wallet(pool: asyncpg.Pool, shared_data: Path,
                                                            tmp_path: Path) -> None:
    """A database that traded live: paper refuses to start over its open position (naming it), and once the
    book is flat starts a new epoch whose wallet is the configured balance, not live's realised PnL."""
    info = parse_exchange_info(load_exchange_info(shared_data))
    filters = {s.symbol: s.filters for s in info.symbols if s.symbol in ("BTCUSDT", "ETHUSDT")}
    live = TradingRepository(pool)
    await live.bind_account(LIVE, T0)
    await live.close_trade(Trade("sig-l", "BTCUSDT", "LONG", Decimal("0.010"), Decimal("37000"), Decimal("37500"),
                                 T0, T0 + 3_600_000, Decimal("0.37"), ExitReason.TAKE_PROFIT, 0.7),
                           features=(0.1,), schema_version="s/1", signal_time_ms=T0, model_version=None)
    held = Position("ETHUSDT", "LONG", Decimal("0.5"), Decimal("2000"), T0, 5, "sig-open", 0.7,
                    Decimal("1980"), Decimal("2040"))
    await live.save_position(held, status="open", sl_client_id="sl", tp_client_id="tp")
    settings = load_settings(state_dir=tmp_path, mode="paper")
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                             brackets_file=shared_data / LEVERAGE_TIERS)
        assert stack.account == "paper" and stack.paper is not None
        with pytest.raises(AccountConflict, match=f"ETHUSDT\\) belongs to account '{LIVE}'; starting as 'paper'"):
            await stack.start()
        assert not stack.executor.started.is_set() and not stack.paper.account.positions()

        await live.delete_position("ETHUSDT")  # live closed it: the book is flat
        stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                             brackets_file=shared_data / LEVERAGE_TIERS)
        assert stack.paper is not None
        await stack.start()
        try:
            assert stack.paper.account.balance().wallet == Decimal("10000.0")  # not 10000 + live's +4.63
            assert stack.paper.account.positions() == [] and not stack.executor.book
        finally:
            await stack.executor.stop()
            await stack.stop()


async def test_the_account_names_the_venue_of_live_trading(tmp_path: Path) -> None:
    """Live trading is bound to its venue (mainnet and testnet are different accounts); keys never appear."""
    settings = load_settings(state_dir=tmp_path, mode="live", binance_api_key="k3y-SECRET",
                             binance_api_secret="s3cret-SECRET",
                             venue={"rest_base": "https://testnet.binancefuture.com/",
                                    **{k: f"wss://fstream.binancefuture.com/{k}" for k in (
                                        "ws_public_base", "ws_market_base", "ws_private_base", "ws_api_base")}})
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters={}, session=session, pool=None, governor=None)
        assert stack.account == "live https://testnet.binancefuture.com"
        await stack.stop()


async def test_a_funding_payment_is_stored_once_and_a_write_that_never_lands_is_reported(
        pg_dsn: str, shared_data: Path, tmp_path: Path) -> None:
    """The background write stores a payment (twice is still once); with the database gone it retries, then
    reports the payment it could not store instead of raising into the event loop."""
    from smc_quant.paper import FundingPayment
    from smc_quant.store.db import create_pool
    from smc_quant.store.migrations import apply_migrations

    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=2)
    settings = load_settings(state_dir=tmp_path, mode="paper", trading={"funding_stream": False})
    payment = FundingPayment("BTCUSDT", T0, Decimal("0.0001"), Decimal("0.37"))
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters={}, session=session, pool=pool, governor=None)
        assert await stack._write_funding(payment) and await stack._write_funding(payment)
        assert await pool.fetchval("SELECT count(*) FROM funding_payments") == 1
        await pool.close()
        with structlog.testing.capture_logs() as logs:
            assert not await stack._write_funding(payment, attempts=2)
        [error] = [e for e in logs if e["event"] == "paper_funding_not_stored"]
        assert (error["symbol"], error["amount"]) == ("BTCUSDT", "0.37")
        await stack.stop()


async def test_a_second_executor_on_the_same_database_is_refused_until_the_first_stops(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path) -> None:
    """`smc-quant run` and the cluster's `smc-quant executor` started together against one account (one
    `docker compose --profile cluster up` too many): the second is refused at start, naming the first; once the
    first stops, it starts. (Nothing stopped it before: two processes placed orders for one account.)"""
    info = parse_exchange_info(load_exchange_info(shared_data))
    filters = {s.symbol: s.filters for s in info.symbols if s.symbol in ("BTCUSDT", "ETHUSDT")}
    settings = load_settings(state_dir=tmp_path, mode="paper")
    async with aiohttp.ClientSession() as session:
        def stack() -> TradingStack:
            return TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                                brackets_file=shared_data / LEVERAGE_TIERS)

        first, second = stack(), stack()
        await first.start()
        try:
            with pytest.raises(AccountConflict, match="another executor is running on this database"):
                await second.start()
            assert not second.executor.started.is_set()  # never began trading
        finally:
            await first.executor.stop()
            await first.stop()
        await second.start()
        await second.executor.stop()
        await second.stop()


_OUR_LOCKS = """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


async def _end_lock_session(pool: asyncpg.Pool) -> int:
    """End the PostgreSQL session holding this database's executor lock (a failover, a proxy's idle timeout) and
    wait until it is gone; its pid."""
    [pid] = [r["pid"] for r in await pool.fetch(_OUR_LOCKS)]
    assert await pool.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    return int(pid)


async def test_an_executor_lock_lost_with_its_session_is_taken_again_or_else_halts_entries(
        pool: asyncpg.Pool, pg_dsn: str, shared_data: Path, tmp_path: Path) -> None:
    """PostgreSQL drops a session lock with its session, silently. The stack takes it again on its next check; if
    another executor took it meanwhile, new entries halt — and no older `resume` in the database lifts that halt,
    only one made after it. A stop after the session ended still stops cleanly. (Before, the lock was never
    checked: a second executor could start beside the first.)"""
    info = parse_exchange_info(load_exchange_info(shared_data))
    filters = {s.symbol: s.filters for s in info.symbols if s.symbol in ("BTCUSDT", "ETHUSDT")}
    settings = load_settings(state_dir=tmp_path, mode="paper")
    control = ControlRepository(pool)
    await control.request("halt", "maintenance", "ops")
    await control.request("resume", "maintenance over", "ops")  # an old resume: it must not lift a later halt
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                             brackets_file=shared_data / LEVERAGE_TIERS)
        await stack.start()
        aside = await create_pool(pg_dsn, max_size=3)  # another process's connections (the stack's pool has 4)
        other = TradingRepository(aside)
        try:
            assert stack.control is not None and stack.executor.halted is None
            first = await _end_lock_session(aside)
            assert await stack.check_executor_lock()
            assert [r["pid"] for r in await aside.fetch(_OUR_LOCKS)] not in ([], [first])
            assert stack.executor.halted is None

            await _end_lock_session(aside)
            await other.claim_executor()  # a second executor starts in the gap
            assert not await stack.check_executor_lock()
            halted = stack.executor.halted
            assert halted is not None and halted.startswith("executor lock lost: another executor is running")
            await stack.settle()  # the halt is recorded too: the other executor halts as well
            recorded = await control.state()
            assert recorded.halted and recorded.reason == halted
            assert not await stack.check_executor_lock() and stack.executor.halted == halted
            assert (await control.state()).event_id == recorded.event_id  # recorded once, not every round
            await stack.control.sync()  # the newest request is the old resume: the halt stands
            assert stack.executor.halted == halted
            await other.release_executor()
            assert await stack.check_executor_lock() and stack.executor.halted == halted  # lock back, still halted
            await control.request("resume", "checked: one executor", "ops")
            await stack.control.sync()
            assert stack.executor.halted is None
        finally:
            try:
                await other.release_executor()
                await _end_lock_session(aside)  # and the stop still goes through: nothing left to unlock
            finally:
                await stack.executor.stop()
                await stack.stop()
        try:
            assert await aside.fetch(_OUR_LOCKS) == []
        finally:
            await aside.close()
