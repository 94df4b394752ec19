"""Paper mode across a restart, when a position's exit fills were stored but its trade was not: the process died
between the exit fill and ``close_trade`` (trade row + position row deleted, one transaction), or its stop gave up
a trade write that was retrying through a database blip. The simulated account comes back at what the stored
fills leave of the position — nothing when they closed it — with their realised PnL counted once, and the
reconciliation records the trade once from those fills. (Before, the closed position was opened again at full
size while its exit's PnL was already in the wallet: counted twice when it closed again.)"""

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
from smc_quant.domain.trading import ExitReason, Fill, Position, Trade
from smc_quant.exchange.exchange_info import parse_exchange_info
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.settings import load_settings
from smc_quant.store.trading import TradingRepository

pytestmark = pytest.mark.integration
SID = "BTCUSDT:LONG:1"
BALANCE = Decimal("10000.0")
ENTRY_FEE, EXIT_FEE = Decimal("0.185"), Decimal("0.19")


def _stack(session: aiohttp.ClientSession, pool: asyncpg.Pool, shared_data: Path, tmp_path: Path,
           closed: list[Trade], settled: asyncio.Event) -> TradingStack:
    info = parse_exchange_info(load_exchange_info(shared_data))
    filters = {s.symbol: s.filters for s in info.symbols if s.symbol in ("BTCUSDT", "ETHUSDT")}
    settings = load_settings(state_dir=tmp_path, mode="paper", trading={"funding_stream": False})

    def on_trade(trade: Trade) -> None:  # called once the trade is stored (close_trade)
        closed.append(trade)
        settled.set()

    stack = TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                         brackets_file=shared_data / LEVERAGE_TIERS, on_trade_closed=on_trade)
    assert stack.repo is not None and stack.paper is not None
    return stack


async def _crashed_after_exit_fills(repo: TradingRepository, t0: int, exit_qty: Decimal, exit_id: str,
                                    exit_kind: str) -> None:
    """What the process left: the position row open (0.010 BTC long at 37000, TP 38000), its entry fill and an exit
    fill of ``exit_qty`` at 38000 stored, no trade."""
    position = Position("BTCUSDT", "LONG", Decimal("0.010"), Decimal("37000.0"), t0, 5, SID, 0.7,
                        Decimal("36500.0"), Decimal("38000.0"))
    await repo.save_position(position, status="open", sl_client_id=client_order_id(SID, Leg.STOP_LOSS, 0),
                             tp_client_id=client_order_id(SID, Leg.TAKE_PROFIT, 0))
    entry_id = client_order_id(SID, Leg.ENTRY, 0)
    for cid, side, kind, qty in ((entry_id, "BUY", "entry", Decimal("0.010")), (exit_id, "SELL", exit_kind, exit_qty)):
        await repo.upsert_order(client_id=cid, signal_id=SID, symbol="BTCUSDT", side=side, kind=kind,
                                order_type="MARKET", algo=kind in ("stop_loss", "take_profit"), quantity=qty,
                                status="FILLED", time_ms=t0)
    assert await repo.record_fill(Fill("BTCUSDT", entry_id, "BUY", Decimal("0.010"), Decimal("37000.0"), ENTRY_FEE,
                                       t0, Decimal(0), 1, 1))
    assert await repo.record_fill(Fill("BTCUSDT", exit_id, "SELL", exit_qty, Decimal("38000.0"), EXIT_FEE,
                                       t0 + 60_000, (Decimal("38000.0") - Decimal("37000.0")) * exit_qty, 2, 2))


