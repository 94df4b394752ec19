"""The asyncpg connection pool.

JIT is turned off for our sessions: every query here is short, and JIT compilation added ~60 ms to
the warm-start query while saving nothing.
"""

from __future__ import annotations

import asyncpg

from smc_quant.errors import OperationalError


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 8) -> asyncpg.Pool:
    """Open a pool to ``dsn``; ``OperationalError`` if that fails (the message never repeats the DSN)."""
    try:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                         server_settings={"jit": "off"})
    except (OSError, asyncpg.PostgresError) as exc:
        raise OperationalError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
    assert pool is not None
    return pool
