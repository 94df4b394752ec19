"""Stable symbol → shard assignment."""

from __future__ import annotations

from shards.assignment import assign, shard_of
from smc_quant.datasets import load_exchange_info


def _symbols() -> list[str]:
    return [s["symbol"] for s in load_exchange_info()["symbols"]]


def test_assignment_covers_every_symbol_once(shared_data: object) -> None:
    """Every symbol lands in exactly one shard and shards are balanced within 35%."""
    symbols = _symbols()
    groups = assign(symbols, 4)
    flat = [s for g in groups for s in g]
    assert sorted(flat) == sorted(set(symbols))
    sizes = [len(g) for g in groups]
    assert max(sizes) < 1.35 * len(symbols) / 4


def test_adding_a_shard_moves_about_one_nth(shared_data: object) -> None:
    """Going from 4 to 5 shards moves only symbols to the new shard, about 1/5 of them."""
    symbols = _symbols()
    moved = [s for s in symbols if shard_of(s, 4) != shard_of(s, 5)]
    assert all(shard_of(s, 5) == 4 for s in moved)
    assert 0.12 < len(moved) / len(symbols) < 0.28


def test_assignment_is_deterministic() -> None:
    """The same input gives the same split in any order."""
    a = assign(["ETHUSDT", "BTCUSDT", "SOLUSDT"], 2)
    b = assign(["SOLUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"], 2)
    assert a == b
