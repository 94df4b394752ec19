"""A person trades on the same account while the service runs (the Binance app, another tool). The service must never
trade on a position that is not its own: no entry on a symbol a person holds (ours would add to it or reverse it, and
our stop, target and 2-hour exit would then close it), no stop and target left armed when a person closed our position
while the user-data stream was down (they would close the person's next position on the symbol), and such a position's
entry never adopted again for the person's next position. Found by a review of a person and the service sharing an
account; emulator (real 2023 candles) over real sockets, PostgreSQL. "Stream down": the emulator's account changed
directly, with no user-data event."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from smc_quant.orders.broker import AccountUpdate, OrderUpdate
from tests.integration.test_forced_exits import arrival, open_position
from tests.integration.trading_kit import Rig, our_orders, signed, trading_rig

pytestmark = pytest.mark.integration


async def _by_hand(rig: Rig, ex: Executor, cid: str, side: str, quantity: Decimal, *, stream: bool,
                   reduce_only: bool = False) -> None:
    """A person's MARKET order on ETHUSDT: over REST as the app sends it (``stream``: the executor hears of it, and
    this returns once it has), or straight into the account (the stream was down)."""
    if not stream:
        rig.account.new_order(symbol="ETHUSDT", side=side, type="MARKET", quantity=quantity, time_ms=rig.clock(),
                              client_order_id=cid, reduce_only=reduce_only)
        return
    seen = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.client_order_id == cid and e.has_fill)
    params: list[tuple[str, Any]] = [("symbol", "ETHUSDT"), ("side", side), ("type", "MARKET"),
                                     ("quantity", str(quantity)), ("newClientOrderId", cid)]
    status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/order",
                                [*params, ("reduceOnly", "true")] if reduce_only else params)
    assert status == 200, body
    await asyncio.wait_for(seen.wait(), 10)
    await ex.idle()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "stream_down"])
async def test_no_entry_on_a_symbol_a_person_holds_until_it_is_flat(shared_data: Path, pg_dsn: str,
                                                                     stream: bool) -> None:
    """A person shorts ETHUSDT; our short signal on it is skipped (``foreign_position``) — it used to go out, and our
    2-hour exit then closed the person's 0.1 with ours. The person is told once, not at every round nor at each
    change of their size. Once their position is flat, our signals on the symbol go out again."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await _by_hand(rig, ex, "by-hand-1", "SELL", Decimal("0.100"), stream=stream)
        if not stream:
            await ex.reconcile()  # the periodic round finds it

        assert ex.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.75, stop_pct=8.0, target_pct=30.0))
        await ex.idle()
        assert our_orders(rig) == [] and len(ex.book) == 0
        assert ex.stats.skip_reasons == {"foreign_position": 1} and ex.foreign == {"ETHUSDT"}

        with structlog.testing.capture_logs() as logs:
            await ex.reconcile()
            await _by_hand(rig, ex, "by-hand-2", "SELL", Decimal("0.050"), stream=stream)  # the person adds
            await ex.reconcile()
        told = [e for e in logs if e["event"] == "unknown_position"]
        assert len(told) == (0 if not stream else 1)  # stream down: told at the first round above already

        await _by_hand(rig, ex, "by-hand-3", "BUY", Decimal("0.150"), stream=stream, reduce_only=True)
        await ex.reconcile()
        assert ex.foreign == set()
        later = rig.signal("ETHUSDT", "SHORT", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        assert ex.submit(replace(later, signal_id=f"{later.signal_id}:again"))  # the same minute: another setup
        await ex.idle()
        assert "ETHUSDT" in ex.book and our_orders(rig)


async def test_a_position_closed_by_hand_while_the_stream_was_down_is_a_manual_trade_from_the_trade_history(
        shared_data: Path, pg_dsn: str) -> None:
    """Our ETHUSDT short is closed by a person while the stream is down: no exit of ours, but the account's trade
    history (``GET /fapi/v1/userTrades``) has the person's execution, and its order's client id is not ours. The trade
    is stored — ``manual``, at the exchange's price and fee — with nothing of ours left armed and no alarm; it used to
    be dropped as ``position_vanished``, its loss missing from the day's breaker."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        await _by_hand(rig, ex, "by-hand-close", "BUY", entry.position.quantity, stream=False, reduce_only=True)
        await ex.reconcile()
        await ex.idle()
        assert "ETHUSDT" not in ex.book and await rig.repo.open_alarms() == []
        (trade,) = await rig.repo.trades()
        fills = rig.account.fills
        assert (trade.exit_reason, trade.quantity, trade.exit_price) == (ExitReason.MANUAL, entry.position.quantity,
                                                                         fills[-1].price)
        assert trade.fees == sum(f.fee for f in fills) and ex.risk.realised_today == trade.net_pnl
        assert rig.account.open_algo_orders("ETHUSDT") == []


async def test_a_position_closed_where_no_history_tells_leaves_nothing_armed_nor_adoptable(
        shared_data: Path, pg_dsn: str) -> None:
    """Our ETHUSDT short is closed by a person while the stream is down, and the trade history no longer holds that
    execution (Binance answers a limited past): the round finds it flat with no exit to learn
    (``position_vanished``). Our stop and target used to stay armed — the person's next short was then closed by our
    old stop — and our entry, with no trade stored, was taken as the origin of the person's next smaller short: adopted
    as ours, with our old entry time, so the 2-hour limit would close it at once."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        await _by_hand(rig, ex, "by-hand-close", "BUY", entry.position.quantity, stream=False, reduce_only=True)
        rig.emulator.faults.forget_trades(rig.clock())
        await ex.reconcile()
        await ex.idle()
        assert "ETHUSDT" not in ex.book and [a["kind"] for a in await rig.repo.open_alarms()] == ["position_vanished"]
        assert rig.account.open_algo_orders("ETHUSDT") == []

        await _by_hand(rig, ex, "person-short", "SELL", Decimal("0.300"), stream=False)
        sent = len(our_orders(rig))
        await ex.reconcile()
        await ex.idle()
        assert "ETHUSDT" not in ex.book and ex.foreign == {"ETHUSDT"} and len(our_orders(rig)) == sent
        assert sorted(a["kind"] for a in await rig.repo.open_alarms()) == ["position_vanished", "unknown_position"]

        again = await rig.executor()  # a restart: still not adopted
        await again.idle()
        assert "ETHUSDT" not in again.book and len(our_orders(rig)) == sent


async def test_a_position_reversed_by_hand_while_the_stream_was_down_is_not_protected_as_ours(
        shared_data: Path, pg_dsn: str) -> None:
    """A person buys twice our short while the stream is down: the exchange holds a long. The round used to log a size
    mismatch and place a stop and target for a long it took for ours; our 2-hour exit then found no short and
    the entry stayed ``closing`` for ever. The long is not ours: our short ended (a ``manual`` trade of our quantity
    from the person's execution, with our share of its fee), none of our orders stays on the symbol, and no entry
    goes out on it."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        await _by_hand(rig, ex, "by-hand-flip", "BUY", entry.position.quantity * 2, stream=False)
        await ex.reconcile()
        await ex.idle()
        assert "ETHUSDT" not in ex.book and ex.foreign == {"ETHUSDT"}
        assert rig.account.open_algo_orders("ETHUSDT") == []
        (remote,) = rig.account.positions()
        assert (remote.side, remote.quantity) == ("LONG", entry.position.quantity)
        assert [a["kind"] for a in await rig.repo.open_alarms()] == ["unknown_position"]
        (trade,) = await rig.repo.trades()
        opened, flip = rig.account.fills
        assert (trade.exit_reason, trade.quantity, trade.exit_price) == (ExitReason.MANUAL, opened.quantity, flip.price)
        assert trade.fees == opened.fee + (flip.fee / 2).quantize(Decimal("1e-8"))


async def test_a_position_a_person_closes_by_hand_is_stored_as_a_manual_exit(shared_data: Path, pg_dsn: str) -> None:
    """Closed in the app with the stream up: one trade, its PnL the exchange's fills, its reason ``manual`` (it used to
    be ``reconciled``, as if the service had not seen how it ended)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        await _by_hand(rig, ex, "by-hand-close", "BUY", entry.position.quantity, stream=True, reduce_only=True)
        (trade,) = await rig.repo.trades()
        assert trade.exit_reason == ExitReason.MANUAL and rig.account.open_algo_orders("ETHUSDT") == []
        fills = rig.account.fills
        assert trade.fees == sum(f.fee for f in fills) and trade.exit_price == fills[-1].price


async def test_a_withdrawal_moves_the_daily_loss_limit_base(shared_data: Path, pg_dsn: str) -> None:
    """A person withdraws from the futures wallet while a position of ours is open: the ACCOUNT_UPDATE (reason
    WITHDRAW, ``bc`` the amount) lowers the day's starting equity by as much, so the daily loss limit stays a share
    of what the account holds; nothing is closed, nothing halts."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await open_position(rig, ex, "ETHUSDT", "SHORT")
        base = ex.risk.day_start_equity
        assert base is not None and base > 0, "precondition: the day has begun"
        out = (base * Decimal("0.6")).quantize(Decimal("0.01"))
        wallet = rig.account.balance().wallet - out
        seen = arrival(ex, lambda e: isinstance(e, AccountUpdate) and e.reason == "WITHDRAW")
        rig.emulator.user_data.publish([AccountUpdate("WITHDRAW", wallet, (), rig.clock(), -out)])
        await asyncio.wait_for(seen.wait(), 10)
        await ex.idle()
        assert ex.risk.day_start_equity == base - out and ex.wallet == wallet
        assert "ETHUSDT" in ex.book and ex.halted is None and not ex.risk.breaker_tripped
