"""A booked position whose entry fill never reached the ``fills`` table — its ORDER_TRADE_UPDATE still queued when
the executor stopped, its write cut by the stop's drain, or the user-data stream down when the entry filled — still
becomes a trade when it closes (emulator on loopback with real 2023 candles, signed REST, the user-data stream, real
PostgreSQL; and a paper stack). It used to be dropped with a ``position_vanished`` alarm and no trade row: only an
adopted position had its entry fill queried, and a trade needs one.

- at a restart the entry is asked of the exchange by its client id (once: a second restart does not count it twice);
- when that query fails at the restart, the position is asked about again when it is found flat;
- a paper account rebuilt at a restart does not know the entry order: the book's own record of the entry stands.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS, load_exchange_info
from smc_quant.domain.trading import ExitReason, Position
from smc_quant.exchange.exchange_info import parse_exchange_info
from smc_quant.executor import Executor
from smc_quant.orders.broker import AccountEvent, OrderUpdate
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.settings import load_settings
from tests.integration.test_forced_exits import arrival
from tests.integration.trading_kit import Rig, check_trades, trading_rig

pytestmark = pytest.mark.integration

TAKER = Decimal("0.0005")
"""The executor's taker rate (the emulator's too): the fee it estimates for a fill it learns from a query."""


def _exit_filled(ex: Executor, client_id: str) -> asyncio.Event:
    """Set once the executor's user-data stream delivered the fill of ``client_id`` (queued for it by then)."""

    def match(e: AccountEvent) -> bool:
        return isinstance(e, OrderUpdate) and e.client_order_id == client_id and e.has_fill

    return arrival(ex, match)


async def _booked_without_entry_fill(rig: Rig) -> tuple[str, str, Decimal, Decimal]:
    """A BTCUSDT long opened and protected; the executor stopped; its entry fill row deleted (the state the lost
    event or write leaves). Returns the signal id, the entry's client id, and the entry's quantity and price."""
    first = await rig.executor()
    signal = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
    assert first.submit(signal)
    await first.idle()
    assert "BTCUSDT" in first.book, "precondition"
    await rig.kill(first)
    cid = client_order_id(signal.signal_id, Leg.ENTRY, 0)
    [stored] = await rig.repo.fills_for_signal(signal.signal_id)
    assert stored.client_order_id == cid, "precondition"
    assert await rig.pool.execute("DELETE FROM fills WHERE client_order_id = $1", cid) == "DELETE 1"
    assert await rig.repo.fills_for_signal(signal.signal_id) == []
    return signal.signal_id, cid, stored.quantity, stored.price


async def _close_and_check(rig: Rig, ex: Executor, signal_id: str, qty: Decimal, price: Decimal, *,
                           settled_by_fill: bool) -> None:
    """Close BTCUSDT at market (time limit), let its fill arrive, reconcile: one trade at the entry's quantity and
    price, its PnL and fees those of the exchange's fills, and no alarm."""
    exit_cid = client_order_id(signal_id, Leg.EXIT, 0)
    exit_seen = _exit_filled(ex, exit_cid)
    assert await ex.close("BTCUSDT", ExitReason.TIME)
    await asyncio.wait_for(exit_seen.wait(), 10)
    await ex.idle()
    assert ("BTCUSDT" not in ex.book) is settled_by_fill
    await ex.reconcile()
    await ex.idle()
    assert "BTCUSDT" not in ex.book and await rig.repo.open_positions() == []
    assert await rig.repo.open_alarms() == [], "position_vanished: the trade was lost"
    [trade] = await rig.repo.trades()
    [exit_fill] = [f for f in rig.account.fills if f.client_order_id == exit_cid]
    assert (trade.signal_id, trade.quantity, trade.entry_price) == (signal_id, qty, price)
    assert (trade.exit_price, trade.exit_reason) == (exit_fill.price, ExitReason.TIME)
    assert trade.gross_pnl == (exit_fill.price - price) * qty
    assert trade.fees == qty * price * TAKER + exit_fill.fee
    check_trades([trade], rig.account.fills)  # the same as recomputed from every fill the exchange made
    assert ex.stats.closed == 1 and ex.stats.alarms == 0


