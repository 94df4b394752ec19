"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from smc_quant.store.db import create_pool
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a freshly migrated database (tests needing more say so in their own fixture)."""
    await apply_migrations(pg_dsn)
    p = await create_pool(pg_dsn, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def keys(rds: aioredis.Redis) -> AsyncIterator[ClusterKeys]:
    """Cluster keys under a prefix of this test's own; its signal and mark streams are deleted afterwards."""
    k = ClusterKeys(f"t{uuid.uuid4().hex[:10]}")
    yield k
    await rds.delete(k.signals, k.marks)
