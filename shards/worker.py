"""``smc-quant shard``: one shard worker of the multi-process deployment (docs/scaling.md).

A worker joins the live-worker set in Redis, leases the shard slots the split gives it
(:mod:`shards.lease`), and runs, per leased slot, that slot's feed → candle sink (PostgreSQL) → analyzer
→ champion model → scalper; signals go to the Redis signal stream (:mod:`shards.bus`), each minute's
closes to the marks stream. It never places an order: exactly one ``smc-quant executor`` does.

Every ``lease_renew_s`` the lease loop renews (fenced) what it holds, re-reads the live workers and
converges: a slot it lost or no longer should run, or whose feed or sink crashed past its supervisor's
restarts (``slot_failed``), is stopped (drained, flushed) and released; a slot
it should run and is free is leased, warm-started from PostgreSQL (the gap since the last stored candle
is backfilled over REST, so a worker taking over a dead one's slot leaves no hole) and started. Redis
down: the slots keep running, signals are buffered (bounded), leases are re-taken when it is back. The
signal publisher's flusher runs under the supervisor and retries any Redis error; data unwritten for longer
than its grace fails ``/health`` (``signal_bus``).
A changed universe restarts the slots whose symbols changed; a changed ``SHARD_COUNT`` (a rolling
restart) changes the split.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
import structlog

from shards.assignment import assign
from shards.bus import REDIS_FAILED, SignalPublisher, redis_client
from shards.champion import follow_champion, load_champion
from shards.cluster import ClusterManager
from shards.lease import LeaseManager, desired_slots
from shards.supervisor import Heartbeat, Supervisor, stop_within
from smc_quant.domain.candles import MINUTE_MS, Candle, interval_ms
from smc_quant.exchange.governor import SharedWeightBudget, WeightGovernor
from smc_quant.exchange.rest import BinanceRestClient
from smc_quant.model.predictor import MLPredictor
from smc_quant.model.scoring import Batch, BatchScorer, Scores
from smc_quant.notify import Notifier, process_failed, tell_before_exit
from smc_quant.ops.health import MARKET_CHECK_S, MarketWatch
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.ops.server import OpsServer
from smc_quant.settings import Settings
from smc_quant.store.candles import CandleRepository
from smc_quant.store.db import SERVICE_COMMAND_TIMEOUT_S, create_pool
from smc_quant.store.embedded import resolve_database
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry
from smc_quant.store.universe_cache import UniverseCache
from smc_quant.universe import BinanceUniverse, Universe

PUBLISHER = "publisher"
"""The supervised task name of a worker's signal flusher."""


class ClusterProcess:
    """What a worker and the executor share: PostgreSQL, Redis, HTTP, the REST client with the
    cluster-wide weight budget, the universe, the supervisor."""

    role = "process"

    def __init__(self, settings: Settings, *, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.settings = settings
        self.log = logger or structlog.get_logger().bind(role=self.role)
        self.keys = ClusterKeys(settings.cluster.key_prefix)
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.session: aiohttp.ClientSession | None = None
        self.governor: WeightGovernor | None = None
        self.rest: BinanceRestClient | None = None
        self.universe_source: BinanceUniverse | None = None
        self.universe: Universe | None = None
        self.supervisor = Supervisor(max_restarts=settings.cluster.max_task_restarts,
                                     window_s=settings.cluster.crash_window_s, logger=self.log)
        self.ops: OpsServer | None = None
        self._embedded: Any = None

    async def start(self) -> None:
        """Bring the process up (subclasses)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Graceful stop (subclasses)."""
        raise NotImplementedError

    @property
    def notifier(self) -> Notifier | None:
        """Where the process's own alarms go: the executor's notification channels (its trading stack's); a shard
        worker's own (:class:`ShardWorker`)."""
        notifier = getattr(getattr(self, "trading", None), "notifier", None)
        return notifier if isinstance(notifier, Notifier) else None

    async def _start_infra(self) -> None:
        s = self.settings
        if not s.redis_url:
            from smc_quant.errors import ConfigError

            raise ConfigError("invalid setting REDIS_URL: the shard and executor commands need Redis")
        dsn, self._embedded = await resolve_database(s)
        await apply_migrations(dsn)  # under an advisory lock: concurrent starts are safe
        self.pool = await create_pool(dsn, synchronous_commit=False, command_timeout=SERVICE_COMMAND_TIMEOUT_S)
        self.redis = redis_client(s.redis_url)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.venue.request_timeout_s))
        self.governor = WeightGovernor(s.venue.weight_limit_per_minute, s.venue.weight_headroom,
                                       shared=SharedWeightBudget(self.redis, self.keys.rest_weight))
        self.rest = BinanceRestClient(self.session, s.venue.rest_base, self.governor,
                                      timeout_s=s.venue.request_timeout_s, logger=self.log)
        self.universe_source = BinanceUniverse(self.rest, UniverseCache(self.pool), self.redis, s.universe,
                                               logger=self.log)
        self.universe = await self.universe_source.load()

    async def _stop_infra(self) -> None:
        if self.ops is not None:
            await self.ops.stop()
        if self.governor is not None:
            await self.governor.close()
        if self.session is not None:
            await self.session.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()
        if self._embedded is not None:
            await self._embedded.stop()


