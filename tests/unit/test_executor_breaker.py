"""The daily loss breaker in the executor's exit loop sees the open positions at today's marks.

The book keeps each position's entry price as its ``mark_price``; the exit loop (``Executor.check_exits``, every
15 s, and the backtest's minute loop) used to hand those to ``RiskManager.due_exits``, whose breaker then summed an
unrealised PnL of zero: with no signal arriving (none scored, trading disabled) an open loss past the daily limit
closed nothing until the stops hit. Real ETHUSDT candles, the backtest's paper stack with the real filters."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import numpy as np

from smc_quant.backtest.data import load_folder
from smc_quant.backtest.market import market_rules
from smc_quant.backtest.stack import BacktestClock, build_stack
from smc_quant.domain.trading import ExitReason, Signal
from smc_quant.settings import TradingSettings

MINUTE_MS = 60_000
STOP_PCT, TARGET_PCT, DROP = 2.0, 3.0, 0.012


def _falling_window(high: np.ndarray, low: np.ndarray, close: np.ndarray, start: int) -> tuple[int, int]:
    """(entry bar, later bar) of real candles: within an hour of the entry the close falls ≥ 1.2 % below the
    entry's close while no bar reaches the long's 2 % stop or 3 % target."""
    for i in range(start, len(close) - 61):
        c0 = close[i]
        for k in range(i + 1, i + 61):
            if low[k] <= c0 * (1 - STOP_PCT / 100) or high[k] >= c0 * (1 + TARGET_PCT / 100):
                break
            if close[k] <= c0 * (1 - DROP):
                return i, k
    raise AssertionError("precondition: a 1.2 % fall without a stop in the ETHUSDT file")


async def test_an_open_loss_past_the_daily_limit_closes_the_position_in_the_exit_loop(shared_data: Path) -> None:
    series = load_folder(shared_data, ["ETHUSDT"])
    eth = series["ETHUSDT"]
    filters, brackets, _ = market_rules(series)
    first_full_hour = int(np.argmax(eth.open_time % 86_400_000 >= 3_600_000))
    i, k = _falling_window(eth.high, eth.low, eth.close, first_full_hour)
    t0 = int(eth.open_time[i])
    clock = BacktestClock(t0 + MINUTE_MS)
    stack = build_stack(TradingSettings(daily_loss_limit_pct=0.5), filters, brackets, clock)
    ex, broker = stack.executor, stack.broker

    def bar(j: int) -> None:
        broker.on_bar("ETHUSDT", eth.open[j], eth.high[j], eth.low[j], eth.close[j], int(eth.open_time[j]))
        ex.on_price("ETHUSDT", Decimal(repr(float(eth.close[j]))))

    bar(i)
    await ex.start()
    try:
        entry = Decimal(repr(float(eth.close[i])))
        await ex.handle(Signal(f"ETHUSDT:LONG:{t0}", "ETHUSDT", "LONG", t0, entry, 0.99, STOP_PCT, TARGET_PCT, "test"))
        assert "ETHUSDT" in ex.book, "precondition: the long was entered"
        assert await ex.check_exits() == 0 and not ex.risk.breaker_tripped  # at the entry: nothing lost yet

        for j in range(i + 1, k + 1):
            clock.now_ms = int(eth.open_time[j]) + MINUTE_MS
            bar(j)
        snap = ex.snapshot()
        limit = snap.wallet_balance * Decimal("0.005")
        assert -snap.unrealized_pnl >= limit, "precondition: the open loss is past the daily limit"
        assert "ETHUSDT" in ex.book and ex.book["ETHUSDT"].status == "open", "precondition: no stop or target hit"

        assert await ex.check_exits() == 1
        assert ex.risk.breaker_tripped
        await asyncio.sleep(0)  # one loop turn: the account's events (call_soon) reach the executor, as in the backtest
        await ex.idle()
        [trade] = ex.trades
        assert trade.exit_reason == ExitReason.BREAKER and "ETHUSDT" not in ex.book
    finally:
        await ex.stop()
