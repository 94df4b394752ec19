"""Reconciliation at restart against positions changed by hand while no executor ran (emulator, real
sockets, real PostgreSQL): ours closed by someone else, and one that is not ours at all."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from smc_quant.orders.broker import AccountEvent, OrderUpdate
from tests.integration.trading_kit import Rig, trading_rig

pytestmark = pytest.mark.integration


def entry_filled(executor: Executor, symbol: str) -> asyncio.Event:
    """Set when the executor's user-data stream reports a fill on ``symbol`` (the exchange executed the order,
    whatever became of its answer)."""
    event = asyncio.Event()

    def on_event(update: AccountEvent) -> None:
        if isinstance(update, OrderUpdate) and update.symbol == symbol and update.execution == "TRADE":
            event.set()

    executor.broker.subscribe(on_event)
    return event


async def _entry_answer_lost(rig: Rig, failures: int, path: str | None) -> Executor:
    """An executor whose ETHUSDT short entry fills while its answer is lost; then the next ``failures`` REST
    requests (to ``path`` only, when given) answer 503 — the entry's two queries first. Returns once it is idle."""
    ex = await rig.executor(orders={"query_max_attempts": 2})
    filled = entry_filled(ex, "ETHUSDT")
    rig.emulator.faults.order_timeout(1, hold_s=30.0, only="order")
    assert ex.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0))
    await asyncio.wait_for(filled.wait(), 10)
    rig.emulator.faults.http_error(503, count=failures, path=path)
    await ex.idle()
    return ex


async def test_restart_drops_a_position_closed_by_hand_and_leaves_a_foreign_one_alone(shared_data: Path,
                                                                                    pg_dsn: str) -> None:
    """ETHUSDT (ours) is closed by a foreign order and BTCUSDT opened by one while the executor is down.
    The restart finds no exit among our own orders for ETHUSDT, but the account's trade history has the foreign
    close: a ``manual`` trade from the exchange's fills, off the book, row deleted (it used to be dropped with a
    ``position_vanished`` alarm and no trade). BTCUSDT was not journalled by us: alarm, and not a single order of
    ours touches it."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        first = await rig.executor()
        assert first.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0))
        await first.idle()
        assert set(first.book) == {"ETHUSDT"}
        await rig.kill(first)

        account = rig.account
        (eth,) = [p for p in account.positions() if p.symbol == "ETHUSDT"]
        account.new_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=eth.quantity, time_ms=rig.clock(),
                          client_order_id="by-hand-eth", reduce_only=True)
        account.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=Decimal("0.005"),
                          time_ms=rig.clock(), client_order_id="by-hand-btc")
        log_before = account.order_log

        second = await rig.executor()
        await second.idle()
        assert len(second.book) == 0
        assert await rig.repo.open_positions() == []
        assert second.stats.alarms == 1 and second.stats.closed == 1
        assert [a["kind"] for a in await rig.repo.open_alarms()] == ["unknown_position"]
        assert account.order_log == log_before, "the restart sent an order"
        (btc,) = [p for p in account.positions() if p.symbol == "BTCUSDT"]
        assert btc.side == "LONG" and btc.quantity == Decimal("0.005")
        (trade,) = await rig.repo.trades()
        eth_fills = [f for f in account.fills if f.symbol == "ETHUSDT"]
        assert (trade.symbol, trade.exit_reason, trade.quantity) == ("ETHUSDT", ExitReason.MANUAL, eth.quantity)
        assert trade.exit_price == eth_fills[-1].price and trade.fees == sum(f.fee for f in eth_fills)

        # Later a human opens an ETHUSDT short, twice our old entry's size. Our old entry is still the newest on
        # the symbol with no trade stored, but it cannot have opened that: not adopted (it used to be, with the
        # old stop and entry time, and the 2-hour limit then closed the human's position at once).
        account.new_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity=eth.quantity * 2,
                          time_ms=rig.clock(), client_order_id="by-hand-eth-2")
        log_before = account.order_log
        await second.reconcile()
        await second.idle()
        assert "ETHUSDT" not in second.book and second.stats.alarms == 2  # ETHUSDT's (BTCUSDT's: told already)
        assert account.order_log == log_before, "the reconciliation touched a human's position"


async def test_a_reconciliation_during_an_entry_in_flight_leaves_its_position_to_the_entry(shared_data: Path,
                                                                                         pg_dsn: str) -> None:
    """The entry has filled at the exchange but its answer is late, so it is not booked yet when a reconciliation
    runs. That position is the entry's to book and protect: not adopted (a false ``position_adopted`` alarm and
    a second stop and target), not reported unknown. Once the entry returns: one stop, one target."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        filled = entry_filled(ex, "ETHUSDT")
        rig.emulator.faults.order_timeout(1, hold_s=30.0, only="order")  # executed; the answer comes too late
        assert ex.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0))

        await asyncio.wait_for(filled.wait(), 10)
        await ex.reconcile()
        assert "ETHUSDT" not in ex.book and ex.stats.repairs == 0 and ex.stats.alarms == 0
        await ex.idle()
        assert "ETHUSDT" in ex.book and await rig.repo.open_alarms() == []
        assert sorted(a.type for a in rig.account.open_algo_orders("ETHUSDT")) == ["STOP_MARKET",
                                                                                   "TAKE_PROFIT_MARKET"]


async def test_an_entry_whose_outcome_stays_unknown_is_looked_for_at_once_and_protected(shared_data: Path,
                                                                                       pg_dsn: str) -> None:
    """The entry fills but its answer is lost and both queries of it fail (503): the order manager reports it
    unknown. The executor reconciles at once: the position is found, adopted from the journal and protected —
    not left without a stop, outside the 3-position count, until the next round minutes later."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await _entry_answer_lost(rig, 2, "/fapi/v1/order")  # the two queries of the entry

        assert ex.manager.stats["alarms"] == 1  # "entry outcome unknown after queries"
        assert "ETHUSDT" in ex.book and ex.stats.reconciliations == 2  # at start, and at once after the entry
        assert sorted(a.type for a in rig.account.open_algo_orders("ETHUSDT")) == ["STOP_MARKET",
                                                                                   "TAKE_PROFIT_MARKET"]


async def test_an_entry_still_unknown_after_a_failed_reconciliation_holds_new_entries(shared_data: Path,
                                                                                      pg_dsn: str) -> None:
    """The entry fills, its answer is lost, both queries of it fail, and so does the reconciliation that follows
    (503 on every request): the exchange holds a position the book does not count. A new signal is skipped
    ``entry_unresolved`` — it used to go out, one position more than the book knew (a fourth beside three). Once a
    reconciliation succeeds the position is adopted and entries go out again."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await _entry_answer_lost(rig, 3, None)  # the entry's two queries, then the reconciliation's first call
        assert "ETHUSDT" not in ex.book and [p.symbol for p in rig.account.positions()] == ["ETHUSDT"]

        assert ex.submit(rig.signal("BTCUSDT", "LONG", confidence=0.8, stop_pct=8.0, target_pct=30.0))
        await ex.idle()
        assert ex.stats.skip_reasons.get("entry_unresolved") == 1
        assert [p.symbol for p in rig.account.positions()] == ["ETHUSDT"]

        await ex.reconcile()
        assert "ETHUSDT" in ex.book
        assert ex.submit(rig.signal("SOLUSDT", "LONG", confidence=0.8, stop_pct=8.0, target_pct=30.0))
        await ex.idle()
        assert "SOLUSDT" in ex.book and ex.stats.skip_reasons.get("entry_unresolved") == 1
