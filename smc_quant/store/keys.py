"""Every Redis key, channel and stream name of the cluster, in one place."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "smc"

UNIVERSE_EXCHANGE_INFO: Final = f"{PREFIX}:universe:exchange_info"
"""The latest exchangeInfo payload (JSON bytes), written through by the universe loader."""

SIGNALS_STREAM: Final = f"{PREFIX}:stream:signals"
"""Redis Stream the shards publish signals to; the executor reads it with a consumer group."""

REST_WEIGHT_BUDGET: Final = f"{PREFIX}:rest:weight"
"""Cluster-wide REST weight used in the current minute (suffixed with the minute)."""


def latest_candles(symbol: str, interval: str) -> str:
    """The hot cache of one symbol's latest closed candles."""
    return f"{PREFIX}:candles:latest:{symbol}:{interval}"


def shard_lease(shard: int) -> str:
    """The lease a shard worker holds (with a TTL heartbeat) while it runs shard ``shard``."""
    return f"{PREFIX}:lease:shard:{shard}"


def rest_weight(minute: int) -> str:
    """REST weight used cluster-wide during the epoch minute ``minute``."""
    return f"{REST_WEIGHT_BUDGET}:{minute}"
