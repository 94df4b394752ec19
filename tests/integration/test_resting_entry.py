"""A LIMIT entry left on the exchange's book by a process that died while it rested (its manager takes the rest
off after ``fill_timeout_s``; a crash in between left it there, GTC). Nothing cancelled it: filling later, it
opened a position no book knew, with no stop, until the next periodic reconciliation adopted it (3 min) — or
never, a day on (an ``unknown_position`` for a human). A crash-point sweep of the order path found it. Emulator
(real 2023 candles), signed REST, the user-data stream, PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from smc_quant.domain.trading import Signal
from smc_quant.orders.broker import OrderUpdate
from smc_quant.orders.client_ids import Leg, client_order_id
from tests.integration.test_forced_exits import arrival
from tests.integration.trading_kit import Rig, signed, trading_rig

pytestmark = pytest.mark.integration
QTY = Decimal("0.010")


async def _left_by_a_dead_process(rig: Rig, signal: Signal, price: Decimal) -> str:
    """Our LIMIT entry for ``signal`` at ``price`` placed at the exchange, journalled as it was sent (with the
    decision's intent, as every entry is): what a process that died after sending it left. Its client id."""
    cid = client_order_id(signal.signal_id, Leg.ENTRY, 0)
    status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/order", [
        ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", str(QTY)),
        ("price", str(price)), ("newClientOrderId", cid)])
    assert status == 200, body
    stop = (price * Decimal("0.92")).quantize(Decimal("0.1"))
    await rig.repo.upsert_order(client_id=cid, signal_id=signal.signal_id, symbol="BTCUSDT", side="BUY", kind="entry",
                                order_type="LIMIT", algo=False, quantity=QTY, price=price, status=str(body["status"]),
                                time_ms=rig.clock(), intent={"stop_price": str(stop), "leverage": 5,
                                                             "target_price": str(price * Decimal("1.3")),
                                                             "confidence": 0.75})
    return cid


async def test_the_next_start_cancels_a_limit_entry_left_resting(shared_data: Path, pg_dsn: str) -> None:
    async with trading_rig(shared_data, pg_dsn) as rig:
        # the dead process's signed requests had activated the symbol's pricing in the emulator
        status, _ = await signed(rig.session, rig.emulator, "GET", "/fapi/v1/openOrders", [("symbol", "BTCUSDT")])
        assert status == 200
        signal = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        below = (rig.price("BTCUSDT") * Decimal("0.99")).quantize(Decimal("0.1"))
        cid = await _left_by_a_dead_process(rig, signal, below)
        assert [o.client_order_id for o in rig.account.open_orders("BTCUSDT")] == [cid], "precondition: it rests"

        await rig.executor()
        assert not rig.account.open_orders("BTCUSDT")  # it can no longer fill into an unprotected position
        row = await rig.repo.order(cid)
        assert row is not None and (row["status"], row["executed_qty"]) == ("CANCELED", 0)
        assert not rig.account.positions()


async def test_a_fill_of_our_entry_that_no_trade_owns_is_adopted_and_protected_at_once(shared_data: Path,
                                                                                       pg_dsn: str) -> None:
    """The stray entry fills while an executor runs (its start could not cancel it): a reconciliation follows the
    fill at once — the periodic one is an hour away here — and the position is booked with its stop and target."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()  # reconcile_interval_s: 3600
        signal = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        cid = client_order_id(signal.signal_id, Leg.ENTRY, 0)
        filled = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.client_order_id == cid and e.last_qty > 0)
        above = (rig.price("BTCUSDT") * Decimal("1.01")).quantize(Decimal("0.1"))  # crosses: fills at once
        await _left_by_a_dead_process(rig, signal, above)
        await asyncio.wait_for(filled.wait(), 10)
        await ex.idle()  # the reconciliation the fill started
        assert "BTCUSDT" in ex.book and ex.book["BTCUSDT"].position.signal_id == signal.signal_id
        assert sorted(a.type for a in rig.account.open_algo_orders("BTCUSDT")) == ["STOP_MARKET",
                                                                                     "TAKE_PROFIT_MARKET"]
