"""The embedded PostgreSQL used when DATABASE_URL is unset."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncpg
import pytest

from smc_quant.errors import OperationalError
from smc_quant.settings import Settings
from smc_quant.store.embedded import EmbeddedPostgres, resolve_database
from smc_quant.store.migrations import apply_migrations, default_migrations_dir, read_migrations

pytestmark = pytest.mark.integration


async def test_embedded_server_starts_migrates_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    """Without DATABASE_URL a server starts under state_dir/pg and its data survives a restart."""
    settings = Settings(state_dir=tmp_path / "state", database_url=None)
    dsn, embedded = await resolve_database(settings)
    assert embedded is not None
    try:
        assert (tmp_path / "state" / "pg" / "PG_VERSION").is_file()
        assert await apply_migrations(dsn) == [m.filename for m in read_migrations(default_migrations_dir())]
    finally:
        await embedded.stop()
    dsn, embedded = await resolve_database(settings)
    assert embedded is not None
    try:
        assert await apply_migrations(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            shipped = len(read_migrations(default_migrations_dir()))
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == shipped
        finally:
            await conn.close()
    finally:
        await embedded.stop()


async def test_database_url_wins_over_embedded(tmp_path: Path) -> None:
    """With DATABASE_URL set nothing is started and the URL is returned as is."""
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    settings = Settings(state_dir=tmp_path, database_url=url)
    assert await resolve_database(settings) == (url, None)
    assert not (tmp_path / "pg").exists()


class _FlakyServer:
    """Stands in for the third-party ``pgserver`` module: its ``get_server`` fails ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def get_server(self, datadir: Path, cleanup_mode: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise subprocess.CalledProcessError(1, ["initdb", "-D", str(datadir)], stderr=b"initdb: boom\n")
        return f"server:{datadir}:{cleanup_mode}"


def test_a_failed_start_is_retried_once_then_reported_with_both_errors(tmp_path: Path) -> None:
    embedded = EmbeddedPostgres(tmp_path / "pg")
    embedded.retry_delay_s = 0.0
    flaky = _FlakyServer(failures=1)
    assert embedded._start_blocking(flaky) == f"server:{tmp_path / 'pg'}:stop"
    assert flaky.calls == 2
    broken = _FlakyServer(failures=2)
    with pytest.raises(OperationalError, match=r"failed to start in .*pg: CalledProcessError.*initdb: boom.* \| then: "
                                               r"CalledProcessError"):
        embedded._start_blocking(broken)
    assert broken.calls == 2