async def test_an_entry_fill_lost_before_a_restart_is_learned_from_the_exchange_and_the_trade_stored(
        shared_data: Path, pg_dsn: str) -> None:
    """The restart finds the BTCUSDT position without its entry fill and queries the entry by its client id: the
    book has it (once, after a second restart too), so the exit's fill settles the trade at once — the entry's
    quantity and price, the exchange's PnL, no ``position_vanished``."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        signal_id, cid, qty, price = await _booked_without_entry_fill(rig)

        second = await rig.executor()
        await second.idle()
        [learned] = second.book.fills(signal_id)
        assert (learned.client_order_id, learned.side, learned.quantity, learned.price) == (cid, "BUY", qty, price)
        assert await rig.repo.fills_for_signal(signal_id) == [], "a learned fill is not stored (no trade id)"
        await rig.kill(second)

        third = await rig.executor()  # asked again, counted once
        await third.idle()
        assert [(f.client_order_id, f.quantity) for f in third.book.fills(signal_id)] == [(cid, qty)]
        await third.reconcile()  # a round while the position is open adds nothing
        assert [(f.client_order_id, f.quantity) for f in third.book.fills(signal_id)] == [(cid, qty)]

        await _close_and_check(rig, third, signal_id, qty, price, settled_by_fill=True)


async def test_an_entry_fill_the_restart_could_not_ask_for_is_learned_when_the_position_is_found_flat(
        shared_data: Path, pg_dsn: str) -> None:
    """The restart's query of the entry fails (503): the start goes on, the entry fill still missing — not taken
    as "nothing filled". The exit's fill cannot settle the position alone; the reconciliation that finds it flat
    asks again and stores the trade."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        signal_id, _cid, qty, price = await _booked_without_entry_fill(rig)

        rig.emulator.faults.http_error(503, count=1, path="/fapi/v1/order")  # the entry's query at the restart
        second = await rig.executor()
        await second.idle()
        assert rig.emulator.faults.counters["http_503"] == 1, "precondition: the query failed"
        assert "BTCUSDT" in second.book and second.book.fills(signal_id) == []

        await _close_and_check(rig, second, signal_id, qty, price, settled_by_fill=False)


async def test_a_paper_position_without_its_entry_fill_settles_from_the_booked_entry_after_a_restart(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path) -> None:
    """Paper: the account rebuilt at the restart does not know the entry order (-2013), so the position's own
    record of its entry (quantity at entry price) stands for the missing fill; its close is a trade at that
    entry, with the paper account's exit fill."""
    info = parse_exchange_info(load_exchange_info(shared_data))
    filters = {s.symbol: s.filters for s in info.symbols if s.symbol == "BTCUSDT"}
    now = int(time.time() * 1000)
    qty, price = Decimal("0.010"), Decimal("37000.0")
    held = Position("BTCUSDT", "LONG", qty, price, now - 60_000, 5, "BTCUSDT:LONG:paper", 0.7, Decimal("36000.0"),
                    Decimal("38000.0"))
    entry_cid = client_order_id(held.signal_id, Leg.ENTRY, 0)
    settings = load_settings(state_dir=tmp_path, mode="paper", trading={"funding_stream": False})
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                             brackets_file=shared_data / LEVERAGE_TIERS)
        assert stack.repo is not None and stack.paper is not None
        await stack.repo.upsert_order(client_id=entry_cid, signal_id=held.signal_id, symbol="BTCUSDT", side="BUY",
                                      kind="entry", order_type="MARKET", algo=False, quantity=qty, status="FILLED",
                                      time_ms=held.entry_time_ms, executed_qty=qty)
        await stack.repo.save_position(held, status="open", sl_client_id=None, tp_client_id=None)
        await stack.start()
        try:
            ex = stack.executor
            assert [(p.symbol, p.quantity) for p in stack.paper.account.positions()] == [("BTCUSDT", qty)]
            [entry] = ex.book.fills(held.signal_id)
            assert (entry.client_order_id, entry.quantity, entry.price) == (entry_cid, qty, price)

            stack.paper.on_price("BTCUSDT", Decimal("37400.0"), now)
            exit_cid = client_order_id(held.signal_id, Leg.EXIT, 0)
            exit_seen = _exit_filled(ex, exit_cid)
            assert await ex.close("BTCUSDT", ExitReason.TIME)
            await asyncio.wait_for(exit_seen.wait(), 10)
            await ex.idle()
            assert "BTCUSDT" not in ex.book and await stack.repo.open_alarms() == []
            [trade] = await stack.repo.trades()
            [exit_fill] = [f for f in stack.paper.account.fills if f.client_order_id == exit_cid]
            assert (trade.signal_id, trade.quantity, trade.entry_price, trade.exit_price) == (
                held.signal_id, qty, price, exit_fill.price)
            assert trade.gross_pnl == (exit_fill.price - price) * qty
            assert trade.fees == qty * price * ex.config.taker_fee + exit_fill.fee
        finally:
            await stack.executor.stop()
            await stack.stop()
