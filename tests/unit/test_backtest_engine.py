"""The backtest engine on real candles: its event-skipping minute loop emits exactly the signals of a scalper fed
every minute's full batch; runs are deterministic; the random baseline is seeded and sized like the rules; the
bar path fills stops at their trigger inside a bar and at the open through a gap; trades agree with the orders."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from smc_quant.backtest.data import load_folder
from smc_quant.backtest.engine import BacktestConfig, BacktestResult, Prepared, prepare, run_backtest
from smc_quant.backtest.market import market_rules
from smc_quant.backtest.stack import BacktestClock, BarBroker
from smc_quant.domain.trading import ExitReason
from smc_quant.orders.broker import AlgoRequest, OrderRequest, OrderUpdate
from smc_quant.sim.account import SimAccount, SimConfig
from smc_quant.sim.ledger import to_usdt
from smc_quant.strategy import ICTScalper, ScalperConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "LTCUSDT")
DAYS = 14


@pytest.fixture(scope="module")
def prepared(shared_data: Path) -> Prepared:
    return prepare({s: v.slice(0, DAYS * 1440) for s, v in load_folder(shared_data, SYMBOLS).items()})


async def _run(prepared: Prepared, **cfg: object) -> BacktestResult:
    filters, brackets, _ = market_rules(prepared.series)
    return await run_backtest(prepared, filters, brackets, BacktestConfig(**cfg))  # type: ignore[arg-type]


async def test_event_skipping_loop_emits_the_signals_of_a_scalper_fed_every_minute(prepared: Prepared) -> None:
    result = await _run(prepared, mode="unfiltered")
    assert len(result.signals) >= 10, "precondition: the rules fire on these 14 days"
    scalper = ICTScalper(ScalperConfig())
    minutes = np.unique(np.concatenate([s.open_time for s in prepared.series.values()]))
    expected = []
    for t in minutes.tolist():  # the live shape: every symbol's row of every minute, scored and checked
        rows = [(s, int(np.searchsorted(v.open_time, t))) for s, v in prepared.series.items()]
        rows = [(s, r) for s, r in rows if r < len(prepared.series[s]) and prepared.series[s].open_time[r] == t]
        x = np.stack([prepared.features[s][r] for s, r in rows])
        closes = [Decimal(repr(float(prepared.series[s].close[r]))) for s, r in rows]
        expected += scalper.on_batch([s for s, _ in rows], np.full(len(rows), t), x, np.full(len(rows), 0.75),
                                     close_prices=closes, now_ms=t + 60_000)
    got = [(s.signal_id, s.side, s.price, s.stop_pct, s.target_pct, s.open_time) for s in result.signals]
    want = [(s.signal_id, s.side, s.price, s.stop_pct, s.target_pct, s.open_time) for s in expected]
    assert sorted(got) == sorted(want)


async def test_runs_are_deterministic_and_the_random_baseline_is_seeded(prepared: Prepared) -> None:
    a, b = await _run(prepared, mode="unfiltered"), await _run(prepared, mode="unfiltered")
    assert a.trades == b.trades and a.orders == b.orders and a.final_wallet == b.final_wallet
    r7, r7b, r8 = (await _run(prepared, mode="random", seed=7), await _run(prepared, mode="random", seed=7),
                   await _run(prepared, mode="random", seed=8))
    assert r7.trades == r7b.trades and r7.orders == r7b.orders
    assert [s.signal_id for s in r7.signals] != [s.signal_id for s in r8.signals]
    assert len(r7.signals) == len(a.signals), "as many random entries as distinct setups"
    assert {s.symbol for s in r7.signals} <= set(SYMBOLS)
    assert all(s.confidence == 0.75 and s.target_pct == pytest.approx(1.5 * s.stop_pct) for s in r7.signals)
    assert all(0.3 <= s.stop_pct <= 2.0 for s in r7.signals), "exits sized by the rules' ATR formula and clamps"


async def test_trades_agree_with_their_orders_and_the_candles(prepared: Prepared) -> None:
    result = await _run(prepared, mode="unfiltered")
    assert len(result.trades) >= 10
    by_signal = {s.signal_id: s for s in result.signals}
    orders = {o.client_id: o for o in result.orders}
    for t in result.trades:
        sig = by_signal[t.signal_id]
        assert t.entry_time_ms == sig.open_time + 60_000, "entered at the signal candle's close"
        slip = sig.price * Decimal("0.0001")
        assert abs(t.entry_price - sig.price) <= slip + Decimal("0.01") * sig.price / 100
        assert t.exit_time_ms - t.entry_time_ms <= 2 * 3_600_000 + 60_000, "the 2-hour limit holds"
        s = prepared.series[t.symbol]
        i = int(np.searchsorted(s.open_time, t.exit_time_ms - t.exit_time_ms % 60_000))
        hi, lo = Decimal(repr(float(s.high[i]))), Decimal(repr(float(s.low[i])))
        assert lo * Decimal("0.999") <= t.exit_price <= hi * Decimal("1.001"), "exit inside its bar (+ slippage)"
        legs = [o for o in orders.values() if o.symbol == t.symbol and o.type in ("STOP_MARKET",
                                                                                 "TAKE_PROFIT_MARKET")]
        assert legs, "every position was protected"
        if t.exit_reason is ExitReason.TAKE_PROFIT:
            assert t.gross_pnl > 0
        if t.exit_reason is ExitReason.STOP_LOSS:
            assert t.gross_pnl < 0
    fees = sum((t.fees for t in result.trades), Decimal(0))
    assert result.final_wallet == result.balance + sum((t.gross_pnl for t in result.trades), Decimal(0)) - fees


async def test_the_equity_is_marked_to_market_every_minute_and_gives_the_marked_drawdown(prepared: Prepared) -> None:
    """``BacktestResult.equity`` is the account marked at every minute's close: while a lone position is open it
    moves with the candle closes (wallet + qty × (close − entry) for a long), flat it is the wallet. The report's
    ``max_drawdown_marked`` is taken from it (the trades table sees only realised equity)."""
    from smc_quant.backtest.report import build_document

    result = await _run(prepared, mode="unfiltered")
    marked = dict(result.equity)
    assert result.equity and list(marked) == sorted(marked)
    lone = [t for t in result.trades if not any(
        o is not t and o.entry_time_ms < t.exit_time_ms and t.entry_time_ms < o.exit_time_ms for o in result.trades)]
    checked = 0
    for t in lone:
        s = prepared.series[t.symbol]
        sign = 1 if t.side == "LONG" else -1
        inside = [(ts, eq) for ts, eq in result.equity if t.entry_time_ms <= ts < t.exit_time_ms]
        if t.exit_time_ms - t.entry_time_ms >= 5 * 60_000:
            assert len(inside) >= 2, f"{t.signal_id}: the equity moves with the marks while it is open"
        wallets = set()
        for ts, eq in inside:
            close = Decimal(repr(float(s.close[int(np.searchsorted(s.open_time, ts - 60_000))])))
            wallets.add(eq - sign * t.quantity * (close - t.entry_price))
        assert len(wallets) <= 1, (t.signal_id, wallets)  # the same wallet all along: only the mark moved
        checked += len(inside)
    assert checked >= 20, "precondition: lone positions held over several minutes"
    if not result.open_positions:
        assert result.equity[-1][1] == result.final_wallet
    head = build_document("t", SYMBOLS, {"unfiltered": result}, [])["marked"]["unfiltered"]
    worst, peak = Decimal(0), result.balance
    for _, eq in result.equity:
        peak = max(peak, eq)
        worst = max(worst, peak - eq)
    assert Decimal(head["max_drawdown_marked"]) == worst > 0


async def test_bar_path_fills_a_stop_at_its_trigger_inside_a_bar_and_at_the_open_through_a_gap(
        prepared: Prepared) -> None:
    filters, brackets, _ = market_rules(prepared.series)
    clock = BacktestClock(1_000_000)
    fills: list[OrderUpdate] = []

    async def position_with_stop(broker: BarBroker) -> None:
        broker.on_bar("BTCUSDT", 30000.0, 30000.0, 30000.0, 30000.0, 0)
        await broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", Decimal("0.01"), "entry"))
        await broker.place_algo(AlgoRequest("BTCUSDT", "SELL", "STOP_MARKET", Decimal("29900"), "stop",
                                            close_position=True))

    inside = BarBroker(SimAccount(filters, brackets, SimConfig()), clock)
    inside.subscribe(lambda e: fills.append(e) if isinstance(e, OrderUpdate) and e.execution == "TRADE" else None)
    await position_with_stop(inside)
    inside.on_bar("BTCUSDT", 29990.0, 30010.0, 29850.0, 29950.0, 60_000)  # opens above, trades through 29 900
    gap = BarBroker(SimAccount(filters, brackets, SimConfig()), clock)
    gap.subscribe(lambda e: fills.append(e) if isinstance(e, OrderUpdate) and e.execution == "TRADE" else None)
    await position_with_stop(gap)
    gap.on_bar("BTCUSDT", 29800.0, 29820.0, 29700.0, 29750.0, 60_000)  # opens below the stop
    await _turn()
    stops = [f for f in fills if f.client_order_id == "stop"]
    assert [f.last_price for f in stops] == [Decimal("29897.0"), Decimal("29797.0")], \
        "trigger − 1 bp inside the bar; the open − 1 bp through the gap (rounded down to the tick)"
    assert [f.trade_time_ms for f in stops] == [60_000 + 40_000, 60_000], "the low comes last in the inside bar"


@pytest.mark.parametrize(("side", "stop", "target"), [("LONG", "29900", "30100"), ("SHORT", "30100", "29900")])
async def test_a_bar_reaching_stop_and_target_equally_far_from_its_open_fills_the_stop(
        prepared: Prepared, side: str, stop: str, target: str) -> None:
    """Both protective orders inside one bar whose extremes are 150 from its open: the side against the
    position comes first, so the stop fills, for a long as for a short (the high used to come first on a tie:
    the long took its target)."""
    filters, brackets, _ = market_rules(prepared.series)
    broker = BarBroker(SimAccount(filters, brackets, SimConfig()), BacktestClock(1_000_000))
    fills: list[OrderUpdate] = []
    broker.subscribe(lambda e: fills.append(e) if isinstance(e, OrderUpdate) and e.execution == "TRADE" else None)
    broker.on_bar("BTCUSDT", 30000.0, 30000.0, 30000.0, 30000.0, 0)
    entry, exit_side = ("BUY", "SELL") if side == "LONG" else ("SELL", "BUY")
    await broker.place_order(OrderRequest("BTCUSDT", entry, "MARKET", Decimal("0.01"), "entry"))
    await broker.place_algo(AlgoRequest("BTCUSDT", exit_side, "STOP_MARKET", Decimal(stop), "stop",
                                        close_position=True))
    await broker.place_algo(AlgoRequest("BTCUSDT", exit_side, "TAKE_PROFIT_MARKET", Decimal(target), "target",
                                        close_position=True))
    broker.on_bar("BTCUSDT", 30000.0, 30150.0, 29850.0, 30000.0, 60_000)
    await _turn()
    assert [f.client_order_id for f in fills] == ["entry", "stop"]


async def _turn() -> None:
    """One loop turn: the paper account's events are delivered with ``call_soon``."""
    await asyncio.sleep(0)


