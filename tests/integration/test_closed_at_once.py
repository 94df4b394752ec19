"""An entry that fills, but whose stop the exchange refuses as already passed (-2021: the price ran through the stop
while the entry filled), is closed at market at once. That round trip cost the fees of both legs and the move
between them. It used to be invisible: no trade stored (nothing in the day's summary, the report, the breaker or the
learner), nothing told, only a warning log line. Found by a review of the figures the trader sees. Now it is booked
like any position and settled by its fills: a ``stop_loss`` trade at the exchange's prices and fees, told as an
OPEN and a CLOSE.

End to end: emulator (real 2023 candles) over real sockets, with its ``would_trigger`` fault refusing the stop as the
exchange does, the real executor and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.orders.broker import OrderUpdate
from smc_quant.orders.client_ids import Leg, parse_client_order_id
from tests.integration.test_forced_exits import arrival, open_position
from tests.integration.trading_kit import Told, signed, trading_rig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fault", ["would_trigger", "unplaceable"])
async def test_an_entry_closed_at_once_is_a_trade_stored_and_told(shared_data: Path, pg_dsn: str, fault: str) -> None:
    """``would_trigger``: the stop is refused as already passed, a ``stop_loss`` trade (the market stopped it out:
    the symbol's cooldown follows). ``unplaceable``: every try of the stop fails (503), an ``unprotected`` trade
    with its alarm, and no cooldown — the next signal on the symbol opens."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        told = Told()
        ex = await rig.executor(notifier=told, orders={"exit_retry_base_s": 0.01})
        wallet = rig.account.balance().wallet
        if fault == "would_trigger":
            rig.emulator.faults.would_trigger(1)  # the stop, the first algo order after the fill
        else:
            rig.emulator.faults.order_reject_503(20, only="algo")  # every try of the stop
        exit_filled = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.has_fill and (
            (p := parse_client_order_id(e.client_order_id)) is not None and p.leg is Leg.EXIT))

        assert ex.submit(rig.signal("ETHUSDT", "LONG", confidence=0.8, stop_pct=0.5, target_pct=1.0))
        await ex.idle()
        await asyncio.wait_for(exit_filled.wait(), 10)
        await ex.idle()

        assert rig.account.positions() == [] and rig.account.open_algo_orders() == []
        entry_fill, exit_fill = rig.account.fills
        (trade,) = await rig.repo.trades()
        reason = ExitReason.STOP_LOSS if fault == "would_trigger" else ExitReason.UNPROTECTED
        assert trade.exit_reason is reason and "ETHUSDT" not in ex.book
        assert (trade.quantity, trade.entry_price, trade.exit_price) == (entry_fill.quantity, entry_fill.price,
                                                                         exit_fill.price)
        assert trade.fees == entry_fill.fee + exit_fill.fee
        assert trade.net_pnl == rig.account.balance().wallet - wallet  # all of what the wallet lost
        assert ex.risk.realised_today == trade.net_pnl and ex.stats.closed == 1
        assert [kind for kind, _ in told.sent if kind != "error"] == ["open", "close"]  # "error": the alarm
        assert told.sent[-1][1].startswith("CLOSE ETHUSDT LONG") and f"· {reason.value} ·" in told.sent[-1][1]
        errors = [text for kind, text in told.sent if kind == "error"]
        if fault == "would_trigger":
            assert ex.manager.stats["immediate_trigger_closes"] == 1 and errors == []
        else:
            (error,) = errors
            assert "stop could not be placed; closing at market" in error

        rig.emulator.faults.order_reject_503(0)  # the exchange places stops again
        again = rig.signal("ETHUSDT", "LONG", confidence=0.8, stop_pct=0.5, target_pct=1.0)
        assert ex.submit(replace(again, signal_id=f"{again.signal_id}:again"))
        await ex.idle()
        if fault == "would_trigger":
            assert ex.stats.skip_reasons == {"cooldown": 1} and "ETHUSDT" not in ex.book
        else:
            assert ex.stats.skip_reasons == {} and "ETHUSDT" in ex.book


@pytest.mark.parametrize("fault", ["would_trigger", "unplaceable"])
async def test_a_stop_that_cannot_be_put_back_closes_the_position_under_its_reason(shared_data: Path, pg_dsn: str,
                                                                                   fault: str) -> None:
    """Our open position's stop is cancelled by someone; putting it back is refused as already passed, or fails at
    every try: the position is closed at market, and its trade is a ``stop_loss`` or an ``unprotected`` one — the
    close was the order manager's own, and its trade used to be stored as ``reconciled``, as if found closed."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(orders={"exit_retry_base_s": 0.01})
        entry = await open_position(rig, ex, "ETHUSDT", "LONG")
        if fault == "would_trigger":
            rig.emulator.faults.would_trigger(1)
        else:
            rig.emulator.faults.order_reject_503(20, only="algo")
        exit_filled = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.has_fill and (
            (p := parse_client_order_id(e.client_order_id)) is not None and p.leg is Leg.EXIT))
        status, body = await signed(rig.session, rig.emulator, "DELETE", "/fapi/v1/algoOrder",
                                    [("symbol", "ETHUSDT"), ("clientAlgoId", entry.sl_client_id)])
        assert status == 200, body
        await asyncio.wait_for(exit_filled.wait(), 10)
        await ex.idle()
        rig.emulator.faults.order_reject_503(0)

        assert rig.account.positions() == [] and "ETHUSDT" not in ex.book
        (trade,) = await rig.repo.trades()
        assert trade.exit_reason is (ExitReason.STOP_LOSS if fault == "would_trigger" else ExitReason.UNPROTECTED)


async def test_a_close_at_once_that_fails_leaves_no_reason_on_the_position_it_keeps(shared_data: Path,
                                                                                   pg_dsn: str) -> None:
    """The entry's stop is refused as already passed and its close at once is refused too: the position stays,
    protected again. Its exit reason stays unset: a person's close by hand later is a ``manual`` trade, not the
    ``stop_loss`` of the close that failed (with its cooldown and a training row)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(orders={"exit_retry_base_s": 0.01, "exit_max_attempts": 2})
        rig.emulator.faults.would_trigger(1)
        rig.emulator.faults.order_reject_503(2, only="reduce_only")
        assert ex.submit(rig.signal("ETHUSDT", "LONG", confidence=0.8, stop_pct=8.0, target_pct=30.0))
        await ex.idle()
        entry = ex.book["ETHUSDT"]
        assert (entry.status, entry.exit_reason) == ("open", None) and entry.sl_client_id is not None

        (held,) = rig.account.positions()
        done = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.has_fill and e.client_order_id == "by-hand-1")
        status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/order",
                                    [("symbol", "ETHUSDT"), ("side", "SELL"), ("type", "MARKET"),
                                     ("quantity", str(held.quantity)), ("reduceOnly", "true"),
                                     ("newClientOrderId", "by-hand-1")])
        assert status == 200, body
        await asyncio.wait_for(done.wait(), 10)
        await ex.idle()
        (trade,) = await rig.repo.trades()
        assert trade.exit_reason is ExitReason.MANUAL
