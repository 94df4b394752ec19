"""UniverseCache against a real PostgreSQL database, with the real exchangeInfo payload."""

from __future__ import annotations

from pathlib import Path

import pytest

from smc_quant.datasets import load_exchange_info
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.universe_cache import UniverseCache

pytestmark = pytest.mark.integration


async def test_save_then_load_returns_the_latest_payload_only(pg_dsn: str, shared_data: Path) -> None:
    """The real payload round-trips unchanged, a newer save replaces it, and only one row is kept."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn)
    try:
        cache = UniverseCache(pool)
        assert await cache.load() is None
        info = load_exchange_info(shared_data)
        await cache.save(info)
        smaller = {**info, "symbols": info["symbols"][:3]}
        await cache.save(smaller)
        cached = await cache.load()
        assert cached is not None
        assert cached.payload == smaller
        assert await pool.fetchval("SELECT count(*) FROM exchange_info_cache") == 1
    finally:
        await pool.close()
