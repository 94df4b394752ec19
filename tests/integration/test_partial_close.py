"""A trader closes half of one of our positions by hand on the exchange (a partial take-profit in the app). The book
keeps the entry's quantity (a missing entry fill is learned against it) but sizes the account by what the position
still holds, and the reconciliation compares the exchange with that. It used to compare with the entry's quantity:
``position_mismatch`` every round until the position closed, and the risk manager counted the whole entry's notional,
margin and risk. Emulator (real 2023 candles) over real sockets, PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest
import structlog

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from smc_quant.orders.broker import OrderUpdate
from tests.integration.test_forced_exits import arrival, open_position
from tests.integration.trading_kit import Rig, signed, trading_rig

pytestmark = pytest.mark.integration


async def _close_half_by_hand(rig: Rig, ex: Executor, symbol: str, quantity: Decimal) -> Decimal:
    """A reduce-only MARKET for half of ``quantity`` sent over REST as the exchange's app would; returns once the
    executor's stream delivered its fill. Returns the quantity closed."""
    half = (quantity / 2).quantize(Decimal("0.001"), ROUND_DOWN)
    seen = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.client_order_id == "by-hand" and e.has_fill)
    status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/order",
                                [("symbol", symbol), ("side", "BUY"), ("type", "MARKET"), ("quantity", str(half)),
                                 ("reduceOnly", "true"), ("newClientOrderId", "by-hand")])
    assert status == 200, body
    await asyncio.wait_for(seen.wait(), 10)
    await ex.idle()
    return half


async def test_a_partial_close_by_hand_resizes_the_account_and_the_trade_keeps_every_fill(shared_data: Path,
                                                                                          pg_dsn: str) -> None:
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        opened = entry.position.quantity
        margin_before = ex.snapshot().used_margin

        half = await _close_half_by_hand(rig, ex, "ETHUSDT", opened)
        (remote,) = rig.account.positions()
        assert remote.quantity == opened - half
        held = ex.snapshot().positions["ETHUSDT"]
        assert held.quantity == remote.quantity and entry.position.quantity == opened
        assert ex.snapshot().used_margin == held.margin < margin_before
        with structlog.testing.capture_logs() as logs:
            await ex.reconcile()
            await ex.reconcile()
        assert [e for e in logs if e["event"] == "position_mismatch"] == []

        assert await ex.close("ETHUSDT", ExitReason.TIME)
        await ex.idle()
        (trade,) = await rig.repo.trades()
        fills = rig.account.fills  # the entry, the hand's half and our exit of the rest
        outs = [f for f in fills if f.side == "BUY"]
        assert outs[0].client_order_id == "by-hand" and sum(f.quantity for f in outs) == opened
        assert trade.quantity == opened and trade.fees == sum(f.fee for f in fills)
        assert trade.exit_price == sum(f.quantity * f.price for f in outs) / opened
        assert await rig.repo.open_alarms() == [] and rig.account.positions() == []


async def test_an_exit_fill_the_stream_missed_is_told_once_not_every_round(shared_data: Path, pg_dsn: str) -> None:
    """The partial close happened while the stream was down (the emulator's account changed directly, no event):
    the exchange holds less than the book knows of. Told once, with what each side holds; not again each round."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        opened = entry.position.quantity
        half = (opened / 2).quantize(Decimal("0.001"), ROUND_DOWN)
        rig.account.new_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=half, time_ms=rig.clock(),
                              client_order_id="by-hand", reduce_only=True)
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                await ex.reconcile()
        told = [e for e in logs if e["event"] == "position_mismatch"]
        assert [(e["ours"], e["exchange"]) for e in told] == [(str(opened), str(opened - half))]
