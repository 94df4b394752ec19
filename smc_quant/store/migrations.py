"""Numbered, forward-only SQL migrations applied under a PostgreSQL advisory lock.

Files are named ``NNNN_name.sql`` and applied in order, each in its own transaction, and recorded in
``schema_migrations`` with a SHA-256 checksum. An applied file whose checksum changed is refused:
migrations are never edited, a new file is added instead. Two processes may run this at once; the
advisory lock makes the second wait and then find nothing left to do.

Where the files are: ``SMC_MIGRATIONS_DIR`` if set, else the repository's top-level ``migrations/``
(found from this file in a checkout or an editable install), else ``./migrations`` under the working
directory (a container that copies the folder next to its working directory).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from smc_quant.errors import OperationalError

LOCK_KEY = 0x534D_4351_4D49_47  # "SMCQMIG": one fixed advisory-lock key for the whole cluster
ENV_DIR = "SMC_MIGRATIONS_DIR"
_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_\-]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: ``version`` is its number as written (``0001``)."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"


def default_migrations_dir() -> Path:
    """The migrations folder: the environment, then the repository root, then the working directory."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    candidates = (Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise OperationalError(f"migrations folder not found; set {ENV_DIR} (looked in {looked})")


def read_migrations(directory: Path) -> list[Migration]:
    """The migrations of ``directory`` in version order; ``OperationalError`` on a duplicate number."""
    if not directory.is_dir():
        raise OperationalError(f"migrations folder {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise OperationalError(f"two migrations numbered {number}: {found[number].filename}, {path.name}")
        found[number] = Migration(match.group(1), match.group(2), path.read_text(encoding="utf-8"))
    return [found[n] for n in sorted(found)]


async def apply_migrations(dsn_or_pool: str | asyncpg.Pool, directory: Path | None = None) -> list[str]:
    """Apply the pending migrations; return the file names applied now (empty when up to date)."""
    migrations = read_migrations(directory or default_migrations_dir())
    if isinstance(dsn_or_pool, str):
        conn = await asyncpg.connect(dsn_or_pool)
        try:
            return await _apply_locked(conn, migrations)
        finally:
            await conn.close()
    async with dsn_or_pool.acquire() as pooled:
        return await _apply_locked(pooled, migrations)


async def _apply_locked(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                _verify(migration, applied[migration.version])
                continue
            await _apply_one(conn, migration)
            done.append(migration.filename)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _verify(migration: Migration, recorded: str) -> None:
    if recorded != migration.checksum:
        raise OperationalError(
            f"migration {migration.filename} was changed after it was applied "
            "(checksum differs); add a new migration instead of editing an applied one"
        )


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    async with conn.transaction():
        try:
            await conn.execute(migration.sql)
        except asyncpg.PostgresError as exc:
            raise OperationalError(f"migration {migration.filename} failed: {exc}") from exc
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version, migration.name, migration.checksum,
        )
