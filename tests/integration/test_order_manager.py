"""SmartOrderManager with its real journal (TradingRepository on PostgreSQL) over the real PaperBroker/SimAccount.

Proves the journal rules: every order is written as ``sending`` before the request leaves, then with the
exchange's answer (status, exchange id); a cancelled entry leaves ``interrupted``; an exit that never goes
through leaves ``alarm`` with the last error. Real exchangeInfo filters and real 2023 closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.errors import TemporaryError
from smc_quant.order_manager import OrderConfig, SmartOrderManager
from smc_quant.orders.broker import AlgoRequest, AlgoState, OrderRequest, OrderState
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.paper import PaperBroker
from smc_quant.sim.account import SimAccount
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.trading import TradingRepository
from tests.unit.test_order_manager import Sleeps, bars, decision
from tests.unit.test_paper_broker import Clock, broker_of, make_venue, real_filters

pytestmark = pytest.mark.integration


@pytest.fixture
async def repo(pg_dsn: str, shared_data: Path) -> AsyncIterator[TradingRepository]:
    """The trading repository on a freshly migrated database (the tests price real symbols: skipped, like
    every test on real data, when ``shared_data`` is missing)."""
    await apply_migrations(pg_dsn)
    pool: asyncpg.Pool = await create_pool(pg_dsn, max_size=4)
    try:
        yield TradingRepository(pool)
    finally:
        await pool.close()


class Witness(PaperBroker):
    """Records the journal row of each order at the moment its request reaches the exchange."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.repo: TradingRepository | None = None
        self.seen: dict[str, str | None] = {}

    async def _witness(self, cid: str) -> None:
        assert self.repo is not None
        row = await self.repo.order(cid)
        self.seen[cid] = None if row is None else row["status"]

    async def place_order(self, request: OrderRequest) -> OrderState:
        await self._witness(request.client_order_id)
        return await super().place_order(request)

    async def place_algo(self, request: AlgoRequest) -> AlgoState:
        await self._witness(request.client_algo_id)
        return await super().place_algo(request)


async def test_every_order_is_journalled_as_sending_before_it_leaves_and_with_its_answer_after(
        repo: TradingRepository) -> None:
    """Open (entry, stop, target) and a time exit: each row is 'sending' at send time and final afterwards."""
    venue = make_venue(Witness)
    broker = broker_of(venue, Witness)
    broker.repo = repo
    price = venue.start("ETHUSDT", 5_000)
    d = decision("ETHUSDT", "SHORT", price, bars("ETHUSDT", 5_000), stop_pct=3.0, target_pct=6.0)
    manager = SmartOrderManager(venue.broker, real_filters(), journal=repo, clock=venue.clock, sleep=Sleeps())

    opened = await manager.open(d, price)
    assert opened.position is not None
    closed = await manager.close(opened.position, ExitReason.TIME, mark=venue.step("ETHUSDT", 4))
    assert closed.outcome == "closed"

    sid = d.signal.signal_id
    ids = {leg: client_order_id(sid, leg, 0) for leg in Leg}
    assert broker.seen == dict.fromkeys(ids.values(), "sending")
    rows = {r["client_order_id"]: r for r in await repo.orders_for_signal(sid)}
    assert set(rows) == set(ids.values())
    entry, sl, tp, ex = (rows[ids[leg]] for leg in (Leg.ENTRY, Leg.STOP_LOSS, Leg.TAKE_PROFIT, Leg.EXIT))
    assert (entry["kind"], entry["status"], entry["side"], entry["quantity"]) == ("entry", "FILLED", "SELL",
                                                                                d.quantity)
    assert (sl["kind"], sl["status"], sl["algo"], sl["close_position"], sl["trigger_price"], sl["order_type"]) == (
        "stop_loss", "CANCELED", True, True, d.stop_price, "STOP_MARKET")
    assert (tp["kind"], tp["status"], tp["trigger_price"], tp["order_type"]) == (
        "take_profit", "CANCELED", d.target_price, "TAKE_PROFIT_MARKET")
    assert (ex["kind"], ex["status"], ex["reduce_only"], ex["side"]) == ("exit", "FILLED", True, "BUY")
    assert all(r["exchange_id"] is not None and r["attempt"] == 0 and r["last_error"] is None for r in rows.values())


