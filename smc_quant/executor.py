"""The executor: exactly one per account. Signals in; risk decisions, protected positions and trades out.

Data flow::

    submit(signal) ─► bounded queue ─► RiskManager.evaluate ─► signals table (decision + reason)
                                         └─ open / rotate ─► SmartOrderManager.open ─► positions table
    broker events (user-data stream | paper account) ─► one ordered task:
        fills table ─► exit fills complete a position ─► cancel the leftover protection ─► trades +
        experience (one transaction) ─► RiskManager.on_trade_closed ─► learner ─► notification
    every ``exit_check_interval_s`` (and on every minute close): RiskManager.due_exits ─► close (2 h limit)
    at start and every ``reconcile_interval_s``: exchange positions/orders vs our book, repaired and logged

Restarts: the book (positions with entry times and protection ids) and the fills of open positions are
read back from PostgreSQL; the exchange is asked what happened meanwhile. Client ids are derived from
the signal id, so a signal handled twice maps to the same orders and the exchange refuses duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

import structlog

from smc_quant import notify as messages
from smc_quant.domain.trading import (
    ZERO,
    AccountSnapshot,
    ExitReason,
    Fill,
    Position,
    Signal,
    Trade,
    direction,
    entry_side,
    exit_side,
)
from smc_quant.errors import SmcError
from smc_quant.orders.broker import (
    AccountEvent,
    AccountUpdate,
    AlgoUpdate,
    Broker,
    ExchangePosition,
    OrderUpdate,
    StreamExpired,
)
from smc_quant.orders.client_ids import Leg, parse_client_order_id, signal_digest

DAY_MS = 86_400_000


class Notify(Protocol):
    def notify(self, text: str, kind: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    queue_size: int = 1024
    exit_check_interval_s: float = 15.0
    reconcile_interval_s: float = 180.0
    taker_fee: Decimal = Decimal("0.0005")
    """Used only to estimate a fee the exchange did not report (flagged in the log)."""
    close_on_breaker: bool = False
    dedupe_window_ms: int = 86_400_000
    """Signal ids created this recently are reloaded at start to refuse duplicates."""
    dedupe_max: int = 100_000


@dataclass(slots=True)
class BookEntry:
    """One open position and what we know about its orders and fills."""

    position: Position
    signal: Signal | None
    sl_client_id: str | None = None
    tp_client_id: str | None = None
    status: str = "open"
    exit_reason: ExitReason | None = None
    features: tuple[float, ...] = ()
    schema_version: str = ""
    model_version: int | None = None
    signal_time_ms: int = 0


@dataclass(slots=True)
class ExecutorStats:
    signals: int = 0
    signals_dropped: int = 0
    duplicates: int = 0
    opened: int = 0
    skipped: int = 0
    rotations: int = 0
    closed: int = 0
    forced_exits: int = 0
    events: int = 0
    fills: int = 0
    reconciliations: int = 0
    repairs: int = 0
    alarms: int = 0
    errors: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)


class Executor:
    """Turns signals into protected positions and closed trades; see the module docstring."""

    def __init__(self, *, broker: Broker, manager: Any, risk: Any, repo: Any | None = None,
                 notifier: Notify | None = None, on_trade_closed: Callable[[Trade], None] | None = None,
                 clock: Callable[[], int], config: ExecutorConfig | None = None,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.broker = broker
        self.manager = manager
        self.risk = risk
        self.repo = repo
        self.notifier = notifier
        self._trade_listeners: list[Callable[[Trade], None]] = [on_trade_closed] if on_trade_closed else []
        self.clock = clock
        self.config = config or ExecutorConfig()
        self.log = logger or structlog.get_logger().bind(component="executor")
        self.stats = ExecutorStats()
        self.book: dict[str, BookEntry] = {}
        self.marks: dict[str, Decimal] = {}
        self.wallet = ZERO
        self._summary_day: int | None = None
        self.trades: list[Trade] = []
        self._signals: asyncio.Queue[Signal] = asyncio.Queue(self.config.queue_size)
        self._events: asyncio.Queue[AccountEvent] = asyncio.Queue()
        self._digests: dict[str, str] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._symbol_locks: dict[str, asyncio.Lock] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._pending_writes: set[asyncio.Future[bool]] = set()
        self._seen: dict[str, None] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.started = asyncio.Event()

    # -- intake ------------------------------------------------------------------------------------
    def submit(self, signal: Signal) -> bool:
        """Queue a signal; a full queue drops it (counted, logged) — the feed never waits for orders."""
        try:
            self._signals.put_nowait(signal)
        except asyncio.QueueFull:
            self.stats.signals_dropped += 1
            self.log.warning("signal_dropped", reason="queue_full", signal_id=signal.signal_id)
            return False
        self._idle.clear()
        return True

    def seen(self, signal_id: str) -> bool:
        """Whether ``signal_id`` was handled (or adopted) by this executor within the duplicate window."""
        return signal_id in self._seen

    def add_trade_listener(self, listener: Callable[[Trade], None]) -> None:
        """Call ``listener(trade)`` after every closed trade is stored (the learner counts here)."""
        self._trade_listeners.append(listener)

    def on_price(self, symbol: str, price: Decimal) -> None:
        """Latest mark for ``symbol`` (fed by the candle stream)."""
        self.marks[symbol] = price

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the book, reconcile with the exchange, then start the loops."""
        self.broker.subscribe(self._events.put_nowait)
        await self._recover()
        await self.reconcile()
        self._tasks = [
            asyncio.create_task(self._signal_loop(), name="executor-signals"),
            asyncio.create_task(self._event_loop(), name="executor-events"),
            asyncio.create_task(self._exit_loop(), name="executor-exits"),
            asyncio.create_task(self._reconcile_loop(), name="executor-reconcile"),
        ]
        self.started.set()
        self.log.info("executor_started", positions=len(self.book))

    async def stop(self) -> None:
        """Stop taking signals; positions stay protected by their exchange-side orders."""
        if self._finishing or self._pending_writes:
            await asyncio.gather(*self._finishing, *self._pending_writes, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def idle(self) -> None:
        """Wait until every queued signal and account event has been handled (tests, shutdown)."""
        while True:
            await self._idle.wait()
            await self._events.join()
            if self._finishing or self._pending_writes:
                await asyncio.gather(*self._finishing, *self._pending_writes, return_exceptions=True)
                continue
            if self._signals.empty() and self._events.empty() and self._idle.is_set():
                return

    # -- signals -----------------------------------------------------------------------------------
    async def _signal_loop(self) -> None:
        while True:
            signal = await self._signals.get()
            try:
                await self.handle(signal)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad signal never stops the executor
                self.stats.errors += 1
                self.log.error("signal_failed", signal_id=signal.signal_id, error=f"{type(exc).__name__}: {exc}")
                self._notify(messages.error("signal failed", f"{signal.symbol}: {type(exc).__name__}"), "error")
            finally:
                if self._signals.empty():
                    self._idle.set()

    def snapshot(self) -> AccountSnapshot:
        """The account as the risk manager sees it: the wallet from the user-data stream (ACCOUNT_UPDATE,
        refreshed over REST at start and at every reconciliation — never polled per signal), positions from
        the book at the latest marks, available = equity − the book's margin."""
        positions = {s: replace(e.position, mark_price=self.marks.get(s, e.position.entry_price))
                     for s, e in self.book.items()}
        unrealized = sum((p.unrealized_pnl for p in positions.values()), ZERO)
        used = sum((p.margin for p in positions.values()), ZERO)
        available = self.wallet + unrealized - used
        return AccountSnapshot(self.wallet, unrealized, available, positions, self.clock())

    async def refresh_balance(self) -> Decimal:
        """Read the wallet balance over REST (start, reconciliation)."""
        balance = await self.broker.balance()
        self.wallet = balance.wallet
        return balance.margin_balance

    async def handle(self, signal: Signal) -> None:
        """Risk decision, persistence, then orders — one signal.

        Duplicates are refused from memory (the ids of the last ``dedupe_window_ms``, reloaded from PostgreSQL
        at start; the signals table's primary key is the backstop), so the signal row is written *after* the
        entry went out, off the order path; the order journal row (which names the signal id) is still
        written before the order leaves, so a crash in between loses nothing a restart needs.
        """
        self.stats.signals += 1
        if signal.signal_id in self._seen:
            self.stats.duplicates += 1
            self.log.info("signal_seen_before", signal_id=signal.signal_id)
            return
        self._remember(signal.signal_id)
        self._digests[signal_digest(signal.signal_id)] = signal.signal_id
        account = self.snapshot()
        mark = self.marks.get(signal.symbol, signal.price)
        now = self.clock()
        decision = self.risk.evaluate(signal, account, mark, now)
        if decision.action == "skip":
            self._record(signal, decision)
            self.stats.skipped += 1
            self.stats.skip_reasons[decision.reason] = self.stats.skip_reasons.get(decision.reason, 0) + 1
            self.log.info("signal_skipped", signal_id=signal.signal_id, reason=decision.reason)
            return
        if decision.action == "rotate" and decision.close_symbol in self.book:
            self.stats.rotations += 1
            await self.close(decision.close_symbol, ExitReason.ROTATION)
        async with self._lock(signal.symbol):
            try:
                result = await self.manager.open(decision, mark)
            finally:  # after the entry left: the order journal (written before it) already names the signal
                self._record(signal, decision)
            position = getattr(result, "position", None)
            if position is None:
                self.log.warning("entry_not_opened", signal_id=signal.signal_id,
                                 reason=getattr(result, "reason", "unknown"))
                return
            entry = BookEntry(position, signal, _client(getattr(result, "sl", None)),
                              _client(getattr(result, "tp", None)), features=signal.features,
                              schema_version=signal.schema_version, model_version=signal.model_version,
                              signal_time_ms=signal.open_time)
            self.book[signal.symbol] = entry
            await self._save(entry)
        self.stats.opened += 1
        self.log.info("position_opened", symbol=signal.symbol, side=position.side, qty=str(position.quantity),
                      entry=str(position.entry_price), leverage=position.leverage, signal_id=signal.signal_id)
        self._notify(messages.opened(signal, position), "open")
        # fills that arrived before the entry returned may already complete the position
        self._check_complete(signal.symbol)

    def _record(self, signal: Signal, decision: Any) -> None:
        """Write the signal and its decision in the background (awaited by :meth:`idle` and :meth:`stop`)."""
        if self.repo is None:
            return
        task = asyncio.ensure_future(
            self.repo.record_signal(signal, decision.action, decision.reason, decision.as_record()))
        self._pending_writes.add(task)
        task.add_done_callback(self._written)

    def _remember(self, signal_id: str) -> None:
        self._seen[signal_id] = None
        while len(self._seen) > self.config.dedupe_max:
            del self._seen[next(iter(self._seen))]

    def _written(self, task: asyncio.Future[bool]) -> None:
        self._pending_writes.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.stats.errors += 1
            self.log.error("signal_not_recorded", error=f"{type(exc).__name__}: {exc}")
        elif not task.result():
            self.log.warning("signal_row_existed", note="a duplicate passed the in-memory filter")

    # -- exits -------------------------------------------------------------------------------------
    async def close(self, symbol: str, reason: ExitReason) -> None:
        """Close ``symbol``'s position at market (protection cancelled first); idempotent."""
        entry = self.book.get(symbol)
        if entry is None or entry.status == "closing":
            return
        async with self._lock(symbol):
            entry.status, entry.exit_reason = "closing", reason
            await self._save(entry)
            mark = self.marks.get(symbol)
            try:
                result = await self.manager.close(entry.position, reason, mark=mark)
                failed = None if getattr(result, "closed", True) else str(getattr(result, "detail", "alarm"))
            except SmcError as exc:
                failed = str(exc)
            if failed is not None:
                self.stats.alarms += 1
                self.log.error("exit_failed", symbol=symbol, reason=reason.value, error=failed)
                self._notify(messages.error(f"exit failed {symbol} ({reason.value})", failed), "error")
                entry.status = "open"
                return
        if reason is ExitReason.TIME:
            self.stats.forced_exits += 1
            self._notify(messages.forced_exit(entry.position), "forced_exit")

    def daily_summary(self) -> bool:
        """Once per UTC day (checked with the exits): yesterday's trades, net PnL and the equity, as one message."""
        day = self.clock() // DAY_MS
        if self._summary_day is None:
            self._summary_day = day
            return False
        if day <= self._summary_day:
            return False
        start, end = self._summary_day * DAY_MS, day * DAY_MS
        self._summary_day = day
        done = [t for t in self.trades if start <= t.exit_time_ms < end]
        self._notify(messages.daily_summary(done, self.snapshot().equity), "daily_summary")
        self.trades = [t for t in self.trades if t.exit_time_ms >= end - DAY_MS]  # keep memory bounded
        return True

    async def check_exits(self) -> int:
        """Close every position past its holding limit; returns how many were closed."""
        self.daily_summary()
        due = self.risk.due_exits([e.position for e in self.book.values() if e.status == "open"], self.clock())
        for position, reason in due:
            await self.close(position.symbol, reason)
        return len(due)

    async def _exit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.exit_check_interval_s)
            try:
                await self.check_exits()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.log.error("exit_check_failed", error=f"{type(exc).__name__}: {exc}")

    # -- account events ----------------------------------------------------------------------------
    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.log.error("event_failed", kind=type(event).__name__, error=f"{type(exc).__name__}: {exc}")
            finally:
                self._events.task_done()

    async def _on_event(self, event: AccountEvent) -> None:
        self.stats.events += 1
        if isinstance(event, OrderUpdate):
            if event.execution == "TRADE" and event.last_qty > 0:
                await self._on_fill(event)
        elif isinstance(event, AlgoUpdate):
            if event.status == "REJECTED" and event.symbol in self.book:
                entry = self.book[event.symbol]
                if event.client_algo_id in (entry.sl_client_id, entry.tp_client_id) and entry.status == "open":
                    self.log.warning("protection_rejected", symbol=event.symbol, reason=event.reject_reason)
        elif isinstance(event, AccountUpdate):
            if event.wallet_balance is not None:
                self.wallet = event.wallet_balance
            for pos in event.positions:
                if isinstance(pos, tuple) and pos[0] in self.book:
                    self._check_complete(pos[0])
        elif isinstance(event, StreamExpired):
            await self.reconcile()

    async def _on_fill(self, u: OrderUpdate) -> None:
        fill = Fill(u.symbol, u.client_order_id, u.side, u.last_qty, u.last_price, u.commission, u.trade_time_ms,
                    u.realized_pnl, u.trade_id, u.order_id, u.is_maker)
        self.stats.fills += 1
        parts = parse_client_order_id(u.client_order_id)
        key = self._digests.get(parts.digest) if parts is not None else None
        if key is None and u.symbol in self.book and (u.is_liquidation or u.is_adl or parts is None):
            entry = self.book[u.symbol]
            key = entry.position.signal_id
            if u.is_liquidation or u.is_adl:
                entry.exit_reason = ExitReason.ADL if u.is_adl else ExitReason.LIQUIDATION
        if key is None:
            self.log.warning("fill_unmatched", symbol=u.symbol, client_id=u.client_order_id)
            return
        self._fills.setdefault(key, []).append(fill)
        if self.repo is not None:
            await self.repo.record_fill(fill)
        if parts is not None and u.symbol in self.book:
            entry = self.book[u.symbol]
            if entry.exit_reason is None or entry.status != "closing":
                if parts.leg == Leg.STOP_LOSS.value:
                    entry.exit_reason = ExitReason.STOP_LOSS
                elif parts.leg == Leg.TAKE_PROFIT.value:
                    entry.exit_reason = ExitReason.TAKE_PROFIT
        self._check_complete(u.symbol)

    def _check_complete(self, symbol: str) -> None:
        entry = self.book.get(symbol)
        if entry is None:
            return
        fills = self._fills.get(entry.position.signal_id, [])
        opening_side = "BUY" if entry.position.side == "LONG" else "SELL"
        qty_in = sum((f.quantity for f in fills if f.side == opening_side), ZERO)
        qty_out = sum((f.quantity for f in fills if f.side != opening_side), ZERO)
        if qty_in > 0 and qty_out >= qty_in:
            del self.book[symbol]
            task = asyncio.get_running_loop().create_task(self._finish(entry, fills, opening_side))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _finish(self, entry: BookEntry, fills: Sequence[Fill], entry_side: str) -> None:
        """The position is flat: cancel leftover protection, store the trade, tell risk/learner/people."""
        pos = entry.position
        ins = [f for f in fills if f.side == entry_side]
        outs = [f for f in fills if f.side != entry_side]
        qty = sum((f.quantity for f in ins), ZERO)
        entry_px = sum((f.quantity * f.price for f in ins), ZERO) / qty
        out_qty = sum((f.quantity for f in outs), ZERO)
        exit_px = sum((f.quantity * f.price for f in outs), ZERO) / out_qty
        fees = sum((f.fee for f in fills), ZERO)
        reason = entry.exit_reason or ExitReason.RECONCILED
        trade = Trade(pos.signal_id, pos.symbol, pos.side, qty, entry_px, exit_px,
                      min(f.time_ms for f in ins), max(f.time_ms for f in outs), fees, reason, pos.confidence)
        cancel = getattr(self.manager, "cancel_protection", None)
        with contextlib.suppress(SmcError):  # the leftover leg (a fired stop leaves the target, and back)
            if cancel is not None:
                await cancel(pos)
            else:
                for cid in (entry.sl_client_id, entry.tp_client_id):
                    if cid:
                        await self.broker.cancel_algo(pos.symbol, cid)
        if self.repo is not None:
            await self.repo.close_trade(trade, features=entry.features, schema_version=entry.schema_version,
                                        signal_time_ms=entry.signal_time_ms, model_version=entry.model_version)
        self._fills.pop(pos.signal_id, None)
        self.trades.append(trade)
        self.stats.closed += 1
        self.risk.on_trade_closed(trade, self.snapshot().equity)
        for listener in self._trade_listeners:
            try:
                listener(trade)
            except Exception as exc:  # a listener never breaks trade bookkeeping
                self.stats.errors += 1
                self.log.error("trade_listener_failed", error=f"{type(exc).__name__}: {exc}")
        self.log.info("trade_closed", symbol=trade.symbol, side=trade.side, reason=reason.value,
                      net_pnl=str(trade.net_pnl), net_pct=round(trade.net_return_pct, 4))
        self._notify(messages.closed(trade), "close")

    # -- recovery and reconciliation -----------------------------------------------------------------
    async def _recover(self) -> None:
        """Read the open book and its fills back from PostgreSQL."""
        if self.repo is None:
            return
        for position, meta in await self.repo.open_positions():
            entry = BookEntry(position, None, meta.get("sl_client_id"), meta.get("tp_client_id"),
                              status=str(meta.get("status") or "open"))
            sig = await self.repo.signal(position.signal_id) if hasattr(self.repo, "signal") else None
            if sig is not None:
                entry.signal, entry.features = sig, sig.features
                entry.schema_version, entry.model_version = sig.schema_version, sig.model_version
                entry.signal_time_ms = sig.open_time
            if entry.status == "closing":
                entry.status = "open"  # the exit is re-driven by the exit loop or reconciliation
            self.book[position.symbol] = entry
            self._digests[signal_digest(position.signal_id)] = position.signal_id
            self._fills[position.signal_id] = list(await self.repo.fills_for_signal(position.signal_id))
        now = self.clock()
        for sid in await self.repo.recent_signal_ids(now - self.config.dedupe_window_ms):
            self._remember(sid)
        day_start = now - now % DAY_MS
        equity = await self.refresh_balance()
        cooldown = int(getattr(getattr(self.risk, "config", None), "cooldown_ms", 0))
        recent = await self.repo.trades(since_ms=min(day_start, now - cooldown))
        today = [t for t in recent if t.exit_time_ms >= day_start]
        start_equity = equity - sum((t.net_pnl for t in today), ZERO)
        self.risk.restore(recent, start_equity, now)
        if self.book:
            self.log.info("book_recovered", positions=len(self.book),
                          symbols=sorted(self.book))

    async def reconcile(self) -> None:
        """Exchange positions and protection vs our book; repair and log every mismatch."""
        self.stats.reconciliations += 1
        await self.refresh_balance()
        remote = {p.symbol: p for p in await self.broker.positions()}
        for symbol, entry in list(self.book.items()):
            pos = remote.get(symbol)
            if pos is None:
                await self._closed_while_away(entry)
                continue
            if pos.quantity != entry.position.quantity or pos.side != entry.position.side:
                self.stats.repairs += 1
                self.log.warning("position_mismatch", symbol=symbol, ours=str(entry.position.quantity),
                                 exchange=str(pos.quantity))
            mark = self.marks.get(symbol) or pos.mark_price or entry.position.entry_price
            sl, tp = await self.manager.ensure_protection(entry.position, mark)
            new_ids = (_client(sl) or entry.sl_client_id, _client(tp) or entry.tp_client_id)
            if new_ids != (entry.sl_client_id, entry.tp_client_id):
                self.stats.repairs += 1
                entry.sl_client_id, entry.tp_client_id = new_ids
                await self._save(entry)
        for symbol, pos in remote.items():
            if symbol not in self.book and not await self._adopt(pos):
                self.stats.alarms += 1
                self.log.error("unknown_position", symbol=symbol, side=pos.side, qty=str(pos.quantity),
                               note="not opened by this executor; left alone, needs a human")
                if self.repo is not None:
                    await self.repo.record_alarm("unknown_position", f"{symbol} {pos.side} {pos.quantity}",
                                                 self.clock())

    async def _adopt(self, remote: ExchangePosition) -> bool:
        """A position the book does not know, opened by our own entry order: take it over and protect it.

        This is the crash between the entry's fill and the position row (the journal row ``sending`` is written
        before every order leaves, with the decision's stop/target prices, leverage and confidence as its
        ``intent``). The entry must be ours (the newest entry journalled on the symbol whose trade is not
        stored), on the same side; its entry time is the journal's ``created_ms`` — never later than the real
        fill, so the 2-hour limit can only come early. The entry fill is read from the stored fills, else
        queried from the exchange (fee estimated at the taker rate). Returns ``False`` when nothing matches.
        """
        if self.repo is None or not hasattr(self.repo, "latest_entry"):
            return False
        row = await self.repo.latest_entry(remote.symbol)
        intent = (row or {}).get("intent") or {}
        if row is None or not intent.get("stop_price"):
            return False
        if row["side"] != ("BUY" if remote.side == "LONG" else "SELL"):
            return False
        signal_id, cid = str(row["signal_id"]), str(row["client_order_id"])
        sig = await self.repo.signal(signal_id) if hasattr(self.repo, "signal") else None
        target = intent.get("target_price")
        position = Position(
            symbol=remote.symbol, side=remote.side, quantity=remote.quantity, entry_price=remote.entry_price,
            entry_time_ms=int(row["created_ms"]), leverage=int(intent.get("leverage") or remote.leverage or 1),
            signal_id=signal_id, confidence=float(intent.get("confidence") or 0.0),
            stop_price=Decimal(str(intent["stop_price"])),
            target_price=None if target is None else Decimal(str(target)),
            mark_price=remote.mark_price or remote.entry_price)
        fills = list(await self.repo.fills_for_signal(signal_id))
        if not any(f.client_order_id == cid for f in fills):
            state = await self.broker.query_order(remote.symbol, cid)
            if state is not None and state.executed_qty > 0:
                fee = state.executed_qty * state.avg_price * self.config.taker_fee
                fills.append(Fill(remote.symbol, cid, entry_side(remote.side), state.executed_qty, state.avg_price, fee,
                                  state.update_time_ms or int(row["created_ms"])))
        self._fills[signal_id] = fills
        self._digests[signal_digest(signal_id)] = signal_id
        self._remember(signal_id)
        entry = BookEntry(position, sig, None, None, signal_time_ms=sig.open_time if sig is not None else 0)
        if sig is not None:
            entry.features, entry.schema_version = sig.features, sig.schema_version
            entry.model_version = sig.model_version
        self.book[remote.symbol] = entry
        mark = self.marks.get(remote.symbol) or remote.mark_price or remote.entry_price
        sl, tp = await self.manager.ensure_protection(position, mark)
        entry.sl_client_id, entry.tp_client_id = _client(sl), _client(tp)
        if remote.symbol in self.book:
            await self._save(entry)
        self.stats.repairs += 1
        self.log.warning("position_adopted", symbol=remote.symbol, side=remote.side, qty=str(remote.quantity),
                         signal_id=signal_id, client_id=cid, protected=sl is not None,
                         note="opened by an entry of ours whose position row was never written (crash)")
        if self.repo is not None:
            await self.repo.record_alarm("position_adopted", f"{remote.symbol} {remote.side} {remote.quantity}",
                                         self.clock())
        return True

    async def _closed_while_away(self, entry: BookEntry) -> None:
        """Our position is flat at the exchange: learn the exit from the orders we own, then finish."""
        pos = entry.position
        fills = self._fills.setdefault(pos.signal_id, [])
        known = {f.client_order_id for f in fills}
        for cid, reason in ((entry.sl_client_id, ExitReason.STOP_LOSS), (entry.tp_client_id, ExitReason.TAKE_PROFIT)):
            if not cid or cid in known:
                continue
            state = await self.broker.query_order(pos.symbol, cid)
            if state is not None and state.executed_qty > 0:
                fee = state.executed_qty * state.avg_price * self.config.taker_fee
                fills.append(Fill(pos.symbol, cid, exit_side(pos.side), state.executed_qty, state.avg_price, fee,
                                  state.update_time_ms))
                entry.exit_reason = entry.exit_reason or reason
                self.log.warning("exit_found_by_reconciliation", symbol=pos.symbol, client_id=cid,
                                 fee="estimated")
        self.stats.repairs += 1
        self._check_complete(pos.symbol)
        if pos.symbol in self.book:  # still no exit fills: nothing to learn from; close the book entry
            self.stats.alarms += 1
            self.log.error("position_vanished", symbol=pos.symbol, signal_id=pos.signal_id)
            del self.book[pos.symbol]
            if self.repo is not None:
                await self.repo.delete_position(pos.symbol)
                await self.repo.record_alarm("position_vanished", pos.symbol, self.clock())

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_interval_s)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.log.error("reconcile_failed", error=f"{type(exc).__name__}: {exc}")

    # -- helpers -----------------------------------------------------------------------------------
    def _lock(self, symbol: str) -> asyncio.Lock:
        lock = self._symbol_locks.get(symbol)
        if lock is None:
            lock = self._symbol_locks[symbol] = asyncio.Lock()
        return lock

    async def _save(self, entry: BookEntry) -> None:
        if self.repo is not None:
            await self.repo.save_position(entry.position, status=entry.status, sl_client_id=entry.sl_client_id,
                                          tp_client_id=entry.tp_client_id)

    def _notify(self, text: str, kind: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(text, kind)

    def metrics(self) -> dict[str, float]:
        s = self.stats
        return {"executor_signals": float(s.signals), "executor_signals_dropped": float(s.signals_dropped),
                "executor_opened": float(s.opened), "executor_skipped": float(s.skipped),
                "executor_closed": float(s.closed), "executor_forced_exits": float(s.forced_exits),
                "executor_open_positions": float(len(self.book)), "executor_alarms": float(s.alarms),
                "executor_errors": float(s.errors), "executor_reconciliations": float(s.reconciliations)}


def _client(state: Any) -> str | None:
    return getattr(state, "client_algo_id", None) if state is not None else None


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["BookEntry", "Executor", "ExecutorConfig", "ExecutorStats", "direction", "wall_clock_ms"]
