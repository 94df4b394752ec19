"""``smc-quant executor``: the single order-placing process of the multi-process deployment.

It consumes the signal stream with a consumer group (XREADGROUP; its own pending entries re-read and a
crashed consumer's claimed at start, XAUTOCLAIM), hands each signal to the :class:`~smc_quant.executor.Executor`
(risk, orders, persistence) and acknowledges the entries only once they were handled and their rows
written. The executor's exit loop, reconciliation and user-data stream do not depend on Redis: with
Redis down no new entries are taken, while open positions keep their exchange-side stops, the 2-hour
limit and reconciliation. Marks (each minute's closes from the workers) drive the paper account, the
replay clock and the exit checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

import structlog

from shards.bus import REDIS_FAILED, MarksReader, SignalConsumer
from shards.rules_refresh import RulesRefresh
from shards.supervisor import Heartbeat
from shards.worker import ClusterProcess
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.ops.health import TradingState
from smc_quant.ops.server import OpsServer
from smc_quant.settings import Settings
from smc_quant.store.retention import Housekeeper
from smc_quant.tasks import within


class ExecutorProcess(ClusterProcess):
    """One ``smc-quant executor`` process (exactly one per account); see the module docstring."""

    role = "executor"

    def __init__(self, settings: Settings, *, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        super().__init__(settings, logger=logger)
        self.trading: Any = None
        self.consumer: SignalConsumer | None = None
        self.marks: MarksReader | None = None
        self.minutes = 0
        self.interrupted = 0
        self.signal_failures = 0
        self._redis_down_since: float | None = None
        """Since when Redis has not answered (monotonic), ``None`` while it answers."""
        self.learner: Any = None
        self.housekeeper: Housekeeper | None = None
        self._ready = False
        self.rules_refresh: RulesRefresh | None = None

    async def start(self) -> None:
        """Recover and reconcile the book (TradingStack.start), then consume signals and marks."""
        from shards.trading import TradingStack
        from smc_quant.datasets import LEVERAGE_TIERS, data_dir

        await self._start_infra()
        assert self.universe is not None and self.session is not None and self.redis is not None
        c = self.settings.cluster
        tiers = data_dir() / LEVERAGE_TIERS
        self.rules_refresh = RulesRefresh(self.refresh_delistings, logger=self.log)
        self.trading = TradingStack(self.settings, filters=self.universe.filters, session=self.session,
                                    pool=self.pool, governor=self.governor,
                                    brackets_file=tiers if tiers.exists() else None, logger=self.log,
                                    delistings=self.universe.delistings, on_stale_rules=self.rules_refresh.request)
        await self.trading.start()
        await self._seed_returns()
        self._attach_learner()
        self._attach_housekeeping()
        self.consumer = SignalConsumer(self.redis, self.keys.signals, self.keys.signals_group, c.consumer_name,
                                       claim_idle_ms=int(c.claim_idle_s * 1000), logger=self.log)
        self.marks = MarksReader(self.redis, self.keys.marks)
        with contextlib.suppress(*REDIS_FAILED):  # the latest marks first: the replay clock before any signal
            for marks in await self.marks.read(block_ms=None):
                self.apply_marks(*marks)
        ops = self.settings.ops
        self.ops = OpsServer([], window_s=ops.freshness_window_s or 90.0, fraction=ops.fresh_fraction,
                             queue_depth=lambda _shard: 0, ready=lambda: self._ready, extra=self.metrics,
                             trading=self.health_state)
        await self.ops.start(ops.host, ops.port)
        self.supervisor.spawn("signals", self._signal_loop)
        self.supervisor.spawn("marks", self._marks_loop)
        self.supervisor.spawn("delistings", self._delistings_loop)
        self.supervisor.spawn("heartbeat", Heartbeat(self.report, interval_s=c.heartbeat_s, logger=self.log).run)
        self._ready = True
        self.log.info("executor_process_started", positions=len(self.trading.executor.book), ops=self.ops.port)

    def health_state(self) -> TradingState:
        """The trading stack's verdict inputs, and since when Redis (signals, marks) has been out of reach."""
        assert self.trading is not None
        state: TradingState = self.trading.health_state()
        return replace(state, bus_down_since=self._redis_down_since)

    async def _delistings_loop(self) -> None:
        """Re-read exchangeInfo every ``universe.refresh_s`` for the symbols' filters and scheduled delistings (the
        shard workers follow the symbol list; the executor trades with the current filters and stops entering
        the symbols about to go). An order refused on a stale rule reads it at once (``rules_refresh``)."""
        while True:
            await asyncio.sleep(self.settings.universe.refresh_s)
            await self.refresh_delistings()

    async def refresh_delistings(self) -> list[str] | None:
        """Re-read exchangeInfo once and hand its symbols' filters (a new listing the workers now analyse becomes
        tradable; a changed tick or step size is used from the next order) and its scheduled delistings to the
        trading stack; returns the newly scheduled symbols, or ``None`` after a failure (logged; the next round
        tries again)."""
        assert self.universe_source is not None
        try:
            await self.universe_source.refresh()
            current = self.universe_source.current
            if current is None:
                return []
            await self.trading.set_filters(current.filters)
            scheduled: list[str] = self.trading.set_delistings(current.delistings)
            return scheduled
        except Exception as exc:  # the loop must outlive any one round
            self.log.error("universe_refresh_failed", error=f"{type(exc).__name__}: {exc}")
            return None

    async def _seed_returns(self) -> None:
        """The correlation guard's last two hours of closes from PostgreSQL (the marks stream holds only the
        latest minutes), so it works from the first signal after a restart."""
        assert self.pool is not None and self.universe is not None
        from smc_quant.store.candles import CandleRepository

        returns = self.trading.returns
        history = await CandleRepository(self.pool).latest(self.universe.symbols, self.settings.feed.interval,
                                                             returns.size)
        for symbol, candles in history.items():
            returns.extend(symbol, [c.open_time for c in candles], [c.close for c in candles])

    def _attach_learner(self) -> None:
        """Closed trades are here, so the learner is too: retrain → gate → promote in the registry; the shard
        workers load the new champion from the registry within a minute (their model loop)."""
        if not self.settings.learner.enabled or self.trading.repo is None:
            return
        assert self.pool is not None and self.universe is not None
        from smc_quant.labels import BarrierSpec
        from smc_quant.model.learner import Learner, LearnerConfig, candle_history
        from smc_quant.store.candles import CandleRepository
        from smc_quant.store.models import ModelRegistry

        ls = self.settings.learner
        started, source = self.universe.symbols, self.universe_source

        def symbols() -> list[str]:  # those listed since the start too: the workers analyse them at once
            current = source.current if source is not None else None
            return sorted(set(started) | set(current.symbols if current is not None else ()))

        history = candle_history(CandleRepository(self.pool).fetch, symbols, int(ls.history_days * 86_400_000),
                                 self.trading.clock.wall_or_market, min_history=ls.min_history_candles,
                                 spec=BarrierSpec.for_hold(self.settings.trading.max_hold_s))

        async def promoted(version: int) -> None:
            self.log.warning("model_promoted", version=version, note="shard workers follow within a minute")

        self.learner = Learner(self.trading.repo, ModelRegistry(self.pool), history, LearnerConfig.of(ls),
                               on_promoted=promoted, on_outcome=self.trading.report_learned, log=self.log)
        learner = self.learner
        self.trading.executor.add_trade_listener(lambda _trade: learner.on_trade_closed())
        self.supervisor.spawn("learner", learner.run)

    def _attach_housekeeping(self) -> None:
        """Retention for the whole deployment (this process is the only executor): candles past
        ``feed.retention_days`` and old unpromoted candidates, deleted hourly."""
        assert self.pool is not None
        from smc_quant.store.candles import CandleRepository
        from smc_quant.store.models import ModelRegistry

        self.housekeeper = Housekeeper.of(self.settings, CandleRepository(self.pool), ModelRegistry(self.pool),
                                          self.trading.clock, logger=self.log)
        self.supervisor.spawn("housekeeping", self.housekeeper.run)

    async def stop(self) -> None:
        """Stop intake (no new entries), let the handled ones finish and persist, close. Positions stay
        protected by their exchange-side stops."""
        self._ready = False
        started = time.monotonic()
        await self.supervisor.stop()
        if self.rules_refresh is not None:
            await self.rules_refresh.stop()
        if self.trading is not None:
            try:
                await within(self.trading.executor.idle(), 4)
            except TimeoutError:
                self.log.error("executor_not_idle_at_stop")
            self.log.info("stop_step", step="idle", seconds=round(time.monotonic() - started, 3))
            await self.trading.executor.stop()
            self.log.info("stop_step", step="executor", seconds=round(time.monotonic() - started, 3))
            try:  # user stream and listenKey DELETE: bounded, the exchange-side stops protect the positions
                await within(self.trading.stop(), 3)
            except TimeoutError:
                self.log.error("broker_close_timeout", note="listenKey left to expire on the exchange")
            self.log.info("stop_step", step="trading", seconds=round(time.monotonic() - started, 3))
        await self._stop_infra()
        self.log.info("executor_process_stopped", seconds=round(time.monotonic() - started, 3))

    @property
    def _redis_down(self) -> bool:
        return self._redis_down_since is not None

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._redis_down:
            self._redis_down_since = time.monotonic()
            self.log.warning("redis_unavailable", error=type(exc).__name__,
                             note="no new entries; exits, stops and reconciliation continue")

    def _redis_ok(self) -> None:
        if self._redis_down:
            self._redis_down_since = None
            self.log.warning("redis_recovered")

    async def _signal_loop(self) -> None:
        assert self.consumer is not None
        executor = self.trading.executor
        grouped = False
        while True:
            try:
                if not grouped:
                    await self.consumer.ensure_group()
                    grouped = True
                batch = await self.consumer.read(count=100, block_ms=1000)
                self._redis_ok()
            except REDIS_FAILED as exc:
                self._redis_failed(exc)
                grouped = False
                self.consumer.rewind()  # what was delivered and not acknowledged is read again first
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            try:
                for _entry, signal in batch:
                    if signal is None:
                        continue
                    if self.consumer.redelivered and await self._interrupted(signal.signal_id):
                        continue
                    await executor.handle(signal)  # refuses a signal id it has seen (memory reloaded at start)
            except Exception as exc:  # e.g. PostgreSQL away: nothing acknowledged, the batch is read again
                self.signal_failures += 1
                self.log.error("signal_batch_failed", error=f"{type(exc).__name__}: {exc}",
                               note="not acknowledged: read again from the pending list, handled ones refused")
                self.consumer.rewind()
                await asyncio.sleep(1.0)
                continue
            await executor.idle()  # the signal rows are written: now the entries may leave the pending list
            try:
                await self.consumer.ack([entry for entry, _ in batch])
            except REDIS_FAILED as exc:  # not acked: re-read from our pending list, refused as duplicates
                self._redis_failed(exc)
                self.consumer.rewind()

    async def _interrupted(self, signal_id: str) -> bool:
        """A redelivered signal whose orders are already in the journal: a previous run died mid-order.

        Handling it again could send its entry a second time (a filled MARKET order's client id is no longer
        "open", so the exchange would accept the same id again); it is refused here, counted and logged —
        reconciliation reports the position the dead run opened.
        """
        repo = self.trading.repo
        if repo is None or self.trading.executor.seen(signal_id):
            return False
        orders = await repo.orders_for_signal(signal_id)
        if not orders:
            return False
        self.interrupted += 1
        self.trading.executor.book.remember(signal_id)  # a fresh copy of it (a worker's restart) is refused too
        self.log.error("signal_interrupted_by_crash", signal_id=signal_id, orders=len(orders),
                       note="not handled again; see reconciliation for its position")
        return True

    async def _marks_loop(self) -> None:
        assert self.marks is not None
        while True:
            try:
                minutes = await self.marks.read(block_ms=1000)
                self._redis_ok()
            except REDIS_FAILED as exc:
                self._redis_failed(exc)
                await asyncio.sleep(1.0)
                continue
            for marks in minutes:
                self.apply_marks(*marks)
            if minutes:
                self.minutes += len(minutes)
                await self.trading.on_minute()

    def apply_marks(self, open_time: int, symbols: list[str], closes: list[float],
                    bars: list[tuple[int, float, float, float] | None] | None = None) -> None:
        """One minute's closes: the replay clock, the marks, the paper account's prices (the bar's path when
        the worker sent the bar, as ``TradingStack.on_candle`` does in one process)."""
        trading = self.trading
        close_ms = open_time + MINUTE_MS
        if close_ms > trading.clock.latest_close_ms:
            trading.clock.latest_close_ms = close_ms
        path = self.settings.trading.paper_price_path
        for i, (symbol, close) in enumerate(zip(symbols, closes, strict=False)):
            price = Decimal(repr(float(close)))
            trading.executor.on_price(symbol, price)
            trading.returns.record(symbol, open_time, float(close))
            if trading.paper is None:
                continue
            bar = bars[i] if bars is not None and i < len(bars) else None
            if bar is not None:
                bar_open, o, h, low = bar
                trading.paper.on_bar(symbol, o, h, low, float(close), int(bar_open), path)
            else:
                trading.paper.on_price(symbol, price, close_ms - 1)

    def report(self) -> dict[str, Any]:
        """The heartbeat line: positions, PnL, signals consumed, bus state."""
        ex = self.trading.executor
        snap = ex.snapshot()
        st = self.consumer.stats if self.consumer else None
        return {"open_positions": len(ex.book), "wallet": str(snap.wallet_balance),
                "unrealized_pnl": str(snap.unrealized_pnl), "signals": ex.stats.signals,
                "opened": ex.stats.opened, "closed": ex.stats.closed,
                "bus_delivered": st.delivered if st else 0, "bus_claimed": st.claimed if st else 0,
                "redis_down": self._redis_down, "minutes": self.minutes, "halted": ex.halted}

    def metrics(self) -> dict[str, float]:
        """Extra gauges for /metrics."""
        out: dict[str, float] = dict(self.trading.metrics()) if self.trading is not None else {}
        if self.consumer is not None:
            st = self.consumer.stats
            out.update(bus_delivered=float(st.delivered), bus_acked=float(st.acked), bus_claimed=float(st.claimed),
                       bus_bad=float(st.bad))
        out["redis_down"] = float(self._redis_down)
        out.update(executor_signals_interrupted=float(self.interrupted),
                   executor_signal_batches_failed=float(self.signal_failures))
        if self.learner is not None:
            out.update(self.learner.stats.metrics())
        if self.housekeeper is not None:
            out.update(self.housekeeper.stats.metrics())
        if self.rules_refresh is not None:
            out.update(self.rules_refresh.metrics())
        return out