async def test_a_position_its_stored_fills_closed_is_not_reopened_and_its_trade_is_recorded_once(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path) -> None:
    t0 = int(time.time() * 1000) - 600_000  # within the 2-hour limit: no time exit races the reconciliation
    closed: list[Trade] = []
    settled = asyncio.Event()
    expected_wallet = BALANCE + Decimal("10.0") - ENTRY_FEE - EXIT_FEE  # the take profit's +10 USDT, once
    async with aiohttp.ClientSession() as session:
        stack = _stack(session, pool, shared_data, tmp_path, closed, settled)
        assert stack.repo is not None and stack.paper is not None
        repo = stack.repo
        await _crashed_after_exit_fills(repo, t0, Decimal("0.010"), client_order_id(SID, Leg.TAKE_PROFIT, 0),
                                        "take_profit")
        stack.paper.on_price("BTCUSDT", Decimal("37500.0"), t0 + 120_000)
        await stack.start()
        try:
            account = stack.paper.account
            assert account.positions() == []  # flat, as the stored fills say: not opened again
            assert account.balance().wallet == expected_wallet
            await asyncio.wait_for(settled.wait(), 10)  # the start's reconciliation settles it from its fills
            await stack.executor.idle()
            [trade] = closed
            assert (trade.signal_id, trade.quantity, trade.entry_price, trade.exit_price, trade.fees) == (
                SID, Decimal("0.010"), Decimal("37000.0"), Decimal("38000.0"), ENTRY_FEE + EXIT_FEE)
            assert trade.exit_reason == ExitReason.TAKE_PROFIT  # its stored fill is the target's: not "reconciled"
            assert BALANCE + trade.net_pnl == expected_wallet
            assert [(t.signal_id, t.net_pnl) for t in await repo.trades()] == [(SID, trade.net_pnl)]
            assert await repo.open_positions() == [] and "BTCUSDT" not in stack.executor.book
            assert [a["kind"] for a in await repo.open_alarms()] == []  # settled, not "position_vanished"
            assert account.balance().wallet == expected_wallet and account.positions() == []
        finally:
            await stack.executor.stop()
            await stack.stop()

        # the next restart reads the PnL from the trade now, not from the fills: still once
        again = _stack(session, pool, shared_data, tmp_path, closed, asyncio.Event())
        assert again.paper is not None and again.repo is not None
        await again.start()
        try:
            assert again.paper.account.positions() == [] and not again.executor.book
            assert again.paper.account.balance().wallet == expected_wallet
            assert len(await again.repo.trades()) == 1 and len(closed) == 1
        finally:
            await again.executor.stop()
            await again.stop()


async def test_a_partly_exited_position_comes_back_at_what_is_left_and_closes_once(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path) -> None:
    """A market exit filled 0.004 of 0.010 before the crash: the account holds 0.006, the wallet has the 0.004's
    +4 USDT; the take profit then closes the rest, and the trade (0.010) and the wallet agree, each PnL once."""
    t0 = int(time.time() * 1000) - 600_000
    closed: list[Trade] = []
    settled = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        stack = _stack(session, pool, shared_data, tmp_path, closed, settled)
        assert stack.repo is not None and stack.paper is not None
        repo = stack.repo
        await _crashed_after_exit_fills(repo, t0, Decimal("0.004"), client_order_id(SID, Leg.EXIT, 0), "exit")
        stack.paper.on_price("BTCUSDT", Decimal("37500.0"), t0 + 120_000)
        await stack.start()
        try:
            account = stack.paper.account
            [held] = account.positions()
            assert (held.symbol, held.side, held.quantity, held.entry_price) == (
                "BTCUSDT", "LONG", Decimal("0.006"), Decimal("37000.0"))
            assert account.balance().wallet == BALANCE + Decimal("4.0") - ENTRY_FEE - EXIT_FEE
            assert "BTCUSDT" in stack.executor.book and not closed
            assert {a.type for a in account.open_algo_orders("BTCUSDT")} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}

            stack.paper.on_price("BTCUSDT", Decimal("38000.0"), int(time.time() * 1000))  # the target fires
            await asyncio.wait_for(settled.wait(), 10)
            await stack.executor.idle()
            [trade] = closed
            assert (trade.signal_id, trade.quantity, trade.entry_price) == (SID, Decimal("0.010"), Decimal("37000.0"))
            assert account.positions() == [] and "BTCUSDT" not in stack.executor.book
            assert account.balance().wallet == BALANCE + trade.net_pnl  # entry, both exits: each counted once
            assert [t.net_pnl for t in await repo.trades()] == [trade.net_pnl]
            assert await repo.open_positions() == []
            assert [a["kind"] for a in await repo.open_alarms()] == []
        finally:
            await stack.executor.stop()
            await stack.stop()
