"""The embedded PostgreSQL used when DATABASE_URL is unset."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

import asyncpg
import pytest

from smc_quant.errors import OperationalError
from smc_quant.settings import Settings
from smc_quant.store.embedded import EmbeddedPostgres, ensure_system_user, resolve_database
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


class _BrokenServer:
    """Stands in for the third-party ``pgserver`` module: its ``get_server`` fails like initdb does."""

    def get_server(self, datadir: Path, cleanup_mode: str) -> str:
        raise subprocess.CalledProcessError(1, ["initdb", "-D", str(datadir)], stderr=b"initdb: boom\n")


def test_a_failed_start_is_reported_with_the_commands_stderr(tmp_path: Path) -> None:
    embedded = EmbeddedPostgres(tmp_path / "pg")
    with pytest.raises(OperationalError, match=r"failed to start in .*pg: CalledProcessError.*initdb: boom"):
        embedded._start_blocking(_BrokenServer())


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root needs (and may create) the system account")


@root_only
def test_as_root_the_system_account_is_created_even_with_a_minimal_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh machine, root, PATH=/usr/bin:/bin (useradd lives in /usr/sbin): the demo died at start."""
    name = f"smcq{secrets.token_hex(4)}"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    try:
        ensure_system_user(name)
        assert pwd.getpwnam(name).pw_shell == "/bin/bash"
        ensure_system_user(name)  # existing: nothing to do
    finally:
        subprocess.run(["/usr/sbin/userdel", name], check=False, capture_output=True)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


@root_only
def test_as_root_without_useradd_anywhere_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"smcq{secrets.token_hex(4)}"
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OperationalError, match=rf"system account '{name}'.*useradd -s /bin/bash {name}.*DATABASE_URL"):
        ensure_system_user(name, extra_path=())
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