class Hanging(PaperBroker):
    """An exchange that accepts the connection and never answers an order (until the caller gives up)."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.in_flight = asyncio.Event()

    async def place_order(self, request: OrderRequest) -> OrderState:
        self.in_flight.set()
        await asyncio.Event().wait()  # never set: the request hangs until cancelled
        raise AssertionError("unreachable")


async def test_a_cancelled_entry_propagates_after_the_journal_says_interrupted(repo: TradingRepository) -> None:
    venue = make_venue(Hanging)
    broker = broker_of(venue, Hanging)
    price = venue.start("BTCUSDT", 5_000)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 5_000))
    manager = SmartOrderManager(venue.broker, real_filters(), journal=repo, clock=venue.clock, sleep=Sleeps())

    task = asyncio.create_task(manager.open(d, price))
    await asyncio.wait_for(broker.in_flight.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    row = await repo.order(client_order_id(d.signal.signal_id, Leg.ENTRY, 0))
    assert row is not None and (row["status"], row["last_error"]) == ("interrupted", "cancelled")


class ExitsDown(PaperBroker):
    """Reduce-only orders always fail with a temporary error."""

    async def place_order(self, request: OrderRequest) -> OrderState:
        if request.reduce_only:
            raise TemporaryError("HTTP 503 Service Unavailable")
        return await super().place_order(request)


async def test_an_exit_that_never_goes_through_is_journalled_as_an_alarm_with_its_last_error(
        repo: TradingRepository) -> None:
    venue = make_venue(ExitsDown)
    price = venue.start("BTCUSDT", 8_000)
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 8_000), stop_pct=3.0, target_pct=6.0)
    sleeps = Sleeps()
    manager = SmartOrderManager(venue.broker, real_filters(), journal=repo, clock=venue.clock, sleep=sleeps,
                                config=OrderConfig(exit_max_attempts=4))
    opened = await manager.open(d, price)
    assert opened.position is not None

    closed = await manager.close(opened.position, ExitReason.BREAKER)

    assert (closed.closed, closed.outcome) == (False, "alarm") and manager.stats["alarms"] == 1
    row = await repo.order(client_order_id(d.signal.signal_id, Leg.EXIT, 0))
    assert row is not None and row["status"] == "alarm" and "503" in (row["last_error"] or "")
    assert sleeps.delays == [0.5, 1.0, 2.0]


async def test_a_journal_that_fails_stops_only_a_new_entry(shared_data: Path) -> None:
    """The database goes away after the entry's journal row: protection and the exit still go out, failures are
    counted. With the database away before it, the entry is not sent (a restart could not adopt its position)."""
    venue = make_venue()
    price = venue.start("ETHUSDT", 9_000)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", 9_000), stop_pct=3.0, target_pct=6.0)

    class Failing:
        def __init__(self) -> None:
            self.rows, self.up_for = 0, 1  # the entry's "sending" row lands, nothing after it

        async def upsert_order(self, **_: Any) -> None:
            self.rows += 1
            if self.rows > self.up_for:
                raise OSError("connection refused")

    journal = Failing()
    manager = SmartOrderManager(venue.broker, real_filters(), journal=journal, clock=venue.clock, sleep=Sleeps())
    opened = await manager.open(d, price)
    assert opened.position is not None and opened.sl is not None
    closed = await manager.close(opened.position, ExitReason.MANUAL)
    assert closed.outcome == "closed" and venue.account.positions() == []
    assert manager.stats["journal_errors"] >= 7 and manager.stats["alarms"] == 0
    assert closed.exit is not None and closed.exit.executed_qty == d.quantity > Decimal(0)

    sent = len(venue.account.order_log)
    journal.up_for = 0
    later = decision("ETHUSDT", "SHORT", price, bars("ETHUSDT", 9_001), stop_pct=3.0, target_pct=6.0)
    refused = await manager.open(later, price)
    assert refused.position is None and refused.reason.startswith("journal_unavailable")
    assert len(venue.account.order_log) == sent
