"""The service in paper mode with a champion: the model loads at start and scores every minute, the strategy's
signals become paper positions priced by the replayed candles, and the learner is attached.

The emulator replays real 2023 candles; the champion is a real LightGBM model trained on real candles; the
paper account is the simulated exchange account. One signal is built from a REAL setup row (a row of real
features that satisfies the ICT rules) and handed to the service's scored-batch hook, as the analyzer does.
At the end, the service's universe refresh carries a delisting announced on the emulator to the trading stack.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from shards.app import Service
from smc_quant.datasets import load_klines
from smc_quant.domain.trading import ExitReason, Trade
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import build_dataset
from smc_quant.model.scoring import Scores
from smc_quant.model.trainer import train
from smc_quant.paper import PaperBroker
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry
from smc_quant.store.trading import TradingRepository
from smc_quant.strategy import ScalperConfig, find_setups
from tests.integration.cluster_kit import settings_for

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


@dataclass(frozen=True)
class _Batch:
    shard: int
    symbols: tuple[str, ...]
    open_times: np.ndarray
    features: np.ndarray
    closes: np.ndarray
    schema_version: str = FEATURE_SCHEMA.version
    break_times: np.ndarray | None = None


async def _champion(dsn: str) -> int:
    """Train a real model on real candles (two symbols, 20k bars each) and make it the champion."""
    series = [s.slice(0, 20_000) for s in list(load_klines().values())[:2]]
    ds = await asyncio.to_thread(build_dataset, series, BarrierSpec(), 5)
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


def _real_setup() -> tuple[str, np.ndarray, float, int]:
    """A real feature row of SOLUSDT that satisfies the ICT rules, its side, close and open time."""
    series = load_klines()["SOLUSDT"]
    x, _ = FeatureEngineer().batch(series)
    setups = find_setups(x, ScalperConfig())
    assert len(setups.rows) > 0, "precondition: SOLUSDT 2023 has setups"
    row = int(setups.rows[0])
    return "SOLUSDT", x[row], float(series.close[row]), int(series.open_time[row])


async def test_paper_service_loads_the_champion_scores_minutes_and_trades_a_real_setup(
        shared_data: Path, pg_dsn: str) -> None:
    await apply_migrations(pg_dsn)
    version = await _champion(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=SYMBOLS, speed=240.0, updates_per_candle=1,
                                  max_minutes=60, start_paused=True))
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        await service.start()
        assert service.cluster is not None and service.scorer is not None and service.trading is not None
        assert service.scorer.predictor.version == version, "the champion loads at start"
        assert isinstance(service.trading.broker, PaperBroker), "no live trading in paper mode"
        assert service.learner is not None
        assert service.learner.labelling["min_history"] == 4320, "it labels rows with the live warm-up behind them"
        assert service.learner.labelling["barrier"]["horizon"] == 120, "over the 2-hour forced exit"
        await service.cluster.wait_subscribed()
        funding = service.trading.funding_feed
        assert funding is not None, "the funding stream is on by default"
        await asyncio.wait_for(funding.connection.subscribed.wait(), 10)
        emu.resume()
        await service.cluster.wait_until(emu.start_ms + 5 * 60_000)
        emu.pause()
        assert len(funding.book) == len(SYMBOLS)  # every symbol's rate, from the stream alone
        assert service.scorer.batches_scored >= 5 and service.scorer.batches_unscored == 0
        # the paper account is priced by the replayed candles
        paper = service.trading.paper
        last = emu.candles("SOLUSDT")[-1]
        assert paper.account.last_price("SOLUSDT") is not None
        assert float(paper.account.last_price("SOLUSDT")) == pytest.approx(last.close)
        # and the correlation guard's ring holds every replayed close
        window = service.trading.returns.window("SOLUSDT", last.open_time)
        replayed = emu.candles("SOLUSDT")
        assert window is not None and list(window[-len(replayed):]) == [c.close for c in replayed]

        # a real setup row, scored high, handed over exactly as the analyzer → scorer hook does
        symbol, row, _, _ = _real_setup()
        batch = _Batch(0, (symbol,), np.array([last.open_time]), row.reshape(1, -1), np.array([last.close]))
        service.trading.on_scores(batch, Scores(batch.symbols, batch.open_times, np.array([0.9])))
        executor = service.trading.executor
        await executor.idle()
        assert symbol in executor.book, executor.stats
        position = executor.book[symbol].position
        assert position.stop_price is not None and position.target_price is not None
        algos = paper.account.open_algo_orders(symbol)
        assert {a.type for a in algos} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}

        repo = TradingRepository(service.pool)
        stored = await repo.open_positions()
        assert [p.symbol for p, _ in stored] == [symbol]
        assert stored[0][0].entry_time_ms == position.entry_time_ms
        assert (await repo.signal(position.signal_id)) is not None
        metrics = service._extra_metrics()
        assert metrics["executor_open_positions"] == 1 and metrics["model_version"] == version
        assert metrics["funding_symbols"] == len(SYMBOLS) and metrics["executor_funding_unknown"] == 0
        assert any(k.startswith("learner_") for k in metrics)
        assert service.housekeeper is not None and "housekeeping_runs" in metrics

        # a restart keeps the paper account: the position (re-protected at the "exchange") and the balance
        wallet, held = paper.account.balance().wallet, paper.account.positions()
        await service.stop()
        service = Service(settings_for(emu, pg_dsn, shards=2))
        await service.start()
        assert service.trading is not None and service.trading.paper is not None
        again = service.trading.paper.account
        assert again is not paper.account and again.balance().wallet == wallet < 10_000  # the entry fee is paid
        assert [(p.symbol, p.side, p.quantity, p.entry_price, p.leverage) for p in again.positions()] == [
            (p.symbol, p.side, p.quantity, p.entry_price, p.leverage) for p in held]
        assert service.trading.executor.book[symbol].position.entry_time_ms == position.entry_time_ms
        assert {a.type for a in again.open_algo_orders(symbol)} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
        assert await TradingRepository(service.pool).open_alarms() == []  # nothing "vanished"

        # the service's universe refresh: SOLUSDT's delisting, announced 10 minutes ahead, reaches the risk
        # manager, and the open position is closed before it and stored with its reason
        executor = service.trading.executor
        closed: asyncio.Queue[Trade] = asyncio.Queue()
        executor.add_trade_listener(closed.put_nowait)
        at = service.trading.clock() + 10 * 60_000
        emu.market.schedule_delisting(symbol, at)
        change = await service.refresh_universe()
        assert change is not None and change.added == change.removed == ()
        assert service.trading.risk.delistings == {symbol: at}
        assert await executor.check_exits() == 1
        trade = await asyncio.wait_for(closed.get(), 10.0)
        assert (trade.symbol, trade.exit_reason) == (symbol, ExitReason.DELISTING)
        assert [t.exit_reason for t in await TradingRepository(service.pool).trades()] == [ExitReason.DELISTING]

        # the delisting took place: the exchange lists the symbol as SETTLING, the refresh removes it, and it
        # stops counting for /health (a silent stream would otherwise keep its shard below the fresh fraction)
        emu.market.settle_delisting(symbol)
        change = await service.refresh_universe()
        assert change is not None and change.removed == (symbol,)
        assert service.cluster is not None and service.ops is not None
        assert sorted(s for m in service.cluster.metrics for s in m.symbols) == sorted(set(SYMBOLS) - {symbol})
        _ok, body = service.ops.health()
        assert sum(shard["symbols"] for shard in body["shards"]) == len(SYMBOLS) - 1  # type: ignore[union-attr]
        # listed again (a halt lifted): it counts again, its stream never left
        emu.market.list_again(symbol)
        change = await service.refresh_universe()
        assert change is not None and change.added == (symbol,)
        assert sorted(s for m in service.cluster.metrics for s in m.symbols) == sorted(SYMBOLS)
    finally:
        await service.stop()
        await emu.stop()
