"""``smc-quant report``: the account's closed trades in PostgreSQL, as figures (text) and as the backtest's
JSON + HTML page with equity and drawdown curves. The trades are priced from real 2023 candles (entry and exit at
real closes an hour apart); every figure checked here is recomputed by hand from them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from shards.cli import main
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.trading import ExitReason, PositionSide, Trade
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.notify import utc_minute
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.trading import TradingRepository

pytestmark = pytest.mark.integration
D = Decimal
TAKER = D("0.0005")
REASONS = (ExitReason.TAKE_PROFIT, ExitReason.STOP_LOSS, ExitReason.TIME, ExitReason.TAKE_PROFIT,
           ExitReason.DELISTING, ExitReason.STOP_LOSS)


def groups(trades: list[Trade], key: Callable[[Trade], str]) -> str:
    """``name count (net)`` per group, sorted by name, as the command prints them."""
    by: dict[str, list[Trade]] = {}
    for t in trades:
        by.setdefault(key(t), []).append(t)
    return " · ".join(f"{k} {len(v)} ({format(sum((t.net_pnl for t in v), D(0)), 'f')})" for k, v in sorted(by.items()))


def real_trades(shared_data: Path) -> list[Trade]:
    """Six round trips on BTCUSDT and ETHUSDT, a day apart per symbol, entered and left at real 1m closes 60 bars
    apart: the first three on the side the market then took, the last three against it (winners and losers)."""
    out = []
    for k, (symbol, qty) in enumerate([("BTCUSDT", D("0.010")), ("ETHUSDT", D("0.20"))] * 3):
        series = read_klines(shared_data / KLINES_2023_1M / f"{symbol}.csv.gz")
        i = 10_000 + k * 1_440
        entry, exit_ = D(repr(float(series.close[i]))), D(repr(float(series.close[i + 60])))
        fees = (entry + exit_) * qty * TAKER
        up = exit_ > entry
        side: PositionSide = "LONG" if up == (k < 3) else "SHORT"
        out.append(Trade(f"{symbol}:{k}", symbol, side, qty, entry, exit_,
                         int(series.open_time[i]) + 60_000, int(series.open_time[i + 60]) + 60_000, fees,
                         REASONS[k], 0.7))
    return out


async def store(dsn: str, trades: list[Trade]) -> None:
    await apply_migrations(dsn)
    pool = await create_pool(dsn, max_size=2)
    try:
        repo = TradingRepository(pool)
        await repo.bind_account("paper", trades[0].entry_time_ms)
        for t in trades:
            await repo.close_trade(t, features=tuple(0.0 for _ in FEATURE_SCHEMA.names),
                                   schema_version=FEATURE_SCHEMA.version, signal_time_ms=t.entry_time_ms,
                                   model_version=None)
        await repo.record_funding("BTCUSDT", trades[0].entry_time_ms, D("0.0001"), D("0.27"))
    finally:
        await pool.close()


def test_the_report_command_prints_and_writes_the_accounts_figures(
        shared_data: Path, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setattr("shards.cli.configure_logging", lambda *_a, **_k: None)
    assert main(["report", "--out", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.strip() == "account unbound: no closed trades"

    trades = real_trades(shared_data)
    asyncio.run(store(pg_dsn, trades))
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--balance", "5000"]) == 0
    text = capsys.readouterr().out.splitlines()
    net = sum((t.net_pnl for t in trades), D(0))
    wins = sum(1 for t in trades if t.net_pnl > 0)
    assert 0 < wins < 6, "precondition: winners and losers"
    assert text[0].startswith("account paper · 2023-") and text[0].endswith(
        f"· 6 trades · hit rate {wins / 6 * 100:.1f} %")
    assert text[1].startswith(f"net {net} USDT ({float(net / 5000 * 100):+.2f} % of 5000)")
    assert text[2] == "per exit reason: " + groups(trades, lambda t: t.exit_reason.value)
    assert text[3] == "per symbol: " + groups(trades, lambda t: t.symbol)
    assert text[-2].startswith("note: paper funding paid over the account's life: 0.27 USDT")

    assert main(["status"]) == 0  # the one-line glance at the same trades
    last = max(trades, key=lambda t: t.exit_time_ms)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"closed trades: 6 (account paper) · net {net:+.2f} USDT · last {last.symbol} {last.side} "
        f"{last.net_pnl:+.2f} USDT ({last.exit_reason.value}) {utc_minute(last.exit_time_ms)} · smc-quant report "
        "for more")

    doc = json.loads((out / "report.json").read_text())
    run = doc["runs"]["paper"]
    assert run["headline"]["trades"] == 6 and D(run["headline"]["net_pnl"]) == net
    assert D(run["headline"]["fees"]) == sum((t.fees for t in trades), D(0))
    assert {r["signal_id"] for r in run["trades"]} == {t.signal_id for t in trades}
    page = (out / "report.html").read_text()
    assert "<h1>Account paper</h1>" in page and page.count("data:image/png;base64,") == 2

    # --since keeps the trades closed on or after that UTC day
    day = dt.datetime.fromtimestamp(sorted(t.exit_time_ms for t in trades)[3] / 1000, dt.UTC).date()
    later = sum(1 for t in trades if t.exit_time_ms >= dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                .timestamp() * 1000)
    assert 0 < later < 6, "precondition: the date splits the trades"
    assert main(["report", "--out", str(out), "--since", day.isoformat()]) == 0
    assert f" · {later} trades · " in capsys.readouterr().out.splitlines()[0]
    assert json.loads((out / "report.json").read_text())["runs"]["paper"]["headline"]["trades"] == later

    with pytest.raises(SystemExit):
        main(["report", "--balance", "-1"])
    assert "must be a positive amount of USDT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--since", "last tuesday"])
    assert "bad time 'last tuesday': use YYYY-MM-DD[THH:MM] (UTC) or epoch ms" in capsys.readouterr().err
