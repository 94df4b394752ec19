"""The composition root: builds every component from one :class:`Settings` and runs the service.

Order of start: database (``DATABASE_URL`` or embedded) → migrations → pool → Redis (optional) →
HTTP session + REST client (one weight governor) → universe → cluster (warm start from PostgreSQL)
→ champion model (scores every feature batch; none: "no model, not trading") → ops endpoint.
``stop()`` reverses it: stop intake, drain queues, flush to PostgreSQL, close. :func:`run_until_signalled`
runs it until SIGTERM/SIGINT — or until a shard's feed or sink, or a background task, crash-looped past its
supervisor's restarts: the process then tells the notification channels, stops and exits 1 (``process_failed``) for
the orchestrator to start it again, warm from PostgreSQL, as the executor process does (``shards.worker.run_process``).
Every ``market_check_s`` (15 s) the market data is judged by the ``/health`` rule
(``smc_quant.ops.health.MarketWatch``): a shard turning stale, and every shard fresh again, is logged and told to
the channels.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
import asyncpg
import redis.asyncio as aioredis
import structlog

from shards.bus import redis_client
from shards.champion import follow_champion, load_champion
from shards.cluster import ClusterManager
from shards.rules_refresh import RulesRefresh
from shards.supervisor import Heartbeat, Supervisor, run_guarded, stop_within, traceback_tail
from smc_quant.domain.candle_store import FIELDS
from smc_quant.domain.candles import MINUTE_MS, Candle, interval_ms
from smc_quant.exchange.governor import SharedWeightBudget, WeightGovernor
from smc_quant.exchange.rest import BinanceRestClient, ExchangeUnreachable
from smc_quant.model.predictor import MLPredictor
from smc_quant.model.scoring import BatchScorer
from smc_quant.notify import process_failed, tell_before_exit
from smc_quant.ops.health import MARKET_CHECK_S, MarketWatch
from smc_quant.ops.server import OpsServer
from smc_quant.settings import Settings
from smc_quant.store.candles import CandleRepository
from smc_quant.store.db import SERVICE_COMMAND_TIMEOUT_S, create_pool
from smc_quant.store.embedded import EmbeddedPostgres, resolve_database
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry
from smc_quant.store.retention import Housekeeper
from smc_quant.store.universe_cache import UniverseCache
from smc_quant.universe import BinanceUniverse, Universe, UniverseChange


class ServiceUnavailable(Exception):
    """The service cannot start (exchange unreachable with nothing cached); the message is one line."""


class Service:
    """One process of smc-quant: every shard of ``settings.shard_count`` plus the ops endpoint."""

    market_check_s = MARKET_CHECK_S
    """How often the market data is judged for the chat (:meth:`check_market`; ``/health`` judges on each request)."""

    def __init__(self, settings: Settings, *, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.settings = settings
        self.log = logger or structlog.get_logger()
        self.embedded: EmbeddedPostgres | None = None
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.session: aiohttp.ClientSession | None = None
        self.rest: BinanceRestClient | None = None
        self.governor: WeightGovernor | None = None
        self.universe: Universe | None = None
        self.cluster: ClusterManager | None = None
        self.universe_source: BinanceUniverse | None = None
        self._refreshing = asyncio.Lock()
        self.rules_refresh: RulesRefresh | None = None
        self.ops: OpsServer | None = None
        self.market_watch: MarketWatch | None = None
        self.scorer: BatchScorer | None = None
        self.trading: Any = None
        self.learner: Any = None
        self.housekeeper: Housekeeper | None = None
        c = settings.cluster
        self.supervisor = Supervisor(max_restarts=c.max_task_restarts, window_s=c.crash_window_s, logger=self.log)
        """The background tasks (universe refresh, champion, learner, housekeeping, heartbeat): one that raises is
        logged and restarted, one that crash-loops ends the process like a shard's feed (they used to be plain
        tasks: a crash ended the learning or the universe refresh silently, for good)."""
        self._frames_at_beat: tuple[float, int] = (time.monotonic(), 0)
        self._ready = False

    async def start(self) -> None:
        """Bring every component up; raise :class:`ServiceUnavailable` with one clear line if it cannot."""
        s = self.settings
        dsn, self.embedded = await resolve_database(s)
        applied = await apply_migrations(dsn)
        # closed trades still commit synchronously; a statement stuck 5 minutes raises (retried by its caller)
        self.pool = await create_pool(dsn, synchronous_commit=False, command_timeout=SERVICE_COMMAND_TIMEOUT_S)
        self.log.info("database_ready", embedded=self.embedded is not None, migrations_applied=len(applied))
        self.redis = await self._connect_redis()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.venue.request_timeout_s))
        shared = (SharedWeightBudget(self.redis, ClusterKeys(s.cluster.key_prefix).rest_weight)
                  if self.redis is not None else None)  # other processes on this IP count too
        self.governor = WeightGovernor(s.venue.weight_limit_per_minute, s.venue.weight_headroom, shared=shared)
        self.rest = BinanceRestClient(self.session, s.venue.rest_base, self.governor,
                                      timeout_s=s.venue.request_timeout_s, logger=self.log)
        self.universe = await self._load_universe()
        await self._build_trading()  # a live account we cannot trade is refused before the shards are warmed
        repo = CandleRepository(self.pool)
        self.cluster = ClusterManager(s, symbols=self.universe.symbols, session=self.session,
                                      repository=repo, backfill=self._backfill, logger=self.log)
        await self.cluster.seed()
        self.scorer = await self._attach_model()  # subscribed before the feeds start: no batch goes uncounted
        await self._attach_trading()
        self._attach_learner()
        self._attach_housekeeping()
        gc.collect()  # warm start done: drop its garbage, then move everything long-lived so far (rings,
        gc.freeze()  # engine state, modules) out of the collector's scans, which would pause the loop
        self.cluster.start()
        window = self._freshness_window()
        self.ops = OpsServer(self.cluster.metrics, window_s=window,
                             fraction=s.ops.fresh_fraction, queue_depth=self.cluster.queue_depth,
                             ready=lambda: self._ready, extra=self._extra_metrics,
                             trading=lambda: self.trading.health_state() if self.trading is not None else None)
        self.market_watch = MarketWatch(window_s=window, fraction=s.ops.fresh_fraction, started=time.monotonic())
        await self.ops.start(s.ops.host, s.ops.port)
        self.supervisor.spawn("universe-refresh", self._refresh_universe)
        heartbeat = Heartbeat(self.report, interval_s=s.cluster.heartbeat_s, logger=self.log)
        self.supervisor.spawn("heartbeat", heartbeat.run)
        self.supervisor.spawn("market-watch", self._watch_market)
        self._ready = True
        self.log.info("service_started", symbols=len(self.universe.symbols), shards=s.shard_count,
                      universe_source=self.universe.source, ops=f"http://{s.ops.host}:{self.ops.port}")

    async def _attach_model(self) -> BatchScorer:
        """Load the registry's champion (if any) and score every analyzer's feature batches with it."""
        assert self.pool is not None and self.cluster is not None
        predictor, registry = MLPredictor(), ModelRegistry(self.pool)
        await load_champion(registry, predictor, self.log)  # refused (e.g. another schema): no model, not trading
        # A promotion by the learner swaps at once; an operator's promote or rollback is followed within a minute.
        self.supervisor.spawn("champion", lambda: follow_champion(registry, predictor, self.log))
        scorer = BatchScorer(predictor, self.log)
        for analyzer in self.cluster.analyzers:
            analyzer.subscribe(scorer)
        return scorer

    async def _build_trading(self) -> None:
        """The trading stack (paper account, or signed REST with keys); live, the exchange account's modes are
        checked now (``TradingStack.check_account``: exit 2 before the shards load and warm their history)."""
        assert self.universe is not None and self.session is not None
        from shards.trading import TradingStack
        from smc_quant.datasets import LEVERAGE_TIERS, data_dir

        tiers = data_dir() / LEVERAGE_TIERS
        self.rules_refresh = RulesRefresh(self.refresh_universe, logger=self.log)
        self.trading = TradingStack(self.settings, filters=self.universe.filters, session=self.session,
                                    pool=self.pool, governor=self.governor,
                                    brackets_file=tiers if tiers.exists() else None, logger=self.log,
                                    model_version=lambda: self.scorer.predictor.version if self.scorer else None,
                                    delistings=self.universe.delistings, on_stale_rules=self.rules_refresh.request,
                                    other_filters=self.universe.other_filters)
        await self.trading.check_account()

    async def _attach_trading(self) -> None:
        """Strategy on scored batches → executor → broker, wired to the feeds and the scorer, then started."""
        assert self.cluster is not None and self.scorer is not None and self.trading is not None
        close = FIELDS.index("close")
        for feed in self.cluster.feeds:  # first: marks and paper prices move before the minute's signals
            feed.listeners.insert(0, self.trading.on_candle)
            for symbol in feed.symbols:  # the warm start's candles: the correlation guard works from minute one,
                times, values = feed.store.ring(symbol).arrays()  # and a paper account has its last prices
                self.trading.returns.extend(symbol, times, values[:, close])
                if len(times):  # a replay's clock is at the newest stored close when the executor recovers: at 0,
                    self.trading.clock.advance_to(int(times[-1]) + MINUTE_MS)  # its day was 1970 (losses forgotten)
                if self.trading.paper is not None and len(times):
                    self.trading.paper.on_price(symbol, Decimal(repr(float(values[-1, close]))),
                                                int(times[-1]) + MINUTE_MS - 1)
        self.scorer.subscribe(self.trading.on_scores)
        await self.trading.start()
        self.log.info("trading_ready", mode=self.settings.mode, broker=type(self.trading.broker).__name__,
                      enabled=self.settings.trading.enabled, positions=len(self.trading.executor.book))

    def _attach_learner(self) -> None:
        """The self-learning loop: closed trades → retrain (worker thread) → gate → hot-swap the champion."""
        if not self.settings.learner.enabled or self.trading is None or self.trading.repo is None:
            return
        assert self.pool is not None and self.universe is not None and self.scorer is not None
        from smc_quant.labels import BarrierSpec
        from smc_quant.model.learner import Learner, LearnerConfig, candle_history

        ls = self.settings.learner
        registry = ModelRegistry(self.pool)
        history = candle_history(CandleRepository(self.pool).fetch, self._watched,
                                 int(ls.history_days * 86_400_000), self.trading.clock.wall_or_market,
                                 min_history=ls.min_history_candles,
                                 spec=BarrierSpec.for_hold(self.settings.trading.max_hold_s))
        predictor = self.scorer.predictor

        async def promoted(version: int) -> None:
            predictor.load(await registry.load(version), version=version)
            self.log.warning("model_hot_swapped", version=version, compiled=predictor.compiled)

        self.learner = Learner(self.trading.repo, registry, history, LearnerConfig.of(ls),
                               on_promoted=promoted, on_outcome=self.trading.report_learned, log=self.log)
        learner = self.learner
        self.trading.executor.add_trade_listener(lambda _trade: learner.on_trade_closed())
        self.supervisor.spawn("learner", learner.run)

    def _attach_housekeeping(self) -> None:
        """Retention: candles past ``feed.retention_days`` and old unpromoted candidates, deleted hourly."""
        assert self.pool is not None and self.trading is not None
        self.housekeeper = Housekeeper.of(self.settings, CandleRepository(self.pool), ModelRegistry(self.pool),
                                          self.trading.clock, logger=self.log)
        self.supervisor.spawn("housekeeping", self.housekeeper.run)

    async def _connect_redis(self) -> aioredis.Redis | None:
        if not self.settings.redis_url:
            return None
        client = redis_client(self.settings.redis_url)  # bounded: a Redis that hangs never hangs the service
        try:
            await client.ping()
        except Exception as exc:
            self.log.warning("redis_unavailable", error=type(exc).__name__)
            await client.aclose()
            return None
        return client

    async def _load_universe(self) -> Universe:
        assert self.rest is not None and self.pool is not None
        try:
            await self.rest.ping()
        except ExchangeUnreachable as exc:
            self.log.error("exchange_unreachable", url=self.settings.venue.rest_base, reason=str(exc),
                           hint="offline? run `smc-quant demo` to use the built-in emulator")
            cache = await UniverseCache(self.pool).load()
            if cache is None:
                raise ServiceUnavailable(
                    f"cannot reach the exchange at {self.settings.venue.rest_base} and no universe is cached; "
                    "for an offline demo run: smc-quant demo"
                ) from None
        self.universe_source = BinanceUniverse(self.rest, UniverseCache(self.pool), self.redis,
                                               self.settings.universe, logger=self.log)
        return await self.universe_source.load()

    async def _refresh_universe(self) -> None:
        """:meth:`refresh_universe` every ``universe.refresh_s``."""
        while True:
            await asyncio.sleep(self.settings.universe.refresh_s)
            await self.refresh_universe()

    async def refresh_universe(self) -> UniverseChange | None:
        """Re-read exchangeInfo once and follow it at once, without a restart:

        - the trading stack gets the symbols' current filters (a new listing becomes tradable, a changed tick or
          step size is used from the next order) and the scheduled delistings;
        - a new symbol joins its shard (subscribed, its recent history fetched, analysed, counted for
          ``/health``: ``ClusterManager.follow``), after its filters;
        - a removed one stops counting for ``/health`` and holding the minute's analysis (its stream falls
          silent), and counts again if it is listed again.

        Every ``universe.refresh_s``, and at once when a live order is refused on a rule our filters got wrong
        (``rules_refresh``). A failure is logged and returns ``None``; the next round tries again (an exchange that
        does not answer keeps the current universe)."""
        assert self.universe_source is not None
        async with self._refreshing:  # the hourly round and an order refused on a stale rule (RulesRefresh)
            return await self._refresh_universe_once(self.universe_source)

    async def _refresh_universe_once(self, source: BinanceUniverse) -> UniverseChange | None:
        try:
            change = await source.refresh()
            current = source.current
            if self.trading is not None and current is not None:
                await self.trading.set_filters(current.filters)
                self.trading.set_delistings(current.delistings)
            if (change.added or change.removed) and current is not None:
                followed = await self.cluster.follow(current.symbols) if self.cluster is not None else None
                self.log.warning("universe_changed", added=list(change.added), removed=list(change.removed),
                                 subscribed=list(followed.added) if followed else [],
                                 health_retired=list(followed.retired) if followed else [],
                                 health_restored=list(followed.restored) if followed else [])
            return change
        except Exception as exc:  # the loop must outlive any one round
            self.log.error("universe_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            return None

    def _watched(self) -> list[str]:
        """Every symbol the shards watch now (new listings included), for the learner's history."""
        return sorted({s for feed in self.cluster.feeds for s in feed.symbols} if self.cluster is not None
                      else self.universe.symbols if self.universe is not None else ())

    async def _backfill(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        assert self.rest is not None
        step = interval_ms(interval)
        wanted = (end_ms - start_ms) // step + 1
        limit = max(1, min(self.settings.feed.backfill_limit, wanted))
        return await self.rest.closed_klines(symbol, interval, start_ms, end_ms, now_ms=end_ms + step, limit=limit)

    def _freshness_window(self) -> float:
        ops = self.settings.ops
        if ops.freshness_window_s is not None:
            return ops.freshness_window_s
        return interval_ms(self.settings.feed.interval) / 1000 + ops.freshness_grace_s

    def _extra_metrics(self) -> dict[str, float]:
        gov: Any = self.governor
        out: dict[str, float] = {}
        if gov is not None:
            out.update(rest_weight_used=float(gov.used_weight), rest_rate_limited_429=float(gov.rate_limited_429),
                       rest_banned_418=float(gov.banned_418), rest_throttled=float(gov.throttled))
        if self.rest is not None:
            out.update(rest_unreadable=float(self.rest.unreadable),
                       rest_rows_rejected=float(sum(self.rest.rows_rejected.values())))
        if self.cluster is not None:
            stats = [a.stats for a in self.cluster.analyzers]
            out.update(feature_batches=float(sum(s.batches for s in stats)),
                       feature_rows=float(sum(s.rows for s in stats)),
                       feature_batch_max_seconds=max((s.max_compute_s for s in stats), default=0.0),
                       feature_candles_rejected=float(sum(s.rejected_candles for s in stats)),
                       feature_sink_errors=float(sum(s.sink_errors for s in stats)))
        if self.scorer is not None:
            out.update(self.scorer.metrics())
        if self.trading is not None:
            out.update(self.trading.metrics())
        if self.learner is not None:
            out.update(self.learner.stats.metrics())
        if self.housekeeper is not None:
            out.update(self.housekeeper.stats.metrics())
        if self.rules_refresh is not None:
            out.update(self.rules_refresh.metrics())
        return out

    async def _watch_market(self) -> None:
        """:meth:`check_market` every ``market_check_s``: the heartbeat (15 min) would tell an outage that late."""
        while True:
            await asyncio.sleep(self.market_check_s)
            self.check_market()

    def check_market(self, now: float | None = None) -> bool:
        """The market-data verdict at monotonic ``now`` by the ``/health`` rule (every shard fresh: ``True``); a shard
        turning stale, a lasting outage (hourly) and the recovery are logged and sent to the notification channels
        (:class:`~smc_quant.ops.health.MarketWatch`). Run every ``market_check_s``."""
        if self.market_watch is None or self.cluster is None:
            return True
        return self.market_watch.check(self.cluster.metrics, time.monotonic() if now is None else now, self.log,
                                       self.trading.notifier.notify if self.trading is not None else None)

    def report(self) -> dict[str, Any]:
        """The heartbeat line (every ``cluster.heartbeat_s``): per-shard throughput and lag, open positions,
        PnL, model version — proof of life at the default WARNING level."""
        now = time.monotonic()
        shards: dict[str, Any] = {}
        frames = 0
        if self.cluster is not None:
            last_t, _ = self._frames_at_beat
            for feed in self.cluster.feeds:
                m = feed.metrics
                frames += m.frames
                shards[str(feed.shard)] = {"frames": m.frames, "queue": feed.queue.qsize(),
                                           "lag_s": round(m.lag_s(now), 1)}  # as /metrics: current symbols
            elapsed = max(1e-9, now - last_t)
            shards["frames_per_s"] = round((frames - self._frames_at_beat[1]) / elapsed, 2)
        self._frames_at_beat = (now, frames)
        out: dict[str, Any] = {"shards": shards,
                               "model_version": self.scorer.predictor.version if self.scorer else None}
        if self.trading is not None:
            ex = self.trading.executor
            snap = ex.snapshot()
            st = self.trading.scalper.stats
            out.update(open_positions=len(ex.book), wallet=str(snap.wallet_balance),
                       unrealized_pnl=str(snap.unrealized_pnl), setups=st.setups,
                       best_confidence=round(st.best_confidence, 4), halted=ex.halted)
        return out

    async def stop(self) -> None:
        """Stop intake, drain, flush, close — each step runs even if an earlier one failed."""
        self._ready = False
        if self.trading is not None:  # the feed's last flush (cluster.stop) scores a minute: enter none of it
            self.trading.executor.stop_intake()
        await self.supervisor.stop()
        if self.rules_refresh is not None:
            await self.rules_refresh.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.trading is not None:
            try:
                await self.trading.stop()
            except Exception as exc:  # the rest of the stop goes on; what was skipped is said
                self.log.error("trading_stop_failed", error=f"{type(exc).__name__}: {exc}",
                               traceback=traceback_tail(exc))
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
        if self.embedded is not None:
            await self.embedded.stop()
        self.log.info("service_stopped")


async def run_until_signalled(service: Service, stop: asyncio.Event) -> bool:
    """Start ``service``, wait for ``stop`` or a task that failed, then shut it down in order within
    ``cluster.shutdown_timeout_s``.

    ``False`` — the command exits 1 — when a shard's feed or sink, or a background task (universe refresh, champion,
    learner, housekeeping, heartbeat), crashed more than ``cluster.max_task_restarts`` times within
    ``cluster.crash_window_s`` (told to the notification channels, waiting at most ``smc_quant.notify.ALARM_FLUSH_S``
    for it to go out, then logged ``process_failed``: that shard's symbols would otherwise stay unwatched, their
    marks frozen, or the learning stopped, until someone intervenes; the orchestrator restarts the process, warm
    from PostgreSQL), or when the stop overran or failed (``shutdown_incomplete``)."""
    failure: str | None = None
    notified: bool | None = None
    try:
        await service.start()
        assert service.cluster is not None
        failure = await _until_stopped_or_failed(stop, (service.cluster, service.supervisor))
        if failure is not None:  # told (bounded) before the stop closes the notifier's HTTP session
            notifier = service.trading.notifier if service.trading is not None else None
            notified = await tell_before_exit(notifier, process_failed("run", failure))
    finally:
        clean = await stop_within(service.stop(), service.settings.cluster.shutdown_timeout_s, service.log)
    if failure is not None:
        service.log.error("process_failed", reason=failure, recovery="exit 1: the orchestrator restarts the service",
                          notified=notified)
        return False
    return clean


async def run_service(service: Service, stop: asyncio.Event) -> bool:
    """:func:`run_until_signalled` as `smc-quant run` runs it, guarded like the cluster processes
    (:func:`shards.supervisor.run_guarded`): a start delayed by ``cluster.crash_delay_s`` after more than
    ``cluster.crash_limit`` crashed runs within ``cluster.crash_window_s`` (kept in the state dir, so a crash loop
    under ``restart: unless-stopped`` does not hammer the exchange and the database), and the loop watchdog that
    logs what blocks the event loop. A run that ends unclean, or does not start, counts as a crash."""
    return await run_guarded(lambda: run_until_signalled(service, stop), state_dir=service.settings.state_dir,
                             role="run", cluster=service.settings.cluster, stop=stop, log=service.log)


class _Failing(Protocol):
    @property
    def failed(self) -> asyncio.Event: ...

    @property
    def failure(self) -> str | None: ...


async def _until_stopped_or_failed(stop: asyncio.Event, watched: Sequence[_Failing]) -> str | None:
    """Wait for ``stop`` or for one of the ``watched`` supervisors to give up; the failure, or None after a
    requested stop."""
    waiters = [asyncio.ensure_future(stop.wait()), *(asyncio.ensure_future(w.failed.wait()) for w in watched)]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    for w in watched:
        if w.failed.is_set():
            return w.failure or "a supervised task gave up"
    return None
