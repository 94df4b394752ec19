"""The Learner on a real PostgreSQL (registry + trading repository) and real 1m candles of ../shared/data."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import lightgbm as lgb
import numpy as np
import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.candles import Candle
from smc_quant.domain.trading import ExitReason, PositionSide, Trade
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.labels import BarrierSpec
from smc_quant.model.cli_tasks import _gate, latest_window
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.gate import NotEnoughData
from smc_quant.model.learner import Learner, LearnerConfig, LearnOutcome, _fit, candle_history, experience_dataset
from smc_quant.model.trainer import FeatureSchemaMismatch, TrainConfig, TrainedModel, TrainingAborted, shuffled, train
from smc_quant.notify import learned
from smc_quant.store.candles import CandleRepository
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry
from smc_quant.store.trading import TradingRepository

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
HISTORY_BARS, LIVE_BARS = 30_000, 36_000
PAIR = ("BTCUSDT", "SOLUSDT")  # same time range in the data set


@dataclass(frozen=True)
class RealData:
    history: Dataset
    live: Dataset  # setups after the history's candles: the "closed trades" of the tests


@pytest.fixture(scope="module")
def real(shared_data: Path) -> RealData:
    """Labelled setups of the first 30,000 real candles of 4 symbols, and of the next 6,000 (their labels
    play the closed trades' realised returns). The fixed-barrier candidates are used: on this early slice
    their labels carry a clear signal (AUC ≈ 0.65), so "better" and "worse" are unambiguous; the learner
    does not depend on how the history loader picked its setups."""
    series = [read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz").slice(0, LIVE_BARS) for s in SYMBOLS]
    history = build_dataset([s.slice(0, HISTORY_BARS) for s in series], BarrierSpec(), every=5, source="candidates")
    everything = build_dataset(series, BarrierSpec(), every=5, source="candidates")
    live = everything.take(np.flatnonzero(everything.start > history.end.max()).astype(np.int64))
    return RealData(history, live)


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    warning = info
    error = info


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[tuple[ModelRegistry, TradingRepository]]:
    """The model registry and the trading repository on a freshly migrated database."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn)
    try:
        yield ModelRegistry(pool), TradingRepository(pool)
    finally:
        await pool.close()


async def _close_trades(repo: TradingRepository, live: Dataset, rows: range, schema: str = FEATURE_SCHEMA.version,
                        tag: str = "t") -> None:
    """Write closed trades for live setups ``rows``: real signal-time features, the label's net % as the result."""
    for k in rows:
        side: PositionSide = "LONG" if live.side[k] > 0 else "SHORT"
        entry = Decimal("100")
        move = Decimal(repr(round(float(live.ret_pct[k]), 6))) * int(live.side[k])
        trade = Trade(f"{tag}{k}", live.symbols[live.symbol[k]], side, Decimal("1"), entry, entry + move,
                      int(live.start[k]), int(live.end[k]), Decimal("0"),
                      ExitReason.TAKE_PROFIT if live.win[k] else
                      ExitReason.TIME if live.ret_pct[k] > 0 else ExitReason.STOP_LOSS)
        assert await repo.close_trade(trade, features=live.x[k].tolist(), schema_version=schema,
                                      signal_time_ms=int(live.start[k]), model_version=None) is not None


def _loader(ds: Dataset) -> Any:
    async def load() -> Dataset:
        return ds
    return load


async def _rounds(learner: Learner, n: int, limit_s: float = 240) -> LearnOutcome | None:
    """Run the learner's loop until it has finished ``n`` rounds in all (bounded), then stop it: the last outcome."""
    task = asyncio.create_task(learner.run())
    try:
        return await asyncio.wait_for(learner.wait_rounds(n), timeout=limit_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _shuffled(ds: Dataset) -> Dataset:
    """History whose training part (the earliest 75 %, all before the learner's 20 % held-out window) has
    shuffled labels: a challenger trained on it is label-blind, while the gate still scores real labels."""
    early = int(0.75 * len(ds))
    return replace(ds, win=np.concatenate([shuffled(ds.win[:early], seed=3), ds.win[early:]]))


async def test_retrains_after_n_closed_trades_from_the_experience_table(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData) -> None:
    """Four closed trades do not trigger a retrain, the fifth does; the round trains on history + those five
    experience rows, and with no champion the first challenger above chance becomes champion (hook called)."""
    registry, repo = stores
    promoted: list[int] = []
    log = _Log()
    learner = Learner(repo, registry, _loader(real.history), LearnerConfig(retrain_every=5, cold_start=False),
                      log=log, on_promoted=promoted.append)
    task = asyncio.create_task(learner.run())
    try:
        await _close_trades(repo, real.live, range(4))
        for _ in range(4):
            learner.on_trade_closed()
        assert not learner.pending and learner.stats.rounds == 0
        await _close_trades(repo, real.live, range(4, 5))
        learner.on_trade_closed()
        outcome = await asyncio.wait_for(learner.wait_rounds(1), timeout=240)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert outcome is not None and outcome.trigger == "trades" and outcome.experience_rows == 5
    assert outcome.promoted and outcome.champion_version is None and outcome.challenger_auc > 0.51
    assert promoted == [outcome.version]
    champion = await registry.champion()
    assert champion is not None and champion.version == outcome.version
    assert champion.metrics["experience_rows"] == 5 and len(champion.metrics["holdout"]["win"]) == outcome.holdout_rows
    assert champion.train_end < champion.metrics["holdout_start"]  # purged: no training label reaches the window
    event, kw = log.lines[-1]
    assert event == "learner_promoted" and kw["champion_auc"] is None and "beats champion" in kw["reason"]
    assert learner.stats.metrics()["learner_promoted"] == 1.0


async def test_better_challenger_promoted_worse_one_rejected(stores: tuple[ModelRegistry, TradingRepository],
                                                            real: RealData) -> None:
    """A champion trained on shuffled labels is replaced by a real challenger; a challenger trained on
    shuffled labels is then rejected, the champion kept, and the log line carries both scores and why."""
    registry, repo = stores
    h = real.history
    blind = train(h.x, shuffled(h.win, seed=5), TrainConfig())
    record = await registry.register(blind, train_start=int(h.start.min()), train_end=int(h.end.max()),
                                     params={}, metrics={})
    await registry.promote(record.version)
    await _close_trades(repo, real.live, range(30))
    log = _Log()
    better = await Learner(repo, registry, _loader(h), log=log).learn_once()
    assert better.promoted and better.champion_version == record.version
    assert better.champion_auc is not None and better.challenger_auc > better.champion_auc + 0.01
    assert better.experience_rows == 30
    assert better.champion_edge is False  # the label-blind champion fails the floor it would have to clear
    assert better.champion_reason.startswith(f"champion v{record.version} AUC")
    assert ("learner_champion_no_edge", {"champion": record.version, "replaced": True,
                                         "reason": better.champion_reason}) in log.lines
    text = learned(better)
    assert text is not None and text.startswith(f"MODEL v{better.version} replaces v{record.version} · AUC")

    worse = await Learner(repo, registry, _loader(_shuffled(h)), log=log).learn_once()
    assert not worse.promoted and worse.champion_version == better.version
    assert abs(worse.challenger_auc - 0.5) < 0.08 and worse.champion_auc is not None and worse.champion_auc > 0.6
    assert worse.champion_edge is True and learned(worse) is None  # kept, with an edge: nothing to tell
    champion = await registry.champion()
    assert champion is not None and champion.version == better.version
    statuses = {r.version: r.status for r in await registry.list()}
    assert statuses == {record.version: "retired", better.version: "champion", worse.version: "candidate"}
    event, kw = log.lines[-1]
    assert event == "learner_kept_champion" and kw["version"] == worse.version
    assert kw["challenger_auc"] == round(worse.challenger_auc, 4) and kw["champion_auc"] == round(
        worse.champion_auc or 0, 4)
    assert kw["reason"].startswith("challenger AUC")


async def test_a_kept_champion_with_no_edge_left_is_reported_and_a_failing_report_does_not_fail_the_round(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData) -> None:
    """A gate no challenger can pass (margin 0.45) keeps a label-blind champion: the round says the champion
    has no edge (outcome, counter, metrics, log), hands the outcome to ``on_outcome`` — whose text warns the
    trader — and a hook that raises is logged while the round still counts."""
    registry, repo = stores
    h = real.history
    blind = train(h.x, shuffled(h.win, seed=5), TrainConfig())
    record = await registry.register(blind, train_start=int(h.start.min()), train_end=int(h.end.max()),
                                     params={}, metrics={})
    await registry.promote(record.version)
    reports: list[Any] = []
    log = _Log()
    learner = Learner(repo, registry, _loader(h), LearnerConfig(margin=0.45), on_outcome=reports.append, log=log)
    outcome = await learner.learn_once()
    assert not outcome.promoted and outcome.champion_version == record.version and outcome.champion_edge is False
    assert reports == [outcome] and learner.stats.champion_no_edge == 1
    metrics = learner.stats.metrics()
    assert metrics["learner_last_champion_edge"] == 0.0 and metrics["learner_champion_no_edge"] == 1.0
    assert metrics["learner_last_champion_auc"] == outcome.champion_auc
    assert learned(outcome) == (f"MODEL champion v{record.version} shows no edge on the latest window · "
                                f"champion v{record.version} AUC {outcome.champion_auc:.4f} is not above chance + "
                                f"0.45 · it trades until a challenger beats it (smc-quant halt / rollback)")

    def broken(_outcome: Any) -> None:
        raise RuntimeError("chat down")

    failing = Learner(repo, registry, _loader(h), LearnerConfig(margin=0.45), on_outcome=broken, log=log)
    again = await failing.learn_once()
    assert not again.promoted and failing.stats.rounds == 1 and failing.stats.last == again
    assert log.lines[-1] == ("learner_outcome_hook_failed", {"error": "RuntimeError: chat down"})


class OperatorMidRound(ModelRegistry):
    """The registry, with an operator's ``smc-quant promote`` landing while a learner round runs (between the
    round's read of the champion and its promotion): the interleaving injected, the registry itself real."""

    chosen: int | None = None

    async def register(self, *args: Any, **kwargs: Any) -> Any:
        if self.chosen is not None:
            await self.promote(self.chosen)
        return await super().register(*args, **kwargs)


async def test_a_promotion_made_against_a_champion_that_changed_meanwhile_is_not_made(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData) -> None:
    """The round's gate was decided against "no champion"; an operator promotes a model before the round ends. The
    challenger is registered but not promoted (``learner_promotion_superseded``): the operator's choice stands and
    the next round gates against it. The learner used to promote at the end of its round whatever happened since."""
    registry, repo = stores
    mid = OperatorMidRound(registry._pool)
    operators = await registry.register(TrainedModel(train(real.history.x, real.history.win).booster,
                                                     FEATURE_SCHEMA.version), train_start=0, train_end=1,
                                        params={}, metrics={})
    mid.chosen = operators.version
    promoted: list[int] = []
    log = _Log()
    outcome = await Learner(repo, mid, _loader(real.history), log=log, on_promoted=promoted.append).learn_once()
    assert outcome.champion_version is None and outcome.challenger_auc > 0.51  # the gate passed it against none
    assert not outcome.promoted and outcome.reason.endswith("not promoted: the champion changed during the round")
    champion = await registry.champion()
    assert champion is not None and champion.version == operators.version and promoted == []
    assert [e for e, _ in log.lines].count("learner_promotion_superseded") == 1


async def test_a_trade_is_labelled_by_the_history_labels_rule(stores: tuple[ModelRegistry, TradingRepository],
                                                              real: RealData) -> None:
    """A closed trade's training label is the history labels' (``triple_barrier``: the target was hit), so one setup
    gets one label from both sources: a trade closed at the time limit with a net gain is not a win. Trade rows
    used to be labelled ``net_return_pct > 0`` — on the strategy's setups 29 % more wins than the history's rule."""
    _, repo = stores
    live = real.live
    gains_at_the_limit = [k for k in range(len(live)) if not live.win[k] and live.ret_pct[k] > 0][:5]
    wins = [k for k in range(len(live)) if live.win[k]][:5]
    assert len(gains_at_the_limit) == 5 and len(wins) == 5, "precondition: both kinds among the real setups"
    for k in sorted(gains_at_the_limit + wins):
        await _close_trades(repo, live, range(k, k + 1))
    ds, refused = experience_dataset(await repo.experience(FEATURE_SCHEMA.version), FEATURE_SCHEMA.version)
    expected = live.take(np.array(sorted(gains_at_the_limit + wins)))
    assert refused == 0 and ds.ret_pct.tolist() == pytest.approx(expected.ret_pct.tolist(), abs=1e-6)
    assert ds.win.tolist() == expected.win.tolist() and ds.win.sum() == 5
    # a trade we cut short has no such outcome: a rotation (in profit by rule), the breaker, a reconciled exit…
    rows = await repo.experience(FEATURE_SCHEMA.version)
    cut = [replace(rows[0], exit_reason=r.value) for r in (ExitReason.ROTATION, ExitReason.BREAKER,
                                                           ExitReason.RECONCILED, ExitReason.MANUAL)]
    kept = [replace(rows[0], exit_reason=r.value) for r in (ExitReason.TIME, ExitReason.LIQUIDATION)]
    ds, refused = experience_dataset([*cut, *kept], FEATURE_SCHEMA.version)
    assert (len(ds), refused, ds.win.tolist()) == (2, 4, [0, 0])


def test_a_purge_that_leaves_too_few_training_rows_waits_for_data(real: RealData) -> None:
    """Label windows that all reach into the held-out window leave nothing to train on: the round waits for data
    (``learner_waiting_for_data``, counted ``waiting``), like the other too-little-data cases — it used to raise a
    plain ValueError, counted ``failed`` and logged ``learner_round_failed``, the line meant for alerts."""
    reaching = replace(real.history, end=np.full_like(real.history.end, int(real.history.start.max())))
    with pytest.raises(NotEnoughData, match="training rows before the held-out window"):
        _fit(reaching, LearnerConfig())


async def test_schema_version_mismatch_is_refused(stores: tuple[ModelRegistry, TradingRepository],
                                                 real: RealData, pg_dsn: str) -> None:
    """A learner for another feature schema refuses to start; experience of another schema is never trained on;
    a champion of another schema cannot score and the floor decides (logged); rows of the wrong width are
    refused and counted."""
    registry, repo = stores
    with pytest.raises(FeatureSchemaMismatch, match="retrain"):
        Learner(repo, registry, _loader(real.history), schema_version="smc-features/0")
    await _close_trades(repo, real.live, range(10), schema="smc-features/0", tag="old")
    await _close_trades(repo, real.live, range(10, 13))
    outcome = await Learner(repo, registry, _loader(real.history)).learn_once()
    assert outcome.experience_rows == 3
    stale = await registry.register(TrainedModel(train(real.history.x, real.history.win).booster, "smc-features/0"),
                                    train_start=0, train_end=1, params={}, metrics={})
    await registry.promote(outcome.version)
    conn = await asyncpg.connect(pg_dsn)  # a champion left over from an older schema (SQL: promote refuses it)
    try:
        await conn.execute("UPDATE models SET status = 'retired' WHERE status = 'champion'")
        await conn.execute("UPDATE models SET status = 'champion', promoted_at = now() WHERE version = $1",
                           stale.version)
    finally:
        await conn.close()
    # a champion the engine refuses counts as none: the cold start comes at once, not after the day-long schedule
    assert await registry.usable_champion() is None
    cold = Learner(repo, registry, _loader(real.history))
    await cold.prepare()
    assert cold.pending and await cold._next_wait() == LearnerConfig().idle_retry_s
    log = _Log()
    replaced = await Learner(repo, registry, _loader(real.history), log=log).learn_once()
    assert replaced.promoted and replaced.champion_version is None and "beats champion 0.5000" in replaced.reason
    assert ("learner_champion_unusable", {"champion": stale.version, "error": log.lines[0][1]["error"]}) == log.lines[0]
    assert "retrain" in log.lines[0][1]["error"]
    # a rollback never reinstates a model of another schema, however recently it was champion
    assert (await registry.rollback()).version == outcome.version
    rows = await repo.experience(FEATURE_SCHEMA.version)
    bad = [replace(rows[0], features=rows[0].features[:-1]), replace(rows[1], schema_version="smc-features/0"),
           replace(rows[2], net_return_pct=float("nan"))]
    ds, refused = experience_dataset([*bad, rows[0]], FEATURE_SCHEMA.version, weight=3.0)
    assert (len(ds), refused) == (1, 3)
    assert ds.weight.tolist() == [3.0] and ds.is_setup.all() and ds.win[0] == int(rows[0].exit_reason == "take_profit")


async def test_training_does_not_stall_the_event_loop(stores: tuple[ModelRegistry, TradingRepository],
                                                      real: RealData) -> None:
    """A heartbeat task keeps ticking while the challenger trains (LightGBM runs in a worker thread)."""
    registry, repo = stores
    learner = Learner(repo, registry, _loader(real.history), LearnerConfig(train=TrainConfig(num_rounds=400)))
    ticks_while_training = 0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks_while_training
        while not done.is_set():
            await asyncio.sleep(0.001)
            ticks_while_training += learner.stats.training

    beat = asyncio.create_task(heartbeat())
    try:
        outcome = await learner.learn_once("schedule")
    finally:
        done.set()
        await beat
    assert outcome.trigger == "schedule" and outcome.train_rows > 1000
    assert ticks_while_training >= 20


async def test_schedule_retrains_without_trades_and_a_failed_round_does_not_stop_the_loop(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData) -> None:
    """With no trades the schedule wakes the loop; a round whose history load fails is logged and counted, a
    round with too little history says it waits for data, and the next scheduled round trains normally."""
    registry, repo = stores
    calls = 0

    async def flaky() -> Dataset:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("candles unavailable")
        if calls == 2:
            return real.history.take(np.arange(10))  # a fresh database: ten labelled rows
        return real.history

    log = _Log()
    learner = Learner(repo, registry, flaky, LearnerConfig(retrain_interval_s=0.05, cold_start=False), log=log)
    outcome = await _rounds(learner, 3)
    assert learner.stats.failed == 1 and learner.stats.waiting == 1 and learner.stats.rounds >= 1
    assert log.lines[0] == ("learner_round_failed", {"trigger": "schedule", "error": "OSError: candles unavailable"})
    assert log.lines[1] == ("learner_waiting_for_data", {
        "trigger": "schedule", "reason": "10 rows are too few to hold out 10 and train on the rest"})
    assert outcome is not None and outcome.trigger == "schedule" and outcome.experience_rows == 0


async def test_cold_start_trains_a_champion_from_history_at_once(stores: tuple[ModelRegistry, TradingRepository],
                                                                  real: RealData) -> None:
    """With an empty registry the loop trains on history right away (no trade, no schedule needed) and
    crowns the challenger; with a champion present it waits."""
    registry, repo = stores
    promoted: list[int] = []

    async def swap(version: int) -> None:
        promoted.append(version)

    learner = Learner(repo, registry, _loader(real.history), on_promoted=swap)
    outcome = await _rounds(learner, 1)
    assert outcome is not None and outcome.trigger == "cold_start" and outcome.promoted
    assert promoted == [outcome.version] and outcome.experience_rows == 0
    again = Learner(repo, registry, _loader(real.history))
    await again.prepare()  # what run() does first
    assert not again.pending and again.stats.rounds == 0


async def test_without_a_champion_the_next_round_comes_soon_not_a_day_later(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData) -> None:
    """A fresh database: the cold start finds ten rows (the bootstrap candles are still arriving), the next
    round's challenger is label-blind and misses the gate. With no champion each next round comes after
    ``idle_retry_s``, not after the day-long schedule, until one is crowned; then the schedule holds."""
    registry, repo = stores
    calls = 0

    async def filling() -> Dataset:
        nonlocal calls
        calls += 1
        return {1: real.history.take(np.arange(10)), 2: _shuffled(real.history)}.get(calls, real.history)

    log = _Log()
    config = LearnerConfig(retrain_interval_s=1e9, idle_retry_s=0.05)
    learner = Learner(repo, registry, filling, config, log=log)
    outcome = await _rounds(learner, 3)
    assert await learner._next_wait() == 1e9, "a champion: back on the schedule"
    assert log.lines[0] == ("learner_waiting_for_data", {
        "trigger": "cold_start", "reason": "10 rows are too few to hold out 10 and train on the rest"})
    assert [kw["promoted"] for event, kw in log.lines[1:] if "promoted" in kw] == [False, True]
    assert outcome is not None and outcome.trigger == "schedule" and outcome.promoted
    assert (learner.stats.waiting, learner.stats.failed, learner.stats.rounds) == (1, 0, 2)
    assert await registry.champion() is not None and calls == 3


async def test_without_a_champion_the_retry_backs_off_up_to_the_schedule(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData) -> None:
    """Rounds in a row without a champion wait ``idle_retry_s`` doubled each time, capped at the schedule: a
    deployment whose challengers keep missing the gate does not retrain every few minutes for ever."""
    registry, repo = stores
    learner = Learner(repo, registry, _loader(real.history), LearnerConfig(retrain_interval_s=1.0, idle_retry_s=0.3))
    assert [await learner._next_wait() for _ in range(5)] == [0.3, 0.6, 1.0, 1.0, 1.0]
    assert await Learner(repo, registry, _loader(real.history),
                         LearnerConfig(retrain_interval_s=1.0, cold_start=False))._next_wait() == 1.0


async def test_history_loader_labels_the_candles_stored_in_postgres(pg_dsn: str, shared_data: Path) -> None:
    """``candle_history`` over ``CandleRepository.fetch`` gives the same dataset as the candle files do
    (real candles written to PostgreSQL, only the requested look-back window and the warm-up before it read
    back, only the window labelled)."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn)
    try:
        candles_repo = CandleRepository(pool, synchronous_commit=True)
        series = [read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz").slice(0, 9_000) for s in PAIR]
        for s in series:
            await candles_repo.upsert([Candle(s.symbol, "1m", int(t), float(o), float(h), float(lo), float(c), float(v))
                                       for t, o, h, lo, c, v in zip(s.open_time, s.open, s.high, s.low, s.close,
                                                                    s.volume, strict=True)])
        now = int(series[0].open_time[-1])
        window, warm = 6_000 * 60_000, 2_000
        loader = candle_history(candles_repo.fetch, [*PAIR, "NOSUCHUSDT"], window, lambda: now, min_history=warm)
        got = await loader()
        want_series = [s.slice(int(np.searchsorted(s.open_time, now - window - warm * 60_000)), len(s))
                       for s in series]
        want = build_dataset(want_series, BarrierSpec(), every=5, source="broad", min_history=warm)
        assert len(got) == len(want) > 500 and got.symbols == PAIR
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.win, want.win)
        np.testing.assert_array_equal(got.is_setup, want.is_setup)
        assert got.start.min() >= now - window

        # a candidate the learner trains on it says how its data was labelled, and `promote --data` labels its gate
        # window the same way (it used to label learner-made candidates as `candidates` with fixed barriers)
        registry = ModelRegistry(pool)
        outcome = await Learner(TradingRepository(pool), registry, loader).learn_once()
        record = await registry.get(outcome.version)
        assert record is not None
        assert {k: record.params[k] for k in ("source", "every", "barrier", "min_history")} == {
            "source": "broad", "every": 5, "barrier": asdict(BarrierSpec()), "min_history": warm}
        said: list[str] = []
        await _gate(registry, record, None, want_series, None, 0.01, 1.645, 1.645, None, said.append)
        window_rows = latest_window(want, record.train_end)
        assert len(window_rows) > 0 and f"gate window: {len(window_rows):,} setups after" in said[-1]
    finally:
        await pool.close()


async def test_a_learner_whose_start_fails_logs_it_and_keeps_running(pg_dsn: str, real: RealData) -> None:
    """The database is gone when the loop starts: its start (the trade count, the champion) fails. That is
    logged and counted, and the loop goes on to its rounds (each failing the same way, logged) — it used to end
    there, silently, until a restart."""
    pool = await create_pool(pg_dsn, max_size=1)
    await pool.close()
    log = _Log()
    learner = Learner(TradingRepository(pool), ModelRegistry(pool), _loader(real.history),
                      LearnerConfig(idle_retry_s=0.01), log=log)
    await _rounds(learner, 3, limit_s=60)  # the failed start and two failed rounds
    events = [event for event, _ in log.lines]
    assert events[0] == "learner_prepare_failed" and events.count("learner_round_failed") >= 2
    assert learner.stats.failed >= 3


async def test_a_running_process_follows_the_registry_champion_promote_rollback_and_refusal(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData, pg_dsn: str) -> None:
    """What the service and each shard worker run every minute: an operator's promote and rollback reach the
    model they score with (the service used to keep its start-up champion until a restart); a champion the
    engine refuses is logged and the loaded one stays."""
    from shards.champion import load_champion
    from smc_quant.model.predictor import MLPredictor

    registry, _ = stores
    booster = train(real.history.x, real.history.win).booster
    one, two = [await registry.register(TrainedModel(booster), train_start=0, train_end=1, params={}, metrics={})
                for _ in range(2)]
    predictor, log = MLPredictor(), _Log()
    assert await load_champion(registry, predictor, log) and not predictor.ready  # no champion: no model
    await registry.promote(one.version)
    assert await load_champion(registry, predictor, log) and predictor.version == one.version
    await registry.promote(two.version)
    assert await load_champion(registry, predictor, log) and predictor.version == two.version
    await registry.rollback()
    assert await load_champion(registry, predictor, log) and predictor.version == one.version
    stale = await registry.register(TrainedModel(booster, "smc-features/0"), train_start=0, train_end=1, params={},
                                    metrics={})
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE models SET status = 'retired' WHERE status = 'champion'")
        await conn.execute("UPDATE models SET status = 'champion' WHERE version = $1", stale.version)
    finally:
        await conn.close()
    log.lines.clear()
    assert not await load_champion(registry, predictor, log) and predictor.version == one.version
    assert [event for event, _ in log.lines] == ["model_refused"]


async def test_the_schedule_counts_from_the_newest_model_not_from_the_start(
        stores: tuple[ModelRegistry, TradingRepository], real: RealData, pg_dsn: str) -> None:
    """A restart keeps the schedule: with a day between rounds and the newest model registered 25 hours ago,
    the first round is due at once (restarted every day, the service used to wait a whole day from each start
    and never retrained on schedule); registered 23 hours ago, it is due an hour later."""
    registry, repo = stores
    first = await Learner(repo, registry, _loader(real.history)).learn_once()
    day = 24 * 3600.0
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE models SET created_at = created_at - interval '25 hours'")
    finally:
        await conn.close()
    newest = await registry.newest_created_ms()
    assert newest is not None
    config = LearnerConfig(retrain_interval_s=day, cold_start=False)
    later = Learner(repo, registry, _loader(real.history), config, clock=lambda: newest + 23 * 3_600_000)
    await later.prepare()
    assert later.schedule_left_s() == 3600.0 and not later.pending
    learner = Learner(repo, registry, _loader(real.history), config)  # the wall clock: 25 hours since
    outcome = await _rounds(learner, 1)
    assert outcome is not None and outcome.trigger == "schedule" and outcome.version > first.version


async def test_a_cancelled_round_stops_its_training_thread(stores: tuple[ModelRegistry, TradingRepository],
                                                           real: RealData, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service stops mid-training: its learner task is cancelled, but not the worker thread, which the runner's exit
    waits for. The round sets its abort flag, LightGBM stops at its next iteration, nothing is registered or counted;
    the thread used to train on for all 60,000 rounds (about 2 minutes here). An unset flag changes no model."""
    registry, repo = stores
    h, loop, began, ended, raised = real.history, asyncio.get_running_loop(), asyncio.Event(), threading.Event(), []
    assert train(h.x, h.win, abort=threading.Event()).to_string() == train(h.x, h.win).to_string()

    def observed(*args: Any, real_train: Any = lgb.train, callbacks: list[Any] | None = None, **kwargs: Any) -> Any:
        def first(env: Any) -> None:
            if env.iteration == env.begin_iteration:
                loop.call_soon_threadsafe(began.set)  # boosting has begun in the worker thread
        try:
            return real_train(*args, callbacks=[*(callbacks or []), first], **kwargs)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            ended.set()

    monkeypatch.setattr(lgb, "train", observed)
    log = _Log()
    learner = Learner(repo, registry, _loader(h), LearnerConfig(train=TrainConfig(num_rounds=60_000)), log=log)
    task = asyncio.create_task(learner.run())  # an empty registry: the cold-start round begins at once
    await asyncio.wait_for(began.wait(), timeout=60)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await asyncio.to_thread(ended.wait, 60), "the training thread is still training"
    assert task.cancelled() and len(raised) == 1 and isinstance(raised[0], TrainingAborted)
    assert await registry.list() == [] and log.lines == []
    assert (learner.stats.training, learner.stats.rounds, learner.stats.failed) == (False, 0, 0)
