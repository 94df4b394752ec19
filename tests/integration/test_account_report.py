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
from shards.report_cli import ReportRequest, account_report
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.trading import ExitReason, PositionSide, Trade
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.notify import utc_minute
from smc_quant.settings import load_settings
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.trading import TradingRepository
from tests.integration.trading_kit import live_settings

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


async def store(dsn: str, trades: list[Trade], account: str = "paper") -> None:
    """The trades of ``account``, and (for paper) one funding payment of 0.27 USDT at the first trade's entry."""
    await apply_migrations(dsn)
    pool = await create_pool(dsn, max_size=2)
    try:
        repo = TradingRepository(pool)
        await repo.bind_account(account, trades[0].entry_time_ms)
        for t in trades:
            await repo.close_trade(t, features=tuple(0.0 for _ in FEATURE_SCHEMA.names),
                                   schema_version=FEATURE_SCHEMA.version, signal_time_ms=t.entry_time_ms,
                                   model_version=None)
        if account == "paper":
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
    assert text[3] == "per exit reason: " + groups(trades, lambda t: t.exit_reason.value)
    assert text[4] == "per symbol: " + groups(trades, lambda t: t.symbol)
    assert text[2] == f"funding paid 0.27 USDT · net after funding {net - D('0.27')} USDT"
    assert text[-2] == ("note: funding paid over the window: 0.27 USDT, from the paper account's stored payments; "
                        "not in the trades' net PnL nor in the equity curve")

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


async def test_a_signed_accounts_report_takes_its_funding_from_the_exchanges_income_history(
        shared_data: Path, pg_dsn: str, tmp_path: Path) -> None:
    """A signed account's funding is not in the database: the report reads ``GET /fapi/v1/income`` (here the
    emulator's, signed with its keys) and counts the payments inside the window only. Without keys it says the
    funding is unknown instead of showing 0."""
    trades = real_trades(shared_data)
    await store(pg_dsn, trades, account="replay")
    net = sum((t.net_pnl for t in trades), D(0))
    start_ms = trades[0].entry_time_ms
    async with Emulator(EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=("BTCUSDT",),
                                       start_time_ms=start_ms - start_ms % 60_000, max_minutes=10)) as em:
        first = em.market.candle("BTCUSDT", start_ms - start_ms % 60_000)
        assert first is not None
        account = em.account
        account.on_price("BTCUSDT", D(repr(first.close)), start_ms)
        account.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=D("0.010"), time_ms=start_ms)
        inside = sorted(t.exit_time_ms for t in trades)[2]
        paid, _ = account.settle_funding("BTCUSDT", D("0.0001"), inside)
        later, _ = account.settle_funding("BTCUSDT", D("0.0001"), max(t.exit_time_ms for t in trades) + 3_600_000)
        assert paid > 0 and later > 0
        pool = await create_pool(pg_dsn, max_size=2)
        try:
            doc = await account_report(pool, live_settings(em, tmp_path),
                                       ReportRequest(tmp_path / "signed", balance=D(10_000)))
            assert doc is not None
            head = doc["runs"]["replay"]["headline"]
            assert (D(head["funding_paid"]), D(head["net_after_funding"])) == (paid, net - paid)
            assert any("from the exchange's income history" in n for n in doc["notes"])

            doc = await account_report(pool, load_settings(state_dir=tmp_path),
                                       ReportRequest(tmp_path / "unsigned", balance=D(10_000)))
            assert doc is not None and doc["runs"]["replay"]["headline"]["funding_paid"] is None
            assert any("unknown (no API keys" in n for n in doc["notes"])
        finally:
            await pool.close()
