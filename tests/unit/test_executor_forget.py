"""The order manager forgets a signal's retry counters once its trade is over: they used to be kept for as long as
the process ran, one more set per trade. Real ETHUSDT candles, the backtest's paper stack with the real filters."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from smc_quant.backtest.data import load_folder
from smc_quant.backtest.market import market_rules
from smc_quant.backtest.stack import BacktestClock, build_stack
from smc_quant.domain.trading import ExitReason, Signal
from smc_quant.settings import TradingSettings

MINUTE_MS = 60_000


async def test_a_finished_trade_leaves_no_retry_counters(shared_data: Path) -> None:
    eth = load_folder(shared_data, ["ETHUSDT"])["ETHUSDT"]
    filters, brackets, _ = market_rules({"ETHUSDT": eth})
    i = 120
    t0 = int(eth.open_time[i])
    clock = BacktestClock(t0 + MINUTE_MS)
    stack = build_stack(TradingSettings(), filters, brackets, clock)
    ex, broker = stack.executor, stack.broker
    broker.on_bar("ETHUSDT", eth.open[i], eth.high[i], eth.low[i], eth.close[i], t0)
    ex.on_price("ETHUSDT", Decimal(repr(float(eth.close[i]))))
    await ex.start()
    try:
        entry = Decimal(repr(float(eth.close[i])))
        await ex.handle(Signal(f"ETHUSDT:LONG:{t0}", "ETHUSDT", "LONG", t0, entry, 0.99, 2.0, 3.0, "test"))
        assert "ETHUSDT" in ex.book, "precondition: the long was entered"
        assert ex.manager.tracked_signals == 1  # the open trade's counters (entry, stop, target)

        assert await ex.close("ETHUSDT", ExitReason.MANUAL)
        await asyncio.sleep(0)  # one loop turn: the account's events (call_soon) reach the executor
        await ex.idle()
        [trade] = ex.trades
        assert trade.exit_reason == ExitReason.MANUAL and "ETHUSDT" not in ex.book
        assert ex.manager.tracked_signals == 0
    finally:
        await ex.stop()
