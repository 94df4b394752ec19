"""Parity: the live service (emulator → sockets → shards → analyzer → scorer → strategy → executor → paper account)
and the backtest, on the same real candles with the same real model, make identical decisions.

The slice: 2023-08-07 05:15 UTC, 150 minutes of DOGE, BTC, ETH and SOL. The model is a real LightGBM model trained
on the first 20 000 real 1m candles of BTCUSDT and ETHUSDT (weeks before the slice). Both engines start cold at the
slice's first candle (the service's database is empty, the emulator serves no earlier history). Found beforehand
with ``find_setups`` + the model: DOGEUSDT holds a setup scored ≥ 0.5 around minute 75 — the precondition is
asserted from the backtest's own output, and the comparison covers every signal and every order of both runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shards.backtest_cli import replay_compare
from smc_quant.datasets import load_klines
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import build_dataset
from smc_quant.model.trainer import train
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry

pytestmark = pytest.mark.integration

START_MS = 1_691_385_300_000  # 2023-08-07 05:15 UTC
SYMBOLS = ("DOGEUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT")
MINUTES = 150


async def _champion(dsn: str) -> int:
    klines = load_klines()
    series = [klines["BTCUSDT"].slice(0, 20_000), klines["ETHUSDT"].slice(0, 20_000)]
    ds = await asyncio.to_thread(build_dataset, series, BarrierSpec(), 5, "trend_1m", None, "broad")
    model = await asyncio.to_thread(train, ds.x, ds.win)
    pool = await create_pool(dsn)
    try:
        registry = ModelRegistry(pool)
        record = await registry.register(model, train_start=int(ds.start.min()), train_end=int(ds.start.max()),
                                         params={}, metrics={})
        await registry.promote(record.version)
        return record.version
    finally:
        await pool.close()


async def test_replay_through_the_live_service_and_backtest_make_identical_signals_and_orders(
        shared_data: Path, pg_dsn: str) -> None:
    await apply_migrations(pg_dsn)
    version = await _champion(pg_dsn)
    outcome = await replay_compare(shared_data, SYMBOLS, pg_dsn, start_ms=START_MS, minutes=MINUTES,
                                   trading={"min_confidence": 0.5}, shards=2)
    bt = outcome.backtest
    assert bt.candles == MINUTES * len(SYMBOLS), "the backtest ran on exactly the candles the service received"
    assert len(bt.signals) >= 1, "precondition: the slice holds a real setup the model passes"
    assert all(s.model_version == version for s in bt.signals)
    assert any(o.type == "MARKET" for o in bt.orders), "an entry order went out"
    assert {o.type for o in bt.orders} >= {"MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"}

    assert sorted(outcome.live_signals) == outcome.backtest_signals, "same signal ids and sides"
    live = sorted((o.client_id, o.symbol, o.side, o.type, o.quantity, o.trigger_price) for o in outcome.live_orders)
    back = sorted((o.client_id, o.symbol, o.side, o.type, o.quantity, o.trigger_price) for o in bt.orders)
    assert live == back, "same client ids, sides, types, quantities and trigger prices"
    assert outcome.identical
