"""``UniverseCache``: the last exchangeInfo payload kept in PostgreSQL for restarts while offline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

_INSERT = "INSERT INTO exchange_info_cache (payload) VALUES ($1::jsonb) RETURNING id, fetched_at"
_PRUNE = "DELETE FROM exchange_info_cache WHERE id < $1"
_LATEST = "SELECT payload::text AS payload, fetched_at FROM exchange_info_cache ORDER BY id DESC LIMIT 1"


@dataclass(frozen=True, slots=True)
class CachedExchangeInfo:
    """A stored exchangeInfo payload and when it was fetched."""

    payload: dict[str, Any]
    fetched_at: datetime


class UniverseCache:
    """Keeps only the latest exchangeInfo payload (older rows are pruned on each save)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def save(self, payload: Mapping[str, Any]) -> datetime:
        """Store ``payload`` as the latest and drop older ones; return its ``fetched_at``."""
        text = orjson.dumps(payload).decode()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_INSERT, text)
            await conn.execute(_PRUNE, row["id"])
        fetched_at: datetime = row["fetched_at"]
        return fetched_at

    async def load(self) -> CachedExchangeInfo | None:
        """The latest stored payload, or ``None`` when nothing was ever stored."""
        row = await self._pool.fetchrow(_LATEST)
        if row is None:
            return None
        return CachedExchangeInfo(orjson.loads(row["payload"]), row["fetched_at"])
