"""``CandleRepository``: the SQL of the ``candles`` table.

Writes are idempotent: a batch is COPied into a per-connection temporary staging table and moved with
``INSERT … SELECT … ON CONFLICT DO NOTHING`` in one transaction, so a candle seen twice (a reconnect, a
backfill overlapping the stream) is stored once and the first stored version wins.

Candle writes commit with ``synchronous_commit`` off by default: a crash of PostgreSQL itself may lose
the last fraction of a second of candles (never corrupt anything), and those are exactly the candles
the warm start finds missing and backfills from the exchange. It makes small batches 2-3x faster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from smc_quant.domain.candles import Candle

COLUMNS = (
    "symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
)
_COLS = ", ".join(COLUMNS)
_STAGING = "candles_staging"

_PREPARE = f"""
SET LOCAL synchronous_commit TO {{commit}};
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} (
    symbol text, interval text, open_time bigint, open double precision, high double precision,
    low double precision, close double precision, volume double precision, quote_volume double precision,
    trades bigint, taker_buy_volume double precision, taker_buy_quote_volume double precision
) ON COMMIT DELETE ROWS"""

_MOVE = f"""
INSERT INTO candles ({_COLS})
SELECT {_COLS} FROM {_STAGING} ORDER BY symbol, interval, open_time
ON CONFLICT (symbol, interval, open_time) DO NOTHING"""

# No outer ORDER BY: sorting 450k rows (a warm start) spills to disk; Python orders each symbol instead.
_LATEST = f"""
SELECT c.* FROM unnest($1::text[]) AS s(symbol)
CROSS JOIN LATERAL (
    SELECT {_COLS} FROM candles
    WHERE candles.symbol = s.symbol AND candles.interval = $2
    ORDER BY open_time DESC LIMIT $3
) AS c"""

_FETCH = f"""
SELECT {_COLS} FROM candles
WHERE symbol = $1 AND interval = $2 AND open_time >= $3 AND open_time <= $4
ORDER BY open_time"""

_COUNTS = "SELECT symbol, count(*) AS n FROM candles WHERE interval = $1 GROUP BY symbol"

# Loose index scan over the primary key: a few probes per (symbol, interval), not a pass over every row.
_SERIES = """
WITH RECURSIVE p AS (
    (SELECT symbol, interval FROM candles ORDER BY symbol, interval LIMIT 1)
    UNION ALL
    SELECT n.symbol, n.interval FROM p CROSS JOIN LATERAL (
        SELECT symbol, interval FROM candles WHERE (symbol, interval) > (p.symbol, p.interval)
        ORDER BY symbol, interval LIMIT 1
    ) AS n
)
SELECT p.symbol, p.interval, (
    SELECT open_time FROM candles c WHERE c.symbol = p.symbol AND c.interval = p.interval
    ORDER BY open_time DESC LIMIT 1
) AS newest FROM p"""

_PRUNE = """
DELETE FROM candles WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM candles WHERE symbol = $1 AND interval = $2 AND open_time < $3
    ORDER BY open_time LIMIT $4
))"""

_LAST_OPEN = """
SELECT s.symbol, (SELECT max(open_time) FROM candles c WHERE c.symbol = s.symbol AND c.interval = $2) AS t
FROM unnest($1::text[]) AS s(symbol)"""


def _row(candle: Candle) -> tuple[object, ...]:
    return (
        candle.symbol, candle.interval, candle.open_time, candle.open, candle.high, candle.low,
        candle.close, candle.volume, candle.quote_volume, candle.trades, candle.taker_buy_volume,
        candle.taker_buy_quote_volume,
    )


def _open_time(candle: Candle) -> int:
    return candle.open_time


def _candles(records: Iterable[asyncpg.Record]) -> list[Candle]:
    return [Candle(*r) for r in records]


class CandleRepository:
    """Closed candles in PostgreSQL, keyed by (symbol, interval, open_time)."""

    def __init__(self, pool: asyncpg.Pool, *, synchronous_commit: bool = False) -> None:
        self._pool = pool
        self._prepare = _PREPARE.format(commit="ON" if synchronous_commit else "OFF")

    async def upsert(self, candles: Sequence[Candle]) -> int:
        """Store ``candles``, ignoring those already stored; return how many rows were new."""
        if not candles:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._prepare)
            await conn.copy_records_to_table(_STAGING, records=map(_row, candles), columns=COLUMNS)
            status = await conn.execute(_MOVE)
        return int(status.rsplit(" ", 1)[1])

    async def latest(self, symbols: Sequence[str], interval: str, per_symbol: int) -> dict[str, list[Candle]]:
        """The last ``per_symbol`` candles of each symbol, oldest first; symbols without any are absent."""
        records = await self._pool.fetch(_LATEST, list(symbols), interval, per_symbol)
        out: dict[str, list[Candle]] = {}
        for candle in _candles(records):
            out.setdefault(candle.symbol, []).append(candle)
        for candles in out.values():
            candles.sort(key=_open_time)
        return out

    async def fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Candles of one symbol with ``start_ms <= open_time <= end_ms``, oldest first."""
        return _candles(await self._pool.fetch(_FETCH, symbol, interval, start_ms, end_ms))

    async def counts(self, interval: str) -> dict[str, int]:
        """Number of stored candles per symbol for ``interval``."""
        return {r["symbol"]: r["n"] for r in await self._pool.fetch(_COUNTS, interval)}

    async def series(self) -> list[tuple[str, str, int]]:
        """Every stored (symbol, interval) with the open time of its newest candle, in key order (index
        probes only)."""
        return [(r["symbol"], r["interval"], r["newest"]) for r in await self._pool.fetch(_SERIES)]

    async def prune(self, symbol: str, interval: str, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` of the oldest candles of one series that open before ``before_ms`` (one short
        transaction); how many were deleted. Call again while it returns ``limit``."""
        status = await self._pool.execute(_PRUNE, symbol, interval, before_ms, limit)
        return int(status.rsplit(" ", 1)[1])

    async def last_open_times(self, symbols: Sequence[str], interval: str) -> dict[str, int]:
        """Open time of each symbol's newest stored candle; symbols without any are absent."""
        records = await self._pool.fetch(_LAST_OPEN, list(symbols), interval)
        return {r["symbol"]: r["t"] for r in records if r["t"] is not None}
