"""Acceptance: a walk-forward backtest of real candles, and every headline figure of its report recomputed
independently — in plain Python, from the trades table of report.json only — plus the HTML's embedded plots.

Real data: the first 12 days of six 2023 USDT-M symbols; the learner's models (4-day rolling history) trade out
of sample; the two baselines run over the same window.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shards.backtest_cli import backtest_scorecard, run_backtests
from smc_quant.backtest.data import load_folder
from smc_quant.backtest.report import write_report
from smc_quant.settings import load_settings

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT")
DAY = 86_400_000


def _recompute(rows: list[dict[str, Any]], balance: Decimal, start: int, end: int) -> dict[str, Any]:
    """The headline figures by their textbook definitions, from the rows alone."""
    nets = []
    for r in rows:
        sign = 1 if r["side"] == "LONG" else -1
        gross = (Decimal(r["exit_price"]) - Decimal(r["entry_price"])) * Decimal(r["quantity"]) * sign
        net = gross - Decimal(r["fees"])
        assert Decimal(r["gross_pnl"]) == gross and Decimal(r["net_pnl"]) == net, r["signal_id"]
        nets.append(net)
    n = len(nets)
    wins = [x for x in nets if x > 0]
    losses = [x for x in nets if x < 0]
    equity, peak, dd, dd_pct = balance, balance, Decimal(0), 0.0
    for x in nets:
        equity += x
        if equity > peak:
            peak = equity
        dd = max(dd, peak - equity)
        dd_pct = max(dd_pct, float((peak - equity) / peak) * 100)
    days = list(range(start // DAY, (end - 1) // DAY + 1))
    per_day = {d: sum((x for x, r in zip(nets, rows, strict=True) if r["exit_time_ms"] // DAY == d), Decimal(0))
               for d in days}
    eq, rets = balance, []
    for d in days:
        rets.append(float(per_day[d] / eq))
        eq += per_day[d]
    mean = sum(rets) / len(rets)
    var = sum((x - mean) ** 2 for x in rets) / (len(rets) - 1)
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in rets) / len(rets))
    # exposure: minutes covered by at least one open position, by brute force over a set of covered spans
    spans = sorted((r["entry_time_ms"], r["exit_time_ms"]) for r in rows)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    notional_pct = [float(nets[i] / (Decimal(r["entry_price"]) * Decimal(r["quantity"])) * 100)
                    for i, r in enumerate(rows)]
    return {
        "trades": n, "wins": len(wins), "hit_rate": len(wins) / n if n else None,
        "net_pnl": sum(nets, Decimal(0)), "fees": sum((Decimal(r["fees"]) for r in rows), Decimal(0)),
        "expectancy": sum(nets, Decimal(0)) / n if n else None,
        "expectancy_pct": sum(notional_pct) / n if n else None,
        "profit_factor": float(sum(wins, Decimal(0)) / -sum(losses, Decimal(0))) if losses else None,
        "max_drawdown": dd, "max_drawdown_pct": dd_pct,
        "sharpe_daily": mean / math.sqrt(var) * math.sqrt(365) if var > 0 else None,
        "sortino_daily": mean / down * math.sqrt(365) if down > 0 else None,
        "exposure": sum(e - s for s, e in merged) / (end - start),
        "return_pct": float(sum(nets, Decimal(0)) / balance * 100), "days": len(days),
    }


def _same(got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is want
    if isinstance(want, Decimal):
        return Decimal(str(got)) == want
    return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)


async def test_walk_forward_report_figures_equal_a_recomputation_from_the_trades_table(
        shared_data: Path, tmp_path: Path) -> None:
    series = {s: v.slice(0, 12 * 1440) for s, v in load_folder(shared_data, SYMBOLS).items()}
    settings = load_settings(database_url=None, redis_url=None, learner={"min_history_candles": 1440})
    said: list[str] = []
    doc = await run_backtests(series, model="walk-forward", settings=settings, start_ms=None, end_ms=None,
                              say=said.append, history_days=4.0, show_progress=False)
    json_path, html_path = write_report(tmp_path / "out", doc)
    stored = json.loads(json_path.read_text())
    assert set(stored["runs"]) == {"ml_filtered", "unfiltered", "random"}
    assert stored["learner_rounds"] and stored["learner_rounds"][0]["trigger"] == "cold_start"
    assert stored["learner_rounds"][0]["champion_edge"] is None  # no champion yet to stand the test
    assert any(" with a champion that showed no edge on the latest window" in note for note in stored["notes"])
    balance = Decimal(stored["balance"])
    start, end = stored["start_ms"], stored["end_ms"]
    first = min(int(s.open_time[0]) for s in series.values())
    assert start == first + 5 * DAY, "traded after 1 day of warm-up + 4 days of history"
    assert end - start >= 6 * DAY
    assert any("after 1,440 warm-up candles and 4.0 days of history" in note for note in stored["notes"])
    assert stored["runs"]["unfiltered"]["headline"]["trades"] >= 5, "precondition: the rules traded"
    for name, run in stored["runs"].items():
        rows = run["trades"]
        assert all(start <= r["entry_time_ms"] <= r["exit_time_ms"] <= end for r in rows), name
        want = _recompute(rows, balance, start, end)
        for key, value in want.items():
            assert _same(run["headline"][key], value), (name, key, run["headline"][key], value)
        assert set(run["headline"]) == set(want), "every headline figure is checked"
        for sym, fig in run["by_symbol"].items():
            mine = [Decimal(r["net_pnl"]) for r in rows if r["symbol"] == sym]
            assert fig["trades"] == len(mine) and Decimal(fig["net_pnl"]) == sum(mine, Decimal(0))
            assert fig["hit_rate"] == sum(1 for x in mine if x > 0) / len(mine)
        for why, fig in run["by_exit_reason"].items():
            mine = [Decimal(r["net_pnl"]) for r in rows if r["exit_reason"] == why]
            assert fig["trades"] == len(mine) and Decimal(fig["net_pnl"]) == sum(mine, Decimal(0))
        assert sum(f["trades"] for f in run["by_symbol"].values()) == len(rows)
        marked = stored["marked"][name]  # the equity marked to market every minute (the engine's, not the trades')
        assert Decimal(marked["max_drawdown_marked"]) >= 0 and marked["max_drawdown_marked_pct"] >= 0

    page = html_path.read_text()
    images = re.findall(r'<img alt="([a-z ]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert {alt for alt, _ in images} == {"equity curve", "drawdown"}
    for _, data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, "a real, non-trivial PNG"
    for name in ("ml_filtered", "unfiltered", "random"):
        assert name in page
    # why the runs' signals were not traded, per run, as the JSON has it
    reasons = {r for counts in stored["skip_reasons"].values() for r in counts}
    assert reasons, "precondition: some signals were skipped"
    names = list(stored["runs"])
    for reason in reasons:
        row = "".join(f"<td>{stored['skip_reasons'][n].get(reason, 0)}</td>" for n in names)
        assert f"<tr><td>skipped: {html.escape(reason)}</td>{row}</tr>" in page, reason
    assert "<tr><td>signals</td>" + "".join(f"<td>{stored['signals'][n]}</td>" for n in names) in page
    assert "<tr><td>max_drawdown_marked</td>" + "".join(
        f"<td>{stored['marked'][n]['max_drawdown_marked']}</td>" for n in names) in page
    card = backtest_scorecard(stored)
    assert "trades" in card and "max_drawdown_marked_pct" in card
