"""Stable symbol → shard assignment by rendezvous (highest-random-weight) hashing.

Each symbol goes to the shard with the highest ``blake2b(symbol, shard)`` score. Adding a shard
moves only the symbols the new shard now wins (about 1/N of them); removing one moves only its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _score(symbol: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{symbol}:{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(symbol: str, shard_count: int) -> int:
    """The shard index (0-based) that owns ``symbol`` among ``shard_count`` shards."""
    if shard_count < 1:
        raise ValueError("shard_count must be ≥ 1")
    return max(range(shard_count), key=lambda k: _score(symbol, k))


def assign(symbols: Iterable[str], shard_count: int) -> list[tuple[str, ...]]:
    """Split ``symbols`` into ``shard_count`` sorted groups; group k is shard k's symbols."""
    groups: list[list[str]] = [[] for _ in range(shard_count)]
    for symbol in sorted(set(symbols)):
        groups[shard_of(symbol, shard_count)].append(symbol)
    return [tuple(g) for g in groups]
