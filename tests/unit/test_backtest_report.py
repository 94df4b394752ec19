"""Report edge cases on real trades (a real 10-day backtest of four symbols): no trades, only winners, only losers,
one day; the trades table keeps money exact; the page escapes what it shows."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from smc_quant.backtest.data import load_folder
from smc_quant.backtest.engine import BacktestConfig, prepare, run_backtest
from smc_quant.backtest.market import market_rules
from smc_quant.backtest.report import DAY_MS, daily_returns, headline, run_report, trade_rows
from smc_quant.domain.trading import Trade

BAL = Decimal(10_000)


@pytest.fixture(scope="module")
def trades(shared_data: Path) -> list[Trade]:
    series = {s: v.slice(0, 10 * 1440) for s, v in load_folder(shared_data, ["SOLUSDT", "XRPUSDT", "DOGEUSDT",
                                                                             "LTCUSDT"]).items()}
    filters, brackets, _ = market_rules(series)
    result = asyncio.run(run_backtest(prepare(series), filters, brackets, BacktestConfig(mode="unfiltered")))
    assert len(result.trades) >= 5 and any(t.net_pnl > 0 for t in result.trades)
    assert any(t.net_pnl < 0 for t in result.trades)
    return result.trades


def test_no_trades_gives_zeros_and_nulls_not_errors() -> None:
    h = headline([], BAL, 0, 3 * DAY_MS)
    assert h["trades"] == 0 and h["hit_rate"] is None and h["expectancy"] is None and h["profit_factor"] is None
    assert h["net_pnl"] == "0" and h["max_drawdown"] == "0" and h["exposure"] == 0.0 and h["days"] == 3
    assert h["sharpe_daily"] is None and h["sortino_daily"] is None


def test_only_winners_only_losers_and_one_day(trades: list[Trade]) -> None:
    wins = [t for t in trades if t.net_pnl > 0]
    losses = [t for t in trades if t.net_pnl < 0]
    start, end = min(t.entry_time_ms for t in trades), max(t.exit_time_ms for t in trades) + 1
    hw = headline(wins, BAL, start, end)
    assert hw["hit_rate"] == 1.0 and hw["profit_factor"] is None and hw["max_drawdown"] == "0"
    assert hw["sortino_daily"] is None, "no losing day"
    hl = headline(losses, BAL, start, end)
    assert hl["hit_rate"] == 0.0 and hl["profit_factor"] == 0.0
    assert Decimal(hl["max_drawdown"]) == -sum((t.net_pnl for t in losses), Decimal(0)), "all losses, one fall"
    one = trades[:1]
    day0 = one[0].exit_time_ms - one[0].exit_time_ms % DAY_MS
    h1 = headline(one, BAL, day0, day0 + DAY_MS)
    assert h1["days"] == 1 and h1["sharpe_daily"] is None, "one day has no standard deviation"
    assert daily_returns(one, BAL, day0, day0 + DAY_MS) == [float(one[0].net_pnl / BAL)]


def test_trade_rows_are_exact_and_ordered(trades: list[Trade]) -> None:
    rows = run_report(list(reversed(trades)), BAL, 0, 10 * DAY_MS)["trades"]
    assert [r["exit_time_ms"] for r in rows] == sorted(r["exit_time_ms"] for r in rows)
    by_id = {t.signal_id: t for t in trades}
    for r in trade_rows(trades):
        t = by_id[r["signal_id"]]
        assert Decimal(r["net_pnl"]) == t.net_pnl and Decimal(r["fees"]) == t.fees
        assert Decimal(r["quantity"]) * Decimal(r["entry_price"]) == t.quantity * t.entry_price


def test_an_exit_at_the_windows_end_is_in_the_daily_returns(trades: list[Trade]) -> None:
    """A forced exit at the window's last minute closes at ``end_ms`` (a midnight): its PnL is in the net, so it
    is in the daily returns the Sharpe ratio is computed from too (it fell on a day past the last one)."""
    from dataclasses import replace

    t = trades[0]
    end = (t.exit_time_ms // DAY_MS + 1) * DAY_MS
    at_end = replace(t, exit_time_ms=end)
    r = daily_returns([at_end], BAL, end - 3 * DAY_MS, end)
    assert len(r) == 4 and r[-1] == pytest.approx(float(t.net_pnl / BAL)) and sum(r) != 0


def test_the_in_sample_note_counts_only_trades_inside_the_models_window(trades: list[Trade]) -> None:
    """The champion's training window against the backtest's: an overlap is named with the trades entered inside
    the window (not merely before its end); a model trained after the backtest's data (the live learner's, on this
    year's candles) makes the backtest out of sample."""
    from datetime import UTC, datetime

    from shards.backtest_cli import _in_sample_note
    from smc_quant.store.models import ModelRecord

    def model(start: int, end: int) -> ModelRecord:
        return ModelRecord(3, "champion", "smc-features/1", start, end, {}, {}, datetime.now(UTC), None, None, None)

    entries = sorted(t.entry_time_ms for t in trades)
    lo, hi = entries[0], entries[-1] + 1
    mid = entries[len(entries) // 2]
    note, fields = _in_sample_note(model(mid, hi + DAY_MS), lo, hi, trades)
    inside = sum(1 for t in trades if t.entry_time_ms >= mid)
    assert fields["in_sample"] and fields["ml_trades_in_sample"] == inside < len(trades)
    assert note.startswith("IN-SAMPLE") and f"{inside} of {len(trades)}" in note
    note, fields = _in_sample_note(model(hi + DAY_MS, hi + 9 * DAY_MS), lo, hi, trades)
    assert not fields["in_sample"] and fields["ml_trades_in_sample"] == 0 and note.startswith("out of sample")
