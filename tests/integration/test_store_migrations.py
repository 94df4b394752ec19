"""The migrations runner against a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from smc_quant.errors import OperationalError
from smc_quant.store.migrations import apply_migrations, default_migrations_dir, read_migrations
from smc_quant.store.trading import _LATEST_ENTRY

SHIPPED = [m.filename for m in read_migrations(default_migrations_dir())]
VERSIONS = [name.split("_", 1)[0] for name in SHIPPED]

pytestmark = pytest.mark.integration

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, target)
    return target


async def _versions(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


async def test_applies_all_files_once_then_nothing(pg_dsn: str) -> None:
    """A fresh database gets every file in order and a second run applies nothing."""
    first = await apply_migrations(pg_dsn)
    second = await apply_migrations(pg_dsn)
    assert first == SHIPPED
    assert second == []
    assert await _versions(pg_dsn) == VERSIONS


async def test_concurrent_runners_apply_each_file_exactly_once(pg_dsn: str) -> None:
    """Four runners started together apply the files once between them, without errors."""
    results = await asyncio.gather(*(apply_migrations(pg_dsn) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == SHIPPED
    assert await _versions(pg_dsn) == VERSIONS


async def test_runs_through_a_pool(pg_dsn: str) -> None:
    """A pool works as well as a DSN and leaves the candles table usable."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        assert await apply_migrations(pool) == SHIPPED
        assert await pool.fetchval("SELECT count(*) FROM candles") == 0
    finally:
        await pool.close()


async def test_refuses_an_edited_applied_migration(pg_dsn: str, tmp_path: Path) -> None:
    """Changing a file after it was applied stops the runner with OperationalError."""
    folder = _copy_migrations(tmp_path)
    await apply_migrations(pg_dsn, folder)
    path = folder / "0001_candles.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    with pytest.raises(OperationalError, match=r"0001_candles\.sql was changed"):
        await apply_migrations(pg_dsn, folder)


async def test_applies_only_a_newly_added_file(pg_dsn: str, tmp_path: Path) -> None:
    """A file added after the first run is applied alone on the next run."""
    folder = _copy_migrations(tmp_path)
    await apply_migrations(pg_dsn, folder)
    (folder / "9999_extra.sql").write_text("CREATE TABLE extra (id int);")
    assert await apply_migrations(pg_dsn, folder) == ["9999_extra.sql"]
    assert await _versions(pg_dsn) == [*VERSIONS, "9999"]


async def test_a_failing_migration_is_rolled_back_and_not_recorded(pg_dsn: str, tmp_path: Path) -> None:
    """A broken file raises OperationalError and leaves neither its changes nor a record behind."""
    folder = _copy_migrations(tmp_path)
    (folder / "9999_broken.sql").write_text("CREATE TABLE half (id int); SELECT * FROM no_such_table;")
    with pytest.raises(OperationalError, match=r"9999_broken\.sql failed"):
        await apply_migrations(pg_dsn, folder)
    assert await _versions(pg_dsn) == VERSIONS
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('half')") is None
    finally:
        await conn.close()


def test_duplicate_numbers_are_refused(tmp_path: Path) -> None:
    """Two files with the same number are a structural error."""
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 1;")
    with pytest.raises(OperationalError, match="two migrations numbered 1"):
        read_migrations(tmp_path)


def test_default_folder_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SMC_MIGRATIONS_DIR overrides the repository folder, which is the default otherwise."""
    monkeypatch.delenv("SMC_MIGRATIONS_DIR", raising=False)
    assert default_migrations_dir() == REPO_MIGRATIONS
    monkeypatch.setenv("SMC_MIGRATIONS_DIR", str(tmp_path))
    assert default_migrations_dir() == tmp_path


async def test_recent_signals_are_found_through_an_index(pg_dsn: str) -> None:
    """The executor's duplicate filter at every start (``TradingRepository.recent_signal_ids``: signals created in
    the last day) reads the recent rows through ``signals_created`` instead of scanning every signal ever stored
    (a table that grows each month)."""
    await apply_migrations(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        indexes = {r["indexname"]: r["indexdef"] for r in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'signals'")}
        assert "signals_created" in indexes and indexes["signals_created"].endswith("(created_ms)")
        # 50,000 signals over 100 days, one a minute from 500 symbols; the planner knows it (ANALYZE)
        await conn.execute("""
            INSERT INTO signals (signal_id, symbol, side, open_time, price, confidence, stop_pct, target_pct, setup,
                                 created_ms, decision)
            SELECT 's' || i, 'SYM' || (i % 500), 'LONG', i * 172800, 1, 0.6, 1, 2, 'ict', i * 172800, 'skip'
            FROM generate_series(1::bigint, 50000) AS i""")
        await conn.execute("ANALYZE signals")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT signal_id FROM signals WHERE created_ms >= $1", 50_000 * 172_800 - 86_400_000))
    finally:
        await conn.close()
    assert "signals_created" in plan and "Seq Scan" not in plan, plan


async def test_the_newest_entry_on_a_symbol_is_found_through_an_index(pg_dsn: str) -> None:
    """The reconciliation asks, every round, for the newest entry journalled on each exchange position the book does
    not hold (``TradingRepository.latest_entry``: a person's position, for as long as it is open). It read the whole
    order journal, which only grows; ``orders_entry_symbol`` serves it."""
    await apply_migrations(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        # 150,000 orders (about 3 years of trading) on 300 symbols, a third of them entries
        await conn.execute("""
            INSERT INTO orders (client_order_id, signal_id, symbol, side, kind, order_type, algo, quantity, status,
                                created_ms, updated_ms)
            SELECT 'c' || i, 's' || (i / 3), 'SYM' || (i % 300), 'BUY',
                   (ARRAY['entry', 'stop_loss', 'take_profit'])[i % 3 + 1], 'MARKET', false, 1, 'FILLED',
                   i * 600000, i * 600000
            FROM generate_series(1::bigint, 150000) AS i""")
        await conn.execute("ANALYZE orders")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {_LATEST_ENTRY}", "SYM7", None, None))
    finally:
        await conn.close()
    assert "orders_entry_symbol" in plan and "Seq Scan on orders" not in plan, plan