async def test_an_assumed_funding_rate_is_charged_to_held_positions_and_seen_by_the_guard(prepared: Prepared) -> None:
    """At 0.01 % every 8 h (under the guard's 0.05 %) the same trades happen (sizes follow the slightly lower
    wallet), funding is exactly what the positions held at each funding time owe at that bar's close (longs
    pay, shorts receive — once, a later trade on the symbol was also charged a funding time passed with nothing
    held), and the wallet is the trades' PnL less that; at 0.1 % the guard refuses the longs that would pay
    inside their hold, and only those."""
    plain = await _run(prepared, mode="unfiltered")
    base = await _run(prepared, mode="unfiltered", funding_rate=Decimal("0.0001"))
    key = [(t.signal_id, t.entry_time_ms, t.exit_time_ms, t.exit_reason) for t in base.trades]
    assert key == [(t.signal_id, t.entry_time_ms, t.exit_time_ms, t.exit_reason) for t in plain.trades]
    assert "funding" not in base.skip_reasons and not base.open_positions
    net = sum((t.net_pnl for t in base.trades), Decimal(0))
    eight = 8 * 3_600_000
    owed = Decimal(0)
    for trade in base.trades:  # held at F: entered before it, still open when the bar ending at F closed
        s = prepared.series[trade.symbol]
        for f in range((trade.entry_time_ms // eight + 1) * eight, trade.exit_time_ms + 1, eight):
            i = int(np.searchsorted(s.open_time, f - 60_000))
            assert int(s.open_time[i]) == f - 60_000
            signed = trade.quantity if trade.side == "LONG" else -trade.quantity
            owed += to_usdt(signed * Decimal(repr(float(s.close[i]))) * Decimal("0.0001"))
    assert owed != 0 and base.funding_paid == owed
    assert base.final_wallet == base.balance + net - base.funding_paid
    crossing = [t for t in plain.trades if t.exit_time_ms // eight > t.entry_time_ms // eight]
    assert crossing, "precondition: some trades are held across a funding time"
    steep = await _run(prepared, mode="unfiltered", funding_rate=Decimal("0.001"))
    refused = steep.skip_reasons.get("funding", 0)
    assert refused > 0
    held = {s.signal_id for s in steep.signals} - {t.signal_id for t in steep.trades}
    for sig in steep.signals:
        due = (sig.open_time + 60_000) // eight * eight + eight
        if sig.signal_id in {t.signal_id for t in steep.trades}:
            assert sig.side == "SHORT" or due > sig.open_time + 60_000 + 2 * 3_600_000, sig
    assert len(held) >= refused


def test_a_symbol_the_exchange_info_lacks_trades_under_filters_fitted_to_its_price(shared_data: Path) -> None:
    """MATICUSDT (renamed since the 2024 exchangeInfo) borrows BTCUSDT's filters fitted to its own candles: its tick
    and quantity step from their decimals, quantity limits for its price — and the risk manager sizes an entry
    on it. It used to keep BTC's quantities (market max 120, at 0.70 USDT 84 USDT, under the 100 USDT minimum
    notional): every MATIC signal was refused ``below_min_notional``."""
    from smc_quant.domain.trading import AccountSnapshot, Signal
    from smc_quant.risk import RiskConfig, RiskManager

    series = load_folder(shared_data, ["MATICUSDT"])
    filters, brackets, notes = market_rules(series)
    f, close = filters["MATICUSDT"], float(np.median(series["MATICUSDT"].close))
    assert f.market_max_qty * Decimal(repr(close)) >= 100 * f.min_notional
    assert f.market_step_size == f.market_min_qty and f.market_step_size * Decimal(repr(close)) < 10
    assert any(n.startswith("MATICUSDT: not in the 2024 exchangeInfo") for n in notes)
    price = Decimal(repr(float(series["MATICUSDT"].close[-1])))
    d = RiskManager(RiskConfig(), filters, brackets).evaluate(
        Signal("MATICUSDT:LONG:0", "MATICUSDT", "LONG", 0, price, 0.75, 1.0, 1.5, "test"),
        AccountSnapshot(Decimal(10_000), Decimal(0), Decimal(10_000)), price, 0)
    assert d.action == "open" and d.quantity * price >= f.min_notional
