"""``smc-quant backtest`` end to end: the champion from PostgreSQL (``DATABASE_URL``), real candles, a window,
the report folder and the printed scorecard; a missing champion and an empty data folder are one-line errors."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from shards.cli import main
from smc_quant.datasets import load_klines
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import build_dataset
from smc_quant.model.trainer import train
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry

pytestmark = pytest.mark.integration


async def _register(dsn: str, promote: bool) -> int:
    await apply_migrations(dsn)
    klines = load_klines()
    series = [klines["BTCUSDT"].slice(0, 10 * 1440), klines["ETHUSDT"].slice(0, 10 * 1440)]
    ds = await asyncio.to_thread(build_dataset, series, BarrierSpec(), 5, "trend_1m", None, "broad")
    model = await asyncio.to_thread(train, ds.x, ds.win)
    pool = await create_pool(dsn)
    try:
        registry = ModelRegistry(pool)
        record = await registry.register(model, train_start=int(ds.start.min()), train_end=int(ds.start.max()),
                                         params={}, metrics={})
        if promote:
            await registry.promote(record.version)
        return record.version
    finally:
        await pool.close()


async def test_backtest_command_with_the_champion_writes_the_report(
        shared_data: Path, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    version = await _register(pg_dsn, promote=True)
    out = tmp_path / "report"
    argv = ["backtest", "--data", str(shared_data), "--symbols", "BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT",
            "--from", "2023-07-14", "--to", "2023-07-28", "--funding-rate", "0.0001", "--out", str(out)]
    code = await asyncio.to_thread(main, argv)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"champion v{version}" in printed.out and "ml_filtered" in printed.out and "hit_rate" in printed.out
    doc = json.loads((out / "report.json").read_text())
    assert doc["start_ms"] == 1_689_292_800_000 and doc["end_ms"] == 1_690_502_400_000, "the --from/--to window"
    assert doc["symbols"] == ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"]
    klines = load_klines()
    inside = sum(int(((k.open_time >= doc["start_ms"]) & (k.open_time < doc["end_ms"])).sum())
                 for k in (klines[s] for s in doc["symbols"]))
    assert doc["candles"] == inside > 3 * 7 * 1440, "exactly the window's candles (some series start later)"
    for run in doc["runs"].values():
        assert all(doc["start_ms"] <= t["entry_time_ms"] < doc["end_ms"] for t in run["trades"])
    assert "data:image/png;base64," in (out / "report.html").read_text()
    [funding] = [n for n in doc["notes"] if n.startswith("funding")]
    assert "assumed constant rate of 0.0100 % every 8 h" in funding and "unfiltered" in funding
    paid = {name: run["headline"] for name, run in doc["runs"].items() if "funding_paid" in run["headline"]}
    assert paid, "precondition: a run held a position over a funding time"
    for head in paid.values():  # the scorecard counts the simulated funding, not only a note
        assert Decimal(head["net_after_funding"]) == Decimal(head["net_pnl"]) - Decimal(head["funding_paid"]) != 0
    # the champion was trained on these very days: the report says so, with the count, not only the console
    ml_trades = len(doc["runs"]["ml_filtered"]["trades"])
    assert (doc["champion_version"], doc["in_sample"], doc["ml_trades_in_sample"], doc["ml_trades_out_of_sample"]) == (
        version, True, ml_trades, 0)
    assert doc["notes"][0].startswith(f"IN-SAMPLE: the backtest overlaps champion v{version}'s training window")
    assert f"{ml_trades} of {ml_trades} ml_filtered trades entered inside it" in doc["notes"][0]
    assert "IN-SAMPLE" in (out / "report.html").read_text() and "warning: IN-SAMPLE" in printed.out


async def test_backtest_command_refuses_clearly(shared_data: Path, pg_dsn: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    await _register(pg_dsn, promote=False)
    code = await asyncio.to_thread(main, ["backtest", "--data", str(shared_data), "--symbols", "BTCUSDT",
                                          "--out", str(tmp_path / "x")])
    assert code == 1 and "no champion" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = await asyncio.to_thread(main, ["backtest", "--data", str(tmp_path / "empty"), "--model", "walk-forward"])
    assert code == 1 and "no 1m kline files" in capsys.readouterr().err
    # LIMIT entries cannot fill while the minute loop waits for them: refused in one line, not "no trades" — by the
    # settings (no exchange to fill them), and by the backtest itself with a live configuration
    monkeypatch.setenv("SMC_TRADING__ENTRY_TYPE", "LIMIT")
    argv = ["backtest", "--data", str(shared_data), "--symbols", "BTCUSDT", "--model", "walk-forward",
            "--out", str(tmp_path / "y")]
    code = await asyncio.to_thread(main, argv)
    err = capsys.readouterr().err
    assert code == 2 and "SMC_TRADING__ENTRY_TYPE=LIMIT needs an exchange" in err
    for name, value in (("SMC_MODE", "live"), ("BINANCE_API_KEY", "k"), ("BINANCE_API_SECRET", "s")):
        monkeypatch.setenv(name, value)
    code = await asyncio.to_thread(main, argv)
    err = capsys.readouterr().err
    assert code == 1 and "SMC_TRADING__ENTRY_TYPE=LIMIT" in err and "MARKET entries only" in err
