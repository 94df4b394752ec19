"""``Learner``: the self-learning loop — retrain on history + the system's own closed trades, promote only a
better model.

When: every ``retrain_every`` closed trades (:meth:`Learner.on_trade_closed` counts them; at start the
count resumes from the trades closed since the newest registered model), every ``retrain_interval_s``
seconds (the first one that long after the newest registered model: a restart keeps the schedule), and
once at start when there is no champion (cold start from history; otherwise the engine stays "no model,
not trading"). While there is no champion, the service is not trading and its history
grows by the minute (a fresh database is still fetching its bootstrap candles), so the next round comes
after ``idle_retry_s`` rather than a whole ``retrain_interval_s`` — whether the last one lacked data or
its challenger missed the gate (doubling with each such round in a row, up to ``retrain_interval_s``).
:meth:`Learner.run` waits on an event or that timeout — nothing polls.

What one round does (:meth:`Learner.learn_once`):

1. **Data.** The history loader gives labelled historical setups (a :class:`Dataset`, e.g. the ``"broad"``
   setups of the candles in PostgreSQL). The experience source gives the closed trades of the engine's
   feature schema; each becomes one training row: its frozen signal-time features, ``win`` = it exited at
   the take profit (the history labels' rule: ``ExperienceRow.win``), ``ret_pct = net_return_pct``, signal
   time as start, close time as label end, marked as a strategy setup. Experience rows are weighted
   ``experience_weight`` (default 3): they are the strategy's real fills and fees, the ground truth the history
   labels only approximate, and they are few. Rows of another schema version, of the wrong width, with a
   non-finite return, or of a trade the market did not end at its target, stop or time limit (rotated out, the
   breaker, a delisting, a person, reconciled: ``ExperienceRow.labelled``) are refused and counted.
2. **Split.** Everything is sorted by signal time; the latest ``holdout_fraction`` (at least
   ``min_holdout`` rows) is held out, and training keeps only rows whose label window ends before it
   (purge). The challenger is trained on those rows in a worker thread (``asyncio.to_thread``: LightGBM
   releases the GIL, so the event loop keeps running — tested with a heartbeat). A thread cannot be cancelled:
   when the round is (the service stopping), it sets the training's abort flag and LightGBM stops before its
   next boosting iteration — the runner's exit waits for the executor's threads, and would otherwise wait for
   the whole training. Such a round registers nothing and counts as nothing (the cancellation propagates).
3. **Gate.** Challenger and champion are scored on the same held-out rows — the strategy's setups there
   when there are ``min_gate_setups`` with both outcomes, else all held-out rows — and
   :func:`smc_quant.model.gate.decide` promotes only if the challenger's AUC is above ``0.5 + margin``
   and significantly above chance (``AUC − z·SE > 0.5``, ``z`` = ``SMC_LEARNER__PROMOTE_Z``, 1.645), and
   beats the champion's by ``margin`` and significantly (paired test of the difference on the same rows,
   ``paired_z`` = ``SMC_LEARNER__PROMOTE_PAIRED_Z``, 1.645). No champion (or one of another feature schema, which
   cannot score these rows: logged) → the first challenger above that floor becomes champion. The
   champion may have been trained on part of the window (when it is younger than the window's start);
   that can only flatter it, so the gate stays conservative.
4. **Register / promote.** The challenger is registered as a candidate either way (with the held-out
   window in its metrics, so ``smc-quant promote`` can re-gate it later without candles); promotion goes
   through the registry (one transaction), then the ``on_promoted(version)`` hook lets the service
   hot-swap its predictor. Every decision is logged as one structured line with both scores and the
   reason, and returned as a :class:`LearnOutcome`.

No SQL and no database driver here: the experience source, the registry and the candle reader are
injected (the PostgreSQL implementations are ``TradingRepository``, ``ModelRegistry`` and
``CandleRepository``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog

from smc_quant.domain.candles import MINUTE_MS, Candle
from smc_quant.domain.series import KlineSeries
from smc_quant.domain.trading import ExperienceRow
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.labels import BarrierSpec, SetupSource
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.gate import (
    NotEnoughData,
    chance_test,
    decide,
    gate_rows,
    holdout_to_json,
    split_latest,
    time_blocks,
)
from smc_quant.model.metrics import auc
from smc_quant.model.trainer import TrainConfig, TrainedModel, UnusableModel, check_schema, train
from smc_quant.strategy import ScalperConfig
from smc_quant.tasks import within

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smc_quant.settings import LearnerSettings
    from smc_quant.store.models import ModelRecord

HistoryLoader = Callable[[], Awaitable[Dataset]]
PromotedHook = Callable[[int], Awaitable[None] | None]
OutcomeHook = Callable[["LearnOutcome"], Awaitable[None] | None]
CandleFetch = Callable[[str, str, int, int], Awaitable[Sequence[Candle]]]
"""``(symbol, interval, start_ms, end_ms) -> candles, oldest first`` (``CandleRepository.fetch``)."""


class ExperienceSource(Protocol):
    """Where closed trades come from (``TradingRepository`` in the service)."""

    async def experience(self, schema_version: str, since_ms: int | None = None) -> list[ExperienceRow]: ...

    async def trades_count(self, since_ms: int | None = None) -> int: ...


class Registry(Protocol):
    """The model registry operations the learner uses (``smc_quant.store.models.ModelRegistry``)."""

    async def register(self, model: TrainedModel, *, train_start: int, train_end: int,
                       params: Mapping[str, Any], metrics: Mapping[str, Any]) -> ModelRecord: ...

    async def champion(self) -> ModelRecord | None: ...

    async def usable_champion(self) -> ModelRecord | None: ...

    async def load(self, version: int) -> TrainedModel: ...

    async def promote_over(self, version: int, champion: int | None) -> ModelRecord | None:
        """Promote ``version`` if ``champion`` is still the champion; ``None`` when it changed meanwhile."""
        ...

    async def newest_created_ms(self) -> int | None: ...


class Log(Protocol):
    """The structured logger the learner writes to (structlog's bound logger fits)."""

    def info(self, event: str, **kw: Any) -> Any: ...

    def warning(self, event: str, **kw: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class LearnerConfig:
    """When to retrain and how to gate (see the module docstring)."""

    retrain_every: int = 50
    retrain_interval_s: float = 24 * 3600.0
    margin: float = 0.01
    z: float = 1.645
    """Significance of the gate's chance test (``AUC − z·SE > 0.5``; 0: the margin alone)."""
    paired_z: float = 1.645
    """Significance of the gain over the champion (paired: ``ΔAUC − z·SE > 0``; 0: the margin alone)."""
    holdout_fraction: float = 0.2
    min_holdout: int = 50
    min_gate_setups: int = 100
    experience_weight: float = 3.0
    cold_start: bool = True
    """With no champion in the registry, :meth:`Learner.run` trains one round at once (on history)."""
    idle_retry_s: float = 300.0
    """With no champion (not trading, with cold_start on), the next round comes after this instead."""
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def of(cls, s: LearnerSettings) -> LearnerConfig:
        """The loop's configuration from the service settings (``SMC_LEARNER__*``)."""
        return cls(retrain_every=s.retrain_every_trades, retrain_interval_s=s.retrain_interval_s,
                   margin=s.promote_margin, z=s.promote_z,
                   paired_z=s.promote_paired_z, cold_start=s.cold_start, idle_retry_s=s.idle_retry_s)

    def __post_init__(self) -> None:
        if self.retrain_every < 1 or not self.retrain_interval_s > 0 or not self.idle_retry_s > 0:
            raise ValueError("retrain_every must be ≥ 1, retrain_interval_s and idle_retry_s > 0")
        if not (0 < self.holdout_fraction < 1 and self.min_holdout >= 2 and 0 <= self.margin < 0.5
                and 0 <= self.z < 10 and 0 <= self.paired_z < 10):
            raise ValueError("need 0 < holdout_fraction < 1, min_holdout ≥ 2, 0 ≤ margin < 0.5, 0 ≤ z < 10 "
                             "and 0 ≤ paired_z < 10")
        if not (math.isfinite(self.experience_weight) and self.experience_weight > 0):
            raise ValueError("experience_weight must be finite and > 0")


@dataclass(frozen=True, slots=True)
class LearnOutcome:
    """One retraining round: the registered challenger, whether it was promoted, why, and the scores."""

    version: int
    promoted: bool
    reason: str
    challenger_auc: float
    champion_auc: float | None
    champion_version: int | None
    trigger: str
    train_rows: int
    holdout_rows: int
    gate_rows: int
    gate_on: str
    experience_rows: int
    seconds: float
    champion_edge: bool | None = None
    """Whether the champion (kept or replaced) still passes the gate's chance test on this window — the
    floor every challenger must clear; ``None`` without a usable champion."""
    champion_reason: str = ""
    """That test's reason (e.g. ``champion AUC 0.4736 is not above chance + 0.01``)."""


@dataclass(slots=True)
class LearnerStats:
    """Counters of the loop (exported as metrics by the service)."""

    closed_trades: int = 0
    rounds: int = 0
    promoted: int = 0
    kept: int = 0
    waiting: int = 0
    """Rounds that found too little data (expected on a fresh database; not a failure)."""
    failed: int = 0
    """Rounds that raised (logged as ``learner_round_failed``): worth an alert."""
    refused_rows: int = 0
    champion_no_edge: int = 0
    """Rounds whose champion failed the chance test on the latest window (it keeps trading unless replaced)."""
    superseded: int = 0
    """Challengers that passed the gate but were not promoted: the champion changed during the round (an
    operator's promote or rollback); the next round gates against the new one."""
    training: bool = False
    last: LearnOutcome | None = None

    def metrics(self) -> dict[str, float]:
        """Flat numeric view (``learner_*``)."""
        out = {f"learner_{k}": float(v) for k, v in asdict(self).items() if k != "last"}
        if self.last is not None:
            out["learner_last_challenger_auc"] = self.last.challenger_auc
            out["learner_last_version"] = float(self.last.version)
            if self.last.champion_auc is not None:
                out["learner_last_champion_auc"] = self.last.champion_auc
            if self.last.champion_edge is not None:
                out["learner_last_champion_edge"] = float(self.last.champion_edge)
        return out


def experience_dataset(rows: Sequence[ExperienceRow], schema_version: str,
                       weight: float = 1.0) -> tuple[Dataset, int]:
    """Closed trades as training rows (see the module docstring) and how many were refused."""
    n_features = len(FEATURE_SCHEMA)
    good = [r for r in rows if r.schema_version == schema_version and len(r.features) == n_features
            and math.isfinite(r.net_return_pct) and r.labelled]
    symbols = tuple(dict.fromkeys(r.symbol for r in good))
    code = {s: k for k, s in enumerate(symbols)}
    n = len(good)
    x = np.array([r.features for r in good], dtype=np.float64).reshape(n, n_features)
    ret = np.array([r.net_return_pct for r in good], dtype=np.float64)
    ds = Dataset(x, np.array([r.win for r in good], dtype=np.int64).reshape(n), ret,
                 np.array([1 if r.side == "LONG" else -1 for r in good], dtype=np.int64),
                 np.array([r.signal_time_ms for r in good], dtype=np.int64),
                 np.array([max(r.closed_ms, r.signal_time_ms) for r in good], dtype=np.int64),
                 np.array([code[r.symbol] for r in good], dtype=np.int64), symbols,
                 np.ones(n, dtype=np.bool_), np.full(n, weight))
    return ds, len(rows) - n


def _series(symbol: str, candles: Sequence[Candle]) -> KlineSeries:
    return KlineSeries(symbol, np.array([c.open_time for c in candles], dtype=np.int64),
                       np.array([c.open for c in candles], dtype=np.float64),
                       np.array([c.high for c in candles], dtype=np.float64),
                       np.array([c.low for c in candles], dtype=np.float64),
                       np.array([c.close for c in candles], dtype=np.float64),
                       np.array([c.volume for c in candles], dtype=np.float64))


def candle_history(fetch: CandleFetch, symbols: Sequence[str] | Callable[[], Sequence[str]], lookback_ms: int,
                   now_ms: Callable[[], int], *,
                   spec: BarrierSpec | None = None, every: int = 5, source: SetupSource = "broad",
                   scalper: ScalperConfig | None = None, min_history: int = 0) -> HistoryLoader:
    """A history loader over stored 1m candles: the setups of the last ``lookback_ms`` of each symbol (fetched
    through ``fetch``, e.g. ``CandleRepository.fetch``), labelled by ``build_dataset`` in a worker thread.

    ``min_history`` more minutes are fetched before that window and only warm the features up: every labelled
    row has at least that many candles behind it, as the live engine has after its warm start
    (``learner.min_history_candles``; ``build_dataset``). A symbol with less stored history gives rows only
    from that many candles on.

    ``symbols`` may be a callable, asked at every load: a service that takes new listings while it runs learns
    from their candles too. Symbols with no more candles than the label horizon are skipped. The candles are
    used as stored: the service backfills gaps before storing, so they are contiguous minutes."""
    spec = spec or BarrierSpec()

    async def load() -> Dataset:
        end = now_ms()
        series = []
        for symbol in symbols() if callable(symbols) else symbols:
            candles = await fetch(symbol, "1m", end - lookback_ms - min_history * MINUTE_MS, end)
            if len(candles) > min_history + spec.horizon:
                series.append(_series(symbol, candles))
        return await asyncio.to_thread(build_dataset, series, spec, every, "trend_1m", None, source, scalper,
                                       min_history=min_history)

    return LabelledHistory(load, {"source": source, "every": every, "barrier": asdict(spec),
                                  "min_history": min_history})


class LabelledHistory:
    """A history loader that says how it labels (``labelling``: ``source``, ``every``, ``barrier``, the keys
    ``smc-quant train`` writes): the learner stores it in each candidate's params, so ``smc-quant promote --data``
    labels its gate window as the candidate's training data was (it used to fall back to ``candidates`` and fixed
    barriers for every learner-made model)."""

    def __init__(self, load: HistoryLoader, labelling: Mapping[str, Any]) -> None:
        self._load = load
        self.labelling = dict(labelling)

    def __call__(self) -> Awaitable[Dataset]:
        return self._load()


@dataclass(frozen=True, slots=True)
class _Fitted:
    model: TrainedModel
    data: Dataset
    train: np.ndarray
    holdout: np.ndarray
    cut_ms: int
    challenger_p: np.ndarray


def _fit(data: Dataset, config: LearnerConfig, abort: threading.Event | None = None) -> _Fitted:
    """Split, train and score the held-out window (CPU-bound: runs in the worker thread; ``abort`` set: the
    training raises ``TrainingAborted`` before its next boosting iteration)."""
    split = split_latest(data.start, data.end, config.holdout_fraction, config.min_holdout)
    if split.train.shape[0] < config.min_holdout:
        raise NotEnoughData(f"only {split.train.shape[0]} training rows before the held-out window")
    tr = data.take(split.train)
    model = train(tr.x, tr.win, config.train, tr.weight, abort=abort)
    return _Fitted(model, data, split.train, split.holdout, split.cut_ms, model.predict(data.x[split.holdout]))


class Learner:
    """Retrains on history + experience and promotes a challenger only if it is better out of sample."""

    def __init__(self, experience: ExperienceSource, registry: Registry, history: HistoryLoader,
                 config: LearnerConfig | None = None, *, on_promoted: PromotedHook | None = None,
                 on_outcome: OutcomeHook | None = None, log: Log | None = None,
                 schema_version: str = FEATURE_SCHEMA.version, clock: Callable[[], int] | None = None) -> None:
        check_schema(schema_version)  # a learner for another schema would train models the engine refuses
        self.config = config or LearnerConfig()
        self.stats = LearnerStats()
        self._experience, self._registry, self._history = experience, registry, history
        self._on_promoted, self._on_outcome, self._schema = on_promoted, on_outcome, schema_version
        self._log: Log = log if log is not None else structlog.get_logger("learner")
        self._wake = asyncio.Event()
        self._trigger = "trades"
        self._since_retrain = 0
        self._idle_streak = 0  # scheduled rounds in a row without a champion (the retry backs off)
        self._clock = clock or (lambda: int(time.time() * 1000))
        """Epoch ms on the registry's clock (when a model was registered)."""
        self._newest_ms: int | None = None  # when the newest registered model was (its round), read at start
        self._lock = asyncio.Lock()
        self._round_done = asyncio.Condition()

    @property
    def labelling(self) -> dict[str, Any]:
        """How the history loader labels its rows (``LabelledHistory.labelling``; empty for a plain loader):
        stored in each candidate's params."""
        return dict(getattr(self._history, "labelling", {}))

    @property
    def pending(self) -> bool:
        """Whether a retrain has been triggered and not started yet."""
        return self._wake.is_set()

    async def wait_rounds(self, n: int) -> LearnOutcome | None:
        """Wait until :meth:`run` has finished ``n`` rounds in total (waiting and failed ones included); the
        last outcome."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.stats.rounds + self.stats.waiting + self.stats.failed >= n)
        return self.stats.last

    def on_trade_closed(self, count: int = 1) -> None:
        """Count closed trades; every ``retrain_every`` of them wakes :meth:`run` for a retrain."""
        self.stats.closed_trades += count
        self._since_retrain += count
        if self._since_retrain >= self.config.retrain_every:
            self._since_retrain = 0
            self.trigger("trades")

    def trigger(self, reason: str = "manual") -> None:
        """Wake :meth:`run` now (the trade counter and the schedule call this too)."""
        self._trigger = reason
        self._wake.set()

    async def resume_count(self) -> int:
        """Set the trade counter from the trades closed since the newest registered model (restart-safe)."""
        since = self._newest_ms = await self._registry.newest_created_ms()
        closed = await self._experience.trades_count(since)
        self._since_retrain = closed % self.config.retrain_every
        if closed >= self.config.retrain_every:
            self.trigger("trades")
        return closed

    async def prepare(self) -> None:
        """Resume the trade count, and trigger a ``cold_start`` round when the registry has no champion
        (if the config allows it)."""
        await self.resume_count()
        if self.config.cold_start and await self._registry.usable_champion() is None:
            self.trigger("cold_start")  # none, or one of another feature schema the engine refuses

    async def run(self) -> None:
        """Forever: wait for the trade trigger or the schedule, then run one round (failures logged, counted).

        Starts with :meth:`prepare`; a failure there (the database down at start) is logged and counted, and
        the first round comes after ``idle_retry_s``. The schedule survives restarts: the first scheduled round
        comes ``retrain_interval_s`` after the newest registered model, not after the start (a service restarted
        every day for a deployment would otherwise never retrain on schedule)."""
        try:
            await self.prepare()
            wait_s = self.schedule_left_s()
        except Exception as exc:  # the loop must outlive a failed start too, or it ends silently
            self.stats.failed += 1
            self._log.warning("learner_prepare_failed", error=f"{type(exc).__name__}: {exc}")
            wait_s = min(self.config.retrain_interval_s, self.config.idle_retry_s)
        while True:
            try:
                await within(self._wake.wait(), wait_s)
                trigger = self._trigger
            except TimeoutError:
                trigger = "schedule"
            self._wake.clear()
            try:
                await self.learn_once(trigger)
            except asyncio.CancelledError:
                raise
            except NotEnoughData as exc:  # expected on a fresh database: the next round may have the data
                self.stats.waiting += 1
                self._log.info("learner_waiting_for_data", trigger=trigger, reason=str(exc))
            except Exception as exc:  # the loop must survive a failed round; it is logged
                self.stats.failed += 1
                self._log.warning("learner_round_failed", trigger=trigger, error=f"{type(exc).__name__}: {exc}")
            wait_s = await self._next_wait()
            async with self._round_done:
                self._round_done.notify_all()

    def schedule_left_s(self) -> float:
        """Seconds from now to the first scheduled round: what is left of ``retrain_interval_s`` since the newest
        registered model (as read by :meth:`resume_count`; none: the whole interval; overdue: 0)."""
        interval = self.config.retrain_interval_s
        if self._newest_ms is None:
            return interval
        return min(interval, max(0.0, interval - (self._clock() - self._newest_ms) / 1000))

    async def _next_wait(self) -> float:
        """Seconds until the scheduled round. Without a champion (cold start on), or when the registry cannot
        say: ``idle_retry_s``, doubling with each such round in a row (5, 10, 20 … min: the history grows
        geometrically between tries, and a deployment whose challengers keep missing the gate does not
        train every few minutes for ever), capped at ``retrain_interval_s``, which applies with a champion."""
        c = self.config
        if not c.cold_start:
            return c.retrain_interval_s
        try:
            idle = await self._registry.usable_champion() is None
        except Exception as exc:  # the database is down: ask again soon, the loop must not die of it
            self._log.warning("learner_registry_unavailable", error=f"{type(exc).__name__}: {exc}")
            idle = True
        if not idle:
            self._idle_streak = 0
            return c.retrain_interval_s
        wait = min(c.retrain_interval_s, c.idle_retry_s * 2.0 ** min(self._idle_streak, 60))
        self._idle_streak += 1
        return wait

    async def learn_once(self, trigger: str = "manual") -> LearnOutcome:
        """One round: data → challenger (in a thread) → register → gate against the champion → maybe promote."""
        async with self._lock:
            self.stats.training = True
            try:
                return await self._round(trigger)
            finally:
                self.stats.training = False

    async def _round(self, trigger: str) -> LearnOutcome:
        started = time.perf_counter()
        history = await self._history()
        if history.x.shape[1:] != (len(FEATURE_SCHEMA),) and len(history):
            raise ValueError(f"history rows have {history.x.shape[1]} features, the schema has {len(FEATURE_SCHEMA)}")
        rows = await self._experience.experience(self._schema)
        exp, refused = experience_dataset(rows, self._schema, self.config.experience_weight)
        self.stats.refused_rows += refused
        if refused:
            self._log.warning("learner_experience_refused", rows=refused, schema=self._schema,
                              reason="other schema version, wrong width or non-finite return")
        data = await asyncio.to_thread(Dataset.concat, [history, exp]) if len(exp) else history  # ~10⁵ rows
        abort = threading.Event()
        try:
            fitted = await asyncio.to_thread(_fit, data, self.config, abort)
        except asyncio.CancelledError:  # the thread runs on regardless: stop its training at the next iteration
            abort.set()
            raise
        hold = data.take(fitted.holdout)
        chosen, gate_on = gate_rows(hold.win, hold.is_setup, self.config.min_gate_setups)
        champion = await self._registry.champion()
        gated_against = None if champion is None else champion.version  # promoted only if it is still champion
        champion_p = None
        if champion is not None:
            try:
                champion_model = await self._registry.load(champion.version)
            except UnusableModel as exc:  # a stale or broken champion cannot score these rows: the floor decides
                # (a broken one used to fail every round, so nothing could ever replace it; a database error is
                # not this, and fails the round, so a blip cannot hand the champion's place to a weaker model)
                self._log.warning("learner_champion_unusable", champion=champion.version, error=str(exc))
                champion = None
            else:
                champion_p = await asyncio.to_thread(champion_model.predict, hold.x[chosen])
        gated = hold.take(chosen)  # the rows the gate decides on: stored with the candidate, to re-gate it later
        blocks = time_blocks(gated.start, gated.end)
        trained = fitted.train  # the win rate the model was fitted to (weighted as in training): no champion's Brier
        base_rate = float(np.average(data.win[trained], weights=data.weight[trained]))
        decision = decide(hold.win[chosen], fitted.challenger_p[chosen], champion_p, self.config.margin, self.config.z,
                          blocks, self.config.paired_z, base_rate=base_rate)
        standing = None  # the champion against the floor a challenger must clear, on the same rows
        if champion is not None and champion_p is not None:
            standing = chance_test(hold.win[chosen], champion_p, self.config.margin, self.config.z, blocks,
                                   name=f"champion v{champion.version}")
        train_rows = len(fitted.train)  # (its window from the indices: no copy of the training rows on the loop)
        train_start, train_end = int(data.start[fitted.train].min()), int(data.end[fitted.train].max())
        c = self.config
        params = {**c.train.to_json(), "learner": {"trigger": trigger, "margin": c.margin, "z": c.z,
                                                   "paired_z": c.paired_z, "experience_weight": c.experience_weight},
                  "symbols": list(data.symbols), **self.labelling}
        metrics = {"holdout_auc": decision.challenger_auc, "champion_auc": decision.champion_auc,
                   "holdout_brier": decision.challenger_brier, "reference_brier": decision.reference_brier,
                   "train_base_rate": base_rate,
                   "holdout_all_auc": auc(hold.win, fitted.challenger_p), "gate_on": gate_on,
                   "gate_reason": decision.reason, "train_rows": train_rows, "experience_rows": len(exp),
                   "holdout_start": fitted.cut_ms,
                   "holdout": holdout_to_json(gated.x, gated.win, gated.is_setup, gated.start, gated.end)}
        record = await self._registry.register(fitted.model, train_start=train_start,
                                               train_end=train_end, params=params, metrics=metrics)
        promoted, reason = decision.promote, decision.reason
        if promoted and await self._registry.promote_over(record.version, gated_against) is None:
            promoted, reason = False, f"{reason}; not promoted: the champion changed during the round"
            self.stats.superseded += 1
            self._log.warning("learner_promotion_superseded", version=record.version, gated_against=gated_against,
                              note="an operator's promote or rollback came first; the next round gates against it")
        if promoted:
            self.stats.promoted += 1
        else:
            self.stats.kept += 1
        self.stats.rounds += 1
        outcome = LearnOutcome(record.version, promoted, reason, decision.challenger_auc,
                               None if champion is None else decision.champion_auc,
                               None if champion is None else champion.version, trigger, train_rows, len(hold),
                               int(chosen.shape[0]), gate_on, len(exp), time.perf_counter() - started,
                               None if standing is None else standing.passed,
                               "" if standing is None else standing.reason)
        self.stats.last = outcome
        if standing is not None and not standing.passed:
            self.stats.champion_no_edge += 1
            self._log.warning("learner_champion_no_edge", champion=champion.version if champion else None,
                              replaced=promoted, reason=standing.reason)
        self._log.info("learner_promoted" if promoted else "learner_kept_champion",
                       version=record.version, champion=outcome.champion_version, promoted=promoted,
                       challenger_auc=round(decision.challenger_auc, 4),
                       champion_auc=None if champion is None else round(decision.champion_auc, 4),
                       reason=reason, trigger=trigger, gate_on=gate_on, gate_rows=outcome.gate_rows,
                       train_rows=outcome.train_rows, experience_rows=outcome.experience_rows,
                       seconds=round(outcome.seconds, 2))
        if promoted and self._on_promoted is not None:
            result = self._on_promoted(record.version)
            if result is not None:
                await result
        if self._on_outcome is not None:
            try:  # a report of the round (a notification): its failure is logged, the round stands
                reported = self._on_outcome(outcome)
                if reported is not None:
                    await reported
            except Exception as exc:
                self._log.warning("learner_outcome_hook_failed", error=f"{type(exc).__name__}: {exc}")
        return outcome


__all__ = [
    "CandleFetch",
    "ExperienceSource",
    "HistoryLoader",
    "LearnOutcome",
    "Learner",
    "LearnerConfig",
    "LearnerStats",
    "OutcomeHook",
    "Registry",
    "candle_history",
    "experience_dataset",
]
