"""Shared fixtures: the real data folder and a throw-away PostgreSQL database per test.

PostgreSQL comes from ``SMC_TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
each test that asks for ``pg_dsn`` gets a database of its own, dropped afterwards. Redis comes from
``SMC_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
import structlog

from smc_quant.datasets import data_dir

ADMIN_DSN = os.environ.get("SMC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("SMC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real market data folder; tests needing it skip with a clear reason when it is absent."""
    root = data_dir()
    if not (root / "klines").is_dir():
        pytest.skip(f"real market data not found at {root} (set SMC_DATA_DIR)")
    return root


@pytest.fixture(autouse=True)
def _global_logging_restored() -> object:
    """A command run in-process (``main(argv)``) configures logging for the whole interpreter; put it back
    after each test so one test's log set-up never changes the next test's."""
    import logging

    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def _dsn_for(dbname: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"smc_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _dsn_for(name)
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def rds() -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis (its own database number); the test is skipped when Redis does not answer."""
    client: aioredis.Redis = aioredis.from_url(TEST_REDIS_URL)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        pytest.skip("Redis not reachable")
    yield client
    await client.aclose()