@dataclass(slots=True)
class SlotStats:
    """Throughput of one leased slot since the last heartbeat."""

    started_mono: float = field(default_factory=time.monotonic)
    frames_at_beat: int = 0
    beat_mono: float = field(default_factory=time.monotonic)


class ShardWorker(ClusterProcess):
    """One ``smc-quant shard`` process; see the module docstring."""

    role = "shard"
    market_check_s = MARKET_CHECK_S
    """How often the slots' market data is judged for the chat (:meth:`check_market`)."""

    def __init__(self, settings: Settings, *, owner: str | None = None,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        super().__init__(settings, logger=logger)
        self.owner = owner
        self.leases: LeaseManager | None = None
        self.publisher: SignalPublisher | None = None
        self.slots: dict[int, ClusterManager] = {}
        self.slot_stats: dict[int, SlotStats] = {}
        self.feed_metrics: list[FeedMetrics] = []
        self.predictor = MLPredictor()
        self.scorer: BatchScorer | None = None
        self.scalper: Any = None
        self.symbols: tuple[str, ...] = ()
        self._bars: dict[str, tuple[int, float, float, float]] = {}
        self.signals = 0
        self.acquired = 0
        self.slot_failures = 0
        self.converged = asyncio.Event()
        self._ready = False
        self._slot_lock = asyncio.Lock()
        self._redis_down = False
        self._notifier: Notifier | None = None
        self.market_watch: MarketWatch | None = None

    @property
    def notifier(self) -> Notifier | None:
        """The worker's own channels (``SMC_NOTIFY__*``): its slots' stale market data and its ``process_failed``."""
        return self._notifier

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, load the universe and the champion, join the workers and start the lease loop."""
        from smc_quant.strategy import ICTScalper, ScalperConfig

        await self._start_infra()
        assert self.redis is not None and self.universe is not None
        self._notifier = Notifier.of(self.settings.notify, self.session)
        await self._notifier.start()
        c = self.settings.cluster
        self.symbols = self.universe.symbols
        lease_keys = replace(self.keys, split=self.settings.shard_count)  # the split this worker runs
        self.leases = LeaseManager(self.redis, lease_keys, ttl_ms=int(c.lease_ttl_s * 1000), owner=self.owner)
        self.publisher = SignalPublisher(self.redis, self.keys.signals, marks_stream=self.keys.marks,
                                         buffer_max=c.signal_buffer, maxlen=c.stream_maxlen,
                                         clock_ms=lambda: int(time.time() * 1000), logger=self.log)
        self.supervisor.spawn(PUBLISHER, self.publisher.run)
        await self._load_champion()
        self.scorer = BatchScorer(self.predictor, self.log)
        self.scorer.subscribe(self._on_scores)
        self.scalper = ICTScalper(ScalperConfig(min_confidence=self.settings.trading.min_confidence))
        ops = self.settings.ops
        window = ops.freshness_window_s or interval_ms(self.settings.feed.interval) / 1000 + ops.freshness_grace_s
        self.ops = WorkerOps(self.feed_metrics, window_s=window, fraction=ops.fresh_fraction,
                             queue_depth=self._queue_depth, ready=lambda: self._ready, extra=self.metrics,
                             bus=self.publisher.health)
        await self.ops.start(ops.host, ops.port)
        self.market_watch = MarketWatch(window_s=window, fraction=ops.fresh_fraction, started=time.monotonic())
        self.supervisor.spawn("market-watch", self._watch_market)
        self.supervisor.spawn("leases", self._lease_loop)
        self.supervisor.spawn("universe", self._universe_loop)
        self.supervisor.spawn("model", self._model_loop)
        self.supervisor.spawn("heartbeat", Heartbeat(self.report, interval_s=c.heartbeat_s, logger=self.log).run)
        self._ready = True
        self.log.info("shard_worker_started", owner=self.leases.owner, symbols=len(self.symbols),
                      shard_count=self.settings.shard_count, ops=self.ops.port)

    async def stop(self) -> None:
        """Stop intake, drain and flush every slot, write buffered signals, hand the leases back, close.

        The publisher's flusher stops last (after the slots' final signals and the bounded drain); a Redis that
        refuses the lease release does not keep the sockets, the pool or the HTTP session open."""
        self._ready = False
        try:
            await self.supervisor.stop([name for name in self.supervisor.records if name != PUBLISHER])
            async with self._slot_lock:
                for slot in list(self.slots):
                    await self._stop_slot(slot)
            if self.publisher is not None:
                await self.publisher.drain(min(3.0, self.settings.cluster.shutdown_timeout_s / 3))
            await self.supervisor.stop()  # the flusher
            if self.leases is not None:
                try:
                    await self.leases.leave()
                except REDIS_FAILED as exc:  # the leases expire on their own (TTL)
                    self.log.warning("lease_release_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            if self._notifier is not None:  # before its HTTP session closes
                await self._notifier.close()
            await self._stop_infra()
        self.log.info("shard_worker_stopped")

    async def _watch_market(self) -> None:
        """The slots' market data by the ``/health`` rule every ``market_check_s``: a stale shard, and the
        recovery, told to the worker's channels (:class:`~smc_quant.ops.health.MarketWatch`)."""
        while True:
            await asyncio.sleep(self.market_check_s)
            self.check_market()

    def check_market(self, now: float | None = None) -> bool:
        """The verdict on the slots held now (every one fresh: ``True``), a change logged and told."""
        if self.market_watch is None:
            return True
        return self.market_watch.check(self.feed_metrics, time.monotonic() if now is None else now, self.log,
                                       self._notifier.notify if self._notifier is not None else None)

    # -- leases ------------------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        while True:
            await self.lease_round()
            await asyncio.sleep(self.settings.cluster.lease_renew_s)

    async def lease_round(self) -> None:
        """One round of the lease loop. Redis unreachable, or refusing (``READONLY`` after a failover, ``OOM``,
        ``MISCONF``): the slots held keep running and signals are buffered — a refusal used to crash the loop
        until the process gave up, losing the buffered signals."""
        try:
            await self.converge()
            if self._redis_down:
                self._redis_down = False
                self.log.warning("redis_recovered", slots=sorted(self.slots))
        except REDIS_FAILED as exc:
            if not self._redis_down:
                self._redis_down = True
                self.log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}", slots=sorted(self.slots),
                                 note="slots keep running, signals are buffered")

    async def converge(self) -> None:
        """One lease round: renew what we hold, drop what we lost or should not run, take what we should."""
        assert self.leases is not None
        async with self._slot_lock:
            for slot in sorted(self.slots):
                if (failure := self.slots[slot].failure) is not None:  # a feed or sink past its restarts
                    self.slot_failures += 1
                    self.log.error("slot_failed", slot=slot, reason=failure, recovery="restarted from PostgreSQL")
                    await self._stop_slot(slot)
                    await self.leases.release(slot)  # taken again below (or by another worker) and warm-started
                    continue
                if not await self.leases.renew(slot):
                    self.log.warning("lease_lost", slot=slot, holder=await self.leases.holder(slot))
                    await self._stop_slot(slot)
            members = await self.leases.heartbeat()
            want = desired_slots(members, self.leases.owner, self.settings.shard_count)
            for slot in sorted(set(self.slots) - want):
                await self._stop_slot(slot)  # flushed before the lease is handed over
                await self.leases.release(slot)
                self.log.info("slot_released", slot=slot, workers=len(members))
            for slot in sorted(want - set(self.slots)):
                if await self.leases.try_acquire(slot):
                    await self._start_slot(slot)
                    self.acquired += 1
                    for held in sorted(self.slots):  # a slow warm start must not let the others lapse
                        if held != slot and not await self.leases.renew(held):
                            self.log.warning("lease_lost", slot=held)
                            await self._stop_slot(held)
            if want == set(self.slots):
                self.converged.set()
            else:
                self.converged.clear()

    async def _start_slot(self, slot: int) -> None:
        assert self.session is not None and self.pool is not None and self.scorer is not None
        manager = ClusterManager(self.settings, symbols=self.symbols, session=self.session,
                                 repository=CandleRepository(self.pool), backfill=self._backfill,
                                 logger=self.log, only=[slot])
        for analyzer in manager.analyzers:
            analyzer.subscribe(self.scorer)
            analyzer.subscribe(self._on_batch)
        for feed in manager.feeds:
            feed.listeners.insert(0, self._on_candle)
        await manager.seed()
        manager.start()
        self.slots[slot] = manager
        self.slot_stats[slot] = SlotStats()
        self.feed_metrics.extend(manager.metrics)
        self.log.warning("slot_started", slot=slot, symbols=sum(len(f.symbols) for f in manager.feeds))

    async def _stop_slot(self, slot: int) -> None:
        manager = self.slots.pop(slot, None)
        self.slot_stats.pop(slot, None)
        if manager is None:
            return
        await manager.stop()  # stop intake, drain queues, flush to PostgreSQL
        for m in manager.metrics:
            with contextlib.suppress(ValueError):
                self.feed_metrics.remove(m)
        self.log.warning("slot_stopped", slot=slot)

    async def _backfill(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        assert self.rest is not None
        step = interval_ms(interval)
        limit = max(1, min(self.settings.feed.backfill_limit, (end_ms - start_ms) // step + 1))
        return await self.rest.closed_klines(symbol, interval, start_ms, end_ms, now_ms=end_ms + step, limit=limit)

    # -- universe and model ------------------------------------------------------------------------------
    async def _universe_loop(self) -> None:
        assert self.universe_source is not None
        while True:
            await asyncio.sleep(self.settings.universe.refresh_s)
            change = await self.universe_source.refresh()
            if change.added or change.removed:
                await self.apply_universe(self.universe_source.current.symbols if self.universe_source.current
                                          else self.symbols)

    async def apply_universe(self, symbols: Sequence[str]) -> list[int]:
        """Adopt a new symbol list: restart the running slots whose share of the symbols changed."""
        old = assign(self.symbols, self.settings.shard_count)
        new = assign(symbols, self.settings.shard_count)
        self.symbols = tuple(sorted(set(symbols)))
        changed: list[int] = []
        async with self._slot_lock:
            for slot in sorted(self.slots):
                if old[slot] != new[slot]:
                    await self._stop_slot(slot)
                    await self._start_slot(slot)
                    changed.append(slot)
        self.log.warning("universe_applied", symbols=len(self.symbols), restarted_slots=changed)
        return changed

    async def _load_champion(self) -> None:
        assert self.pool is not None
        await load_champion(ModelRegistry(self.pool), self.predictor, self.log)

    async def _model_loop(self) -> None:
        """The executor's learner promotes; workers follow the registry's champion within a minute."""
        assert self.pool is not None
        await follow_champion(ModelRegistry(self.pool), self.predictor, self.log)

    # -- signals --------------------------------------------------------------------------------------
    def _on_candle(self, candle: Candle, _completed: list[Candle]) -> None:
        self._bars[candle.symbol] = (candle.open_time, candle.open, candle.high, candle.low)

    def _on_batch(self, batch: Any) -> None:
        closes = getattr(batch, "closes", None)
        if self.publisher is not None and closes is not None:
            bars = [self._bars.get(s) for s in batch.symbols]
            self.publisher.publish_marks(int(batch.open_time), batch.symbols, closes, bars)

    def _on_scores(self, batch: Batch, scores: Scores) -> None:
        closes = getattr(batch, "closes", None)
        if closes is None or self.publisher is None or not self.settings.trading.enabled:
            return
        replay = self.settings.mode == "replay"
        now_ms = int(getattr(batch, "open_time", 0)) + MINUTE_MS if replay else int(time.time() * 1000)
        prices = [Decimal(repr(float(c))) for c in closes]
        for signal in self.scalper.on_batch(batch.symbols, batch.open_times, batch.features, scores.p_win,
                                            model_version=self.predictor.version, close_prices=prices,
                                            now_ms=now_ms, break_open_times=batch.break_times):
            self.publisher.publish(signal)
            self.signals += 1

    # -- observability ---------------------------------------------------------------------------------
    def _queue_depth(self, shard: int) -> int:
        manager = self.slots.get(shard)
        return manager.queue_depth(shard) if manager is not None else 0

    def report(self) -> dict[str, Any]:
        """The heartbeat line: per-slot throughput and lag, signals, bus state, model version."""
        now = time.monotonic()
        shards: dict[str, Any] = {}
        for slot, manager in sorted(self.slots.items()):
            stats = self.slot_stats[slot]
            frames = sum(m.frames for m in manager.metrics)
            elapsed = max(1e-9, now - stats.beat_mono)
            shards[str(slot)] = {"frames_per_s": round((frames - stats.frames_at_beat) / elapsed, 2),
                                 "queue": manager.queue_depth(slot),
                                 "lag_s": round(max((m.lag_s(now) for m in manager.metrics), default=0.0), 1)}
            stats.frames_at_beat, stats.beat_mono = frames, now
        pub = self.publisher
        return {"owner": self.leases.owner if self.leases else None, "shards": shards, "signals": self.signals,
                "signals_buffered": pub.buffered if pub else 0, "signal_overflow": pub.stats.overflow if pub else 0,
                "signal_bus_error": pub.last_error if pub else None,
                "model_version": self.predictor.version, "redis_down": self._redis_down,
                "setups": self.scalper.stats.setups if self.scalper else 0,
                "best_confidence": round(self.scalper.stats.best_confidence, 4) if self.scalper else 0.0}

    def metrics(self) -> dict[str, float]:
        """Extra gauges for /metrics."""
        pub = self.publisher
        out = {"worker_slots": float(len(self.slots)), "worker_signals": float(self.signals),
               "worker_slot_failures": float(self.slot_failures),
               "worker_slots_acquired": float(self.acquired),
               "signal_buffered": float(pub.buffered if pub else 0),
               "signal_overflow": float(pub.stats.overflow if pub else 0),
               "signal_published": float(pub.stats.published if pub else 0),
               "signal_redis_errors": float(pub.stats.redis_errors if pub else 0),
               "marks_published": float(pub.stats.marks_published if pub else 0),
               "marks_dropped": float(pub.stats.marks_dropped if pub else 0),
               "signal_unwritten_seconds": float(pub.health()[1]["unwritten_s"] if pub else 0.0)}
        if self.rest is not None:
            out.update(rest_unreadable=float(self.rest.unreadable),
                       rest_rows_rejected=float(sum(self.rest.rows_rejected.values())))
        if self.scorer is not None:
            out.update(self.scorer.metrics())
        if self.scalper is not None:
            out.update(self.scalper.stats.metrics())
        return out


class WorkerOps(OpsServer):
    """A worker's ops endpoint: the shards' freshness plus the signal publisher (``signal_bus`` in ``/health``):
    signals or marks unwritten past the publisher's grace → 503, ``"status": "impaired"``."""

    def __init__(self, *args: Any, bus: Callable[[], tuple[bool, dict[str, Any]]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bus = bus

    def health(self, now: float | None = None) -> tuple[bool, dict[str, object]]:
        ok, body = super().health(now)
        bus_ok, body["signal_bus"] = self._bus()
        if ok and not bus_ok:
            body["status"] = "impaired"
        return ok and bus_ok, body


async def run_process(proc: ClusterProcess, stop: asyncio.Event) -> int:
    """Run a worker or the executor until ``stop`` (SIGTERM/SIGINT) or a crash-looping task; return the exit code.

    Guarded by :func:`shards.supervisor.run_guarded` (crash-loop delay before, the loop watchdog during). On the
    way out: the graceful stop within ``cluster.shutdown_timeout_s``; 1 when a supervised task crash-looped (the
    orchestrator restarts us; first told to the process's notification channels, if it has any: the executor's,
    waiting at most ``smc_quant.notify.ALARM_FLUSH_S`` for it to go out), 0 after a requested stop.
    """
    from shards.supervisor import run_guarded

    notified: bool | None = None

    async def life() -> bool:
        nonlocal notified
        if stop.is_set():  # stopped before it started: nothing to run or stop
            return True
        clean = False
        try:
            await proc.start()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(proc.supervisor.failed.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            clean = not proc.supervisor.failed.is_set()
            if not clean:  # told (bounded) before the stop closes the notifier's HTTP session
                reason = proc.supervisor.failure or "a supervised task gave up"
                notified = await tell_before_exit(proc.notifier, process_failed(proc.role, reason))
        finally:
            clean = await stop_within(proc.stop(), proc.settings.cluster.shutdown_timeout_s, proc.log) and clean
        return clean

    clean = await run_guarded(life, state_dir=proc.settings.state_dir, role=proc.role, cluster=proc.settings.cluster,
                              stop=stop, log=proc.log)
    if not clean:
        proc.log.error("process_failed", reason=proc.supervisor.failure or "stop failed", notified=notified)
    return 0 if clean else 1
