"""Every Redis key, channel and stream name of the cluster, in one place.

The module-level names use the default prefix ``smc``; :class:`ClusterKeys` builds the same names
under another prefix (tests, or two deployments sharing one Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The multi-process cluster's keys under one ``prefix`` (default ``smc``: the module-level names)."""

    prefix: str = PREFIX
    split: int = 0
    """The ``SHARD_COUNT`` the lease and membership keys belong to (0: none in the name). Workers of different
    counts — a rolling restart that changes it — then split the symbols each among their own kind, every symbol
    watched (some twice for a while: their signals are refused as duplicates), instead of each splitting by its
    own count over the other kind's leases, which left symbols watched by nobody."""

    def _split(self) -> str:
        return f":n{self.split}" if self.split else ""

    def shard_lease(self, shard: int) -> str:
        """String key holding the owner token of shard ``shard`` (SET NX PX, renewed by its worker)."""
        return f"{self.prefix}:lease{self._split()}:shard:{shard}"

    @property
    def workers(self) -> str:
        """Sorted set of live shard workers, scored by the epoch ms their membership expires."""
        return f"{self.prefix}:workers{self._split()}"

    @property
    def signals(self) -> str:
        """Stream of encoded signals (shards → executor)."""
        return f"{self.prefix}:stream:signals"

    @property
    def signals_group(self) -> str:
        """The executor's consumer group on :attr:`signals`."""
        return f"{self.prefix}:executor"

    @property
    def marks(self) -> str:
        """Capped stream of per-minute closes (shards → executor: marks, replay clock, paper prices)."""
        return f"{self.prefix}:stream:marks"

    def rest_weight(self, minute: int) -> str:
        """REST weight used cluster-wide during the epoch minute ``minute`` (INCRBY, expires)."""
        return f"{self.prefix}:rest:weight:{minute}"

    def crashes(self, role: str) -> str:
        """List of recent crash times (epoch ms) of processes of ``role`` (crash-loop backoff)."""
        return f"{self.prefix}:crashes:{role}"
