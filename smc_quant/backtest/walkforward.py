"""Walk-forward backtest: the live :class:`~smc_quant.model.learner.Learner` retrains on a rolling window and
the next stretch is traded out of sample by the model it promoted.

What runs is the service's learner loop itself (``Learner.run``): cold start (no champion → one round on the
history at once), a round after every ``retrain_every`` closed trades (the executor's trade listener calls
``Learner.on_trade_closed``, as in ``shards/app.py``), and a round every ``retrain_interval_s`` of *candle*
time (the backtest triggers the schedule; the live loop waits on the wall clock). Each round is the live one:
history = the last ``history_days`` of every symbol's candles before the current minute, labelled by
``build_dataset(source="broad")`` with the ``min_history`` candles before them as warm-up (the ``candle_history``
loader's call) + the backtest's own closed trades as
weighted experience rows, purged latest split, challenger trained, gate on the held-out window against the
champion, promote or keep. A promoted model is loaded into the predictor that scores the next minute.

Simulated, not live: the round completes within the minute that triggered it (live, trading continues on
the old champion for the seconds the worker thread needs); the registry and the experience store are in
memory (:class:`MemoryRegistry`, :class:`MemoryExperience`) instead of PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from smc_quant.backtest.engine import BacktestConfig, BacktestResult, Prepared, Progress, run_backtest
from smc_quant.backtest.stack import quiet_logger
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.series import KlineSeries
from smc_quant.domain.trading import ExperienceRow, Signal, Trade
from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.learner import Learner, LearnerConfig, LearnOutcome
from smc_quant.model.predictor import MLPredictor
from smc_quant.model.trainer import TrainedModel
from smc_quant.store.models import ModelRecord

__all__ = ["MemoryExperience", "MemoryRegistry", "WalkForwardConfig", "WalkForwardResult", "walk_forward"]

DAY_MS = 86_400_000


class _Now:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class MemoryRegistry:
    """The learner's :class:`~smc_quant.model.learner.Registry` protocol in memory, stamped with candle time."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._models: dict[int, TrainedModel] = {}
        self._records: dict[int, ModelRecord] = {}
        self._champion: int | None = None

    async def register(self, model: TrainedModel, *, train_start: int, train_end: int,
                       params: Mapping[str, Any], metrics: Mapping[str, Any]) -> ModelRecord:
        version = len(self._records) + 1
        rec = ModelRecord(version, "candidate", model.feature_schema, train_start, train_end, dict(params),
                          dict(metrics), _when(self._clock()), None, None, None)
        self._models[version], self._records[version] = model, rec
        return rec

    async def champion(self) -> ModelRecord | None:
        return None if self._champion is None else self._records[self._champion]

    async def usable_champion(self) -> ModelRecord | None:
        return await self.champion()  # one run, one feature schema

    async def load(self, version: int) -> TrainedModel:
        return self._models[version]

    async def promote(self, version: int) -> ModelRecord:
        from dataclasses import replace

        if self._champion is not None:
            old = self._records[self._champion]
            self._records[old.version] = replace(old, status="retired", retired_at=_when(self._clock()))
        self._records[version] = replace(self._records[version], status="champion", promoted_at=_when(self._clock()))
        self._champion = version
        return self._records[version]

    async def promote_over(self, version: int, champion: int | None) -> ModelRecord | None:
        return await self.promote(version) if self._champion == champion else None

    async def list(self) -> list[ModelRecord]:
        return [self._records[v] for v in sorted(self._records)]

    async def newest_created_ms(self) -> int | None:
        return max((int(r.created_at.timestamp() * 1000) for r in self._records.values()), default=None)


class MemoryExperience:
    """The learner's experience source in memory: the backtest's closed trades with their signal features."""

    def __init__(self) -> None:
        self.rows: list[ExperienceRow] = []

    def add(self, trade: Trade, signal: Signal | None) -> None:
        if signal is None:
            return
        self.rows.append(ExperienceRow(trade.symbol, trade.side, signal.features, signal.schema_version,
                                       trade.net_return_pct, signal.open_time, trade.exit_time_ms,
                                       signal.model_version, trade.exit_reason.value))

    async def experience(self, schema_version: str, since_ms: int | None = None) -> list[ExperienceRow]:
        return [r for r in self.rows if r.schema_version == schema_version
                and (since_ms is None or r.closed_ms >= since_ms)]

    async def trades_count(self, since_ms: int | None = None) -> int:
        return sum(1 for r in self.rows if since_ms is None or r.closed_ms >= since_ms)


@dataclass(frozen=True)
class WalkForwardConfig:
    """The learner's cadence (the service's defaults) and the rolling history window."""

    history_days: float = 7.0
    min_history: int = 4320
    """Candles before the history window that only warm the features up (``learner.min_history_candles``)."""
    retrain_every: int = 50
    retrain_interval_s: float = 86_400.0
    margin: float = 0.01
    z: float = 1.645
    paired_z: float = 1.645
    every: int = 5
    """A broad candidate every N bars in the history datasets (the ``candle_history`` default)."""


