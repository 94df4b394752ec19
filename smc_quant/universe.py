"""``BinanceUniverse``: which USDT perpetuals the cluster watches, and their filters.

Sources, in order: the exchange's exchangeInfo (written through to Redis and PostgreSQL), then the
Redis copy, then the PostgreSQL copy, then :data:`FALLBACK_SYMBOLS` with unknown filters. A restart
therefore works while the exchange is unreachable. :meth:`BinanceUniverse.refresh` re-reads the
exchange only and reports added and removed symbols; when the exchange is down it keeps what it has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import asyncpg
import orjson
import redis.asyncio as aioredis

from smc_quant.errors import SmcError
from smc_quant.exchange.exchange_info import ExchangeInfo, SymbolFilters, SymbolInfo, parse_exchange_info
from smc_quant.exchange.rest import BinanceRestClient
from smc_quant.logging import get_logger
from smc_quant.settings import UniverseSettings
from smc_quant.store import keys
from smc_quant.store.universe_cache import UniverseCache

Source = Literal["exchange", "redis", "postgres", "fallback"]

FALLBACK_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT",
    "LINKUSDT", "DOTUSDT", "TRXUSDT", "LTCUSDT", "BCHUSDT", "NEARUSDT", "UNIUSDT", "ATOMUSDT",
    "ETCUSDT", "FILUSDT", "APTUSDT", "ARBUSDT",
)
"""Twenty liquid USDT perpetuals (by long-run volume), used when no source answers."""

DEFAULT_WEIGHT_LIMIT = 2400
NO_DELIVERY_MS = 4_000_000_000_000
"""2096-10-02. Binance gives every perpetual a ``deliveryDate`` in 2100 (4133404800000, 2100-12-25 08:00 UTC; a few
an hour later); one scheduled for delisting gets the real time of its delisting, before this."""

# Failures a source may raise (ValueError: an undecodable cached copy); anything else propagates.
_SOURCE_ERRORS: tuple[type[Exception], ...] = (
    SmcError, OSError, TimeoutError, ValueError, aioredis.RedisError, asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


@dataclass(frozen=True, slots=True)
class Universe:
    """The watched symbols (sorted), their filters (``None`` when unknown) and where they came from."""

    symbols: tuple[str, ...]
    filters: Mapping[str, SymbolFilters | None]
    source: Source
    weight_limit: int
    delistings: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Watched perpetuals with a scheduled delisting: symbol → delisting time (ms), from ``deliveryDate``."""
    other_filters: Mapping[str, SymbolFilters] = field(default_factory=lambda: MappingProxyType({}))
    """The filters of the symbols the exchange lists but this universe does not watch (left out by the settings, or
    not trading now): a position still open on one is kept tradable until it closes."""


