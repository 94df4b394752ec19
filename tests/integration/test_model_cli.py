"""``smc-quant train / models / promote / rollback`` on a small slice of real candles and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shards.cli import main
from smc_quant.store.db import create_pool
from smc_quant.store.models import ModelRecord, ModelRegistry

pytestmark = pytest.mark.integration
SLICE = ["--symbols", "BTCUSDT", "ETHUSDT", "--every", "5"]


def _records(dsn: str) -> list[ModelRecord]:
    async def read() -> list[ModelRecord]:
        pool = await create_pool(dsn, max_size=1)
        try:
            return await ModelRegistry(pool).list()
        finally:
            await pool.close()

    return asyncio.run(read())


def _register_without_holdout(dsn: str) -> int:
    """v1's artifact registered again with no stored held-out window (as models trained before it existed)."""
    async def register() -> int:
        pool = await create_pool(dsn, max_size=1)
        try:
            registry = ModelRegistry(pool)
            record = await registry.register(await registry.load(1), train_start=0, train_end=1, params={},
                                             metrics={})
            return record.version
        finally:
            await pool.close()

    return asyncio.run(register())


def _statuses(dsn: str) -> dict[int, str]:
    return {r.version: r.status for r in _records(dsn)}


def test_train_models_promote_rollback(shared_data: Path, pg_dsn: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Train registers candidates (trained on all but the latest window, stored with them) with text and HTML
    reports; promote gates on that stored window without --data, or on unseen candles with it; rollback walks
    back."""
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setattr("shards.cli.configure_logging", lambda *_a, **_k: None)  # keep the global log setup
    data, out = str(shared_data), str(tmp_path / "reports")
    train = ["train", "--data", data, *SLICE, "--max-bars", "20000", "--folds", "4", "--out", out]
    assert main(train) == 0
    printed = capsys.readouterr().out
    assert "[2/2] read ETHUSDT: 20,000 candles" in printed and "fold 4: AUC" in printed
    assert "(broad setups, every 5 bars, after 4,320 warm-up candles)" in printed
    assert "registered model v1 as candidate" in printed and "shuffled_auc" in printed
    page = (tmp_path / "reports" / "model-v1.html").read_text()
    assert '<svg class="calibration"' in page and '<svg class="importance"' in page and "<circle" in page
    assert "atr_pct" in (tmp_path / "reports" / "model-v1.txt").read_text()
    assert _statuses(pg_dsn) == {1: "candidate"}

    holdout = _records(pg_dsn)[0].metrics["holdout"]
    assert len(holdout["win"]) > 100 and holdout["start"][0] > _records(pg_dsn)[0].train_end  # purged, unseen

    # no --data: gated on v1's stored held-out window, no champion yet. Two weeks of two symbols are too
    # little evidence: wins come in bursts, and over time blocks of one label the AUC is not significant
    assert main(["promote", "1"]) == 1
    printed = capsys.readouterr().out
    assert "gate window: the" in printed and "stored held-out window" in printed
    assert "not significantly above chance" in printed and "time blocks" in printed
    assert main(["promote", "1", "--z", "0"]) == 0  # the margin alone
    assert capsys.readouterr().out.strip().endswith("beats champion 0.5000 + 0.01")
    assert _statuses(pg_dsn) == {1: "champion"}

    assert main(train) == 0
    capsys.readouterr()
    assert main(["promote", "2"]) == 1  # the same rows, the same model: it does not beat the champion
    assert "kept champion v1: challenger AUC" in capsys.readouterr().out
    unseen = ["--data", data, *SLICE, "--max-bars", "30000"]
    assert main(["promote", "2", *unseen]) == 1
    printed = capsys.readouterr().out
    assert "setups after" in printed and "kept champion v1: challenger AUC" in printed
    assert main(["promote", "2", "--force"]) == 0
    assert "promoted v2 with --force (gate: challenger AUC" in capsys.readouterr().out
    assert _statuses(pg_dsn) == {1: "retired", 2: "champion"}

    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["version", "status", "schema"]
    assert [line.split()[:2] for line in table[1:]] == [["1", "retired"], ["2", "champion"]]
    assert main(["rollback"]) == 0
    assert "v1 is the champion again" in capsys.readouterr().out
    assert _statuses(pg_dsn) == {1: "champion", 2: "retired"}
    assert main(["rollback"]) == 1
    assert "no earlier champion" in capsys.readouterr().err
    # the strategy's own setups only: after the live warm-up (4,320 candles) too few are left for 4 folds, which
    # is said plainly (it was a LightGBM traceback); they do train with every row labelled
    assert main([*train, "--setups", "strategy"]) == 1
    assert "has no training rows left after purging" in capsys.readouterr().err
    assert main([*train, "--setups", "strategy", "--min-history", "0"]) == 0
    assert "(strategy setups, every 5 bars, after 0 warm-up candles)" in capsys.readouterr().out
    assert _records(pg_dsn)[-1].params["source"] == "strategy"
    plain = _register_without_holdout(pg_dsn)
    assert main(["promote", str(plain)]) == 1
    assert f"model v{plain} has no stored held-out window (pass --data DIR, or --force)" in capsys.readouterr().out