@dataclass
class WalkForwardResult:
    """The traded result, every learner round, and the first out-of-sample minute."""

    result: BacktestResult
    rounds: list[dict[str, Any]] = field(default_factory=list)
    trade_start_ms: int = 0


def _history(series: Mapping[str, KlineSeries], now: _Now, lookback_ms: int, every: int, rules: Any,
             min_history: int) -> Any:
    """``candle_history`` over the in-memory series: the same window, warm-up and labelling."""
    spec = BarrierSpec()

    async def load() -> Dataset:
        end = now()
        parts = []
        for s in series.values():
            lo, hi = np.searchsorted(s.open_time, [end - lookback_ms - min_history * MINUTE_MS, end])
            if hi - lo > min_history + spec.horizon:
                parts.append(s.slice(int(lo), int(hi)))
        return await asyncio.to_thread(build_dataset, parts, spec, every, "trend_1m", None, "broad", rules,
                                       min_history=min_history)

    return load


def _round_row(o: LearnOutcome, at_ms: int) -> dict[str, Any]:
    return {"at_ms": at_ms, "version": o.version, "promoted": o.promoted, "reason": o.reason, "trigger": o.trigger,
            "challenger_auc": o.challenger_auc, "champion_auc": o.champion_auc, "train_rows": o.train_rows,
            "experience_rows": o.experience_rows, "champion_edge": o.champion_edge}


async def walk_forward(prepared: Prepared, filters: Mapping[str, SymbolFilters],
                       brackets: Mapping[str, SymbolBrackets], config: BacktestConfig | None = None,
                       wf: WalkForwardConfig | None = None, *, progress: Progress | None = None) -> WalkForwardResult:
    """Trade from ``min_history`` minutes + ``history_days`` after the first candle (or ``config.start_ms`` if
    later) with the learner's models only (see the module docstring)."""
    from dataclasses import replace

    cfg = config or BacktestConfig()
    wf = wf or WalkForwardConfig()
    first = min(int(s.open_time[0]) for s in prepared.series.values())
    start = max(first + wf.min_history * MINUTE_MS + int(wf.history_days * DAY_MS), cfg.start_ms or 0)
    start -= start % MINUTE_MS
    now = _Now(start)
    predictor = MLPredictor()
    registry, experience = MemoryRegistry(now), MemoryExperience()

    async def promoted(version: int) -> None:
        predictor.load(await registry.load(version), version=version)

    learner = Learner(experience, registry,
                      _history(prepared.series, now, int(wf.history_days * DAY_MS), wf.every, cfg.rules(),
                               wf.min_history),
                      LearnerConfig(retrain_every=wf.retrain_every, retrain_interval_s=1e9, margin=wf.margin, z=wf.z,
                                    paired_z=wf.paired_z, cold_start=True), on_promoted=promoted, log=quiet_logger(),
                      schema_version=FEATURE_SCHEMA.version, clock=now)
    out = WalkForwardResult(result=None, trade_start_ms=start)  # type: ignore[arg-type]
    task = asyncio.create_task(learner.run(), name="walk-forward-learner")
    state = {"expected": 1, "schedule": 0, "last": start}
    try:
        await _await_round(learner, 1, out, start)

        async def on_minute(close_ms: int) -> None:
            now.ms = close_ms
            due = 1 + state["schedule"] + learner.stats.closed_trades // wf.retrain_every
            if due == state["expected"] and close_ms - state["last"] >= wf.retrain_interval_s * 1000:
                state["schedule"] += 1
                due += 1
                learner.trigger("schedule")
            if due > state["expected"]:
                state["expected"], state["last"] = due, close_ms
                await _await_round(learner, due, out, close_ms)

        def on_trade(trade: Trade, signal: Signal | None) -> None:
            experience.add(trade, signal)
            learner.on_trade_closed()

        out.result = await run_backtest(
            prepared, filters, brackets, replace(cfg, mode="model", start_ms=start),
            scorer=lambda x: predictor.predict_batch(x) if predictor.ready else None,
            model_version=lambda: predictor.version, progress=progress, on_minute=on_minute, on_trade=on_trade)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return out


async def _await_round(learner: Learner, n: int, out: WalkForwardResult, at_ms: int) -> None:
    """Wait for round ``n`` (waiting and failed rounds count, as in ``Learner.wait_rounds``) and record what
    finished."""
    last = await learner.wait_rounds(n)
    ok = sum(1 for r in out.rounds if not r.get("failed"))
    bad = len(out.rounds) - ok
    if learner.stats.rounds > ok and last is not None:
        out.rounds.append(_round_row(last, at_ms))
    if learner.stats.waiting + learner.stats.failed > bad:
        out.rounds.append({"at_ms": at_ms, "failed": True, "promoted": False,
                           "reason": "round failed (too little history or one class only; see the learner log)"})