@dataclass(frozen=True, slots=True)
class UniverseChange:
    """What a refresh changed."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


def _admitted(info: SymbolInfo, settings: UniverseSettings) -> bool:
    return (info.status == "TRADING" and info.contract_type in settings.contract_types
            and info.quote_asset in settings.quote_assets)


def _capped(names: list[str], settings: UniverseSettings) -> tuple[str, ...]:
    """Apply ``settings.symbols`` and ``max_symbols`` (majors of the fallback list kept first)."""
    if settings.symbols:
        names = [n for n in names if n in set(settings.symbols)]
    if settings.max_symbols:
        rank = {s: i for i, s in enumerate(FALLBACK_SYMBOLS)}
        names = sorted(names, key=lambda n: (rank.get(n, len(rank)), n))[: settings.max_symbols]
    return tuple(sorted(names))


def select_universe(info: ExchangeInfo, settings: UniverseSettings, source: Source,
                    default_weight_limit: int = DEFAULT_WEIGHT_LIMIT) -> Universe:
    """The admitted symbols of ``info`` under ``settings``."""
    by_name = {s.symbol: s for s in info.symbols if _admitted(s, settings)}
    symbols = _capped(list(by_name), settings)
    filters = MappingProxyType({s: by_name[s].filters for s in symbols})
    delistings = MappingProxyType({s: by_name[s].delivery_date_ms for s in symbols
                                   if by_name[s].contract_type == "PERPETUAL"
                                   and 0 < by_name[s].delivery_date_ms < NO_DELIVERY_MS})
    others = MappingProxyType({s.symbol: s.filters for s in info.symbols
                               if s.symbol not in filters and s.filters is not None})
    return Universe(symbols, filters, source, info.weight_limit or default_weight_limit, delistings, others)


def fallback_universe(settings: UniverseSettings,
                      default_weight_limit: int = DEFAULT_WEIGHT_LIMIT) -> Universe:
    """The hard-coded list under ``settings`` (its quote filter applies), filters unknown."""
    names = [s for s in FALLBACK_SYMBOLS if any(s.endswith(q) for q in settings.quote_assets)]
    symbols = _capped(names, settings)
    return Universe(symbols, MappingProxyType(dict.fromkeys(symbols)), "fallback", default_weight_limit)


class BinanceUniverse:
    """Loads and refreshes the universe; every collaborator is optional except the settings."""

    def __init__(self, rest: BinanceRestClient | None, cache: UniverseCache | None,
                 redis: aioredis.Redis | None, settings: UniverseSettings, logger: Any = None, *,
                 default_weight_limit: int = DEFAULT_WEIGHT_LIMIT,
                 redis_key: str = keys.UNIVERSE_EXCHANGE_INFO) -> None:
        self._rest = rest
        self._redis_key = redis_key
        self._cache = cache
        self._redis = redis
        self._settings = settings
        self._log = logger if logger is not None else get_logger(component="universe")
        self._default_limit = default_weight_limit
        self.current: Universe | None = None

    async def load(self) -> Universe:
        """The universe from the first source that answers (see the module docstring)."""
        sources: list[tuple[Source, Callable[[], Awaitable[Any]]]] = [
            ("exchange", self._from_exchange), ("redis", self._from_redis), ("postgres", self._from_postgres)]
        universe = None
        for source, read in sources:
            universe = await self._try(source, read)
            if universe is not None:
                break
        if universe is None:
            self._log.warning("universe_fallback", symbols=len(FALLBACK_SYMBOLS))
            universe = fallback_universe(self._settings, self._default_limit)
        return self._adopt(universe)

    async def refresh(self) -> UniverseChange:
        """Re-read the exchange; adopt and report the difference, or keep the current one if it fails."""
        if self.current is None:
            await self.load()
            return UniverseChange((), ())
        fresh = await self._try("exchange", self._from_exchange)
        if fresh is None:
            return UniverseChange((), ())
        old, new = set(self.current.symbols), set(fresh.symbols)
        self._adopt(fresh)
        change = UniverseChange(tuple(sorted(new - old)), tuple(sorted(old - new)))
        if change.added or change.removed:
            self._log.info("universe_changed", added=change.added, removed=change.removed)
        return change

    def _adopt(self, universe: Universe) -> Universe:
        self.current = universe
        if self._rest is not None:
            self._rest.governor.set_limit(universe.weight_limit)
        self._log.info("universe_loaded", source=universe.source, symbols=len(universe.symbols))
        return universe

    async def _try(self, source: Source, read: Callable[[], Awaitable[Any]]) -> Universe | None:
        try:
            payload = await read()
            if payload is None:
                return None
            return select_universe(parse_exchange_info(payload), self._settings, source, self._default_limit)
        except _SOURCE_ERRORS as exc:
            self._log.warning("universe_source_failed", source=source, error=f"{type(exc).__name__}: {exc}")
            return None

    async def _from_exchange(self) -> dict[str, Any] | None:
        if self._rest is None:
            return None
        payload = await self._rest.exchange_info()
        parse_exchange_info(payload)  # never cache a payload we cannot read
        await self._write_through(payload)
        return payload

    async def _write_through(self, payload: dict[str, Any]) -> None:
        if self._redis is not None:
            await self._guard("redis", self._redis.set(self._redis_key, orjson.dumps(payload)))
        if self._cache is not None:
            await self._guard("postgres", self._cache.save(payload))

    async def _guard(self, target: str, write: Awaitable[Any]) -> None:
        try:
            await write
        except _SOURCE_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._log.warning("universe_cache_write_failed", target=target, error=error)

    async def _from_redis(self) -> Any:
        if self._redis is None:
            return None
        raw = await self._redis.get(self._redis_key)
        return None if raw is None else orjson.loads(raw)

    async def _from_postgres(self) -> Any:
        if self._cache is None:
            return None
        cached = await self._cache.load()
        return None if cached is None else cached.payload
