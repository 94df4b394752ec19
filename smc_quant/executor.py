"""The executor: exactly one per account. Signals in; risk decisions, protected positions and trades out.

Data flow::

    submit(signal) ─► bounded queue ─► RiskManager.evaluate ─► signals table (decision + reason)
                                         └─ open / rotate ─► SmartOrderManager.open ─► positions table
    broker events (user-data stream | paper account) ─► one ordered task (``smc_quant.executor_events``):
        fills (TRADE, and CALCULATED: liquidation/ADL; each counted once) ─► fills table ─► exit fills complete a
        position ─► cancel the leftover protection ─► trades + experience (one transaction) ─►
        RiskManager.on_trade_closed ─► learner ─► notification
        a stop/target that ended at the exchange without executing (not cancelled by us) ─► protection repaired now
    every ``exit_check_interval_s`` (and on every minute close): RiskManager.due_exits ─► close (2 h limit, delisting)
    at start and every ``reconcile_interval_s``: exchange positions/orders vs our book, repaired and logged

The operator can halt it (:meth:`Executor.halt`: every signal is skipped with ``halted``; exits, protection
and reconciliation go on), flatten it (:meth:`Executor.flatten`: close every position at market) and resume
it; ``shards.control`` carries ``smc-quant halt`` / ``resume`` from PostgreSQL to these methods.

Restarts: the book (positions with entry times and protection ids) and the fills of open positions are
read back from PostgreSQL; the exchange is asked what happened meanwhile. Client ids are derived from
the signal id, so a signal handled twice maps to the same orders and the exchange refuses duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol

import structlog

from smc_quant import notify as messages
from smc_quant.book import Book, BookEntry
from smc_quant.correlation import ReturnSource
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.trading import ZERO, AccountSnapshot, ExitReason, Signal, Trade, direction
from smc_quant.errors import SmcError
from smc_quant.executor_config import ExecutorConfig, ExecutorStats
from smc_quant.executor_events import AccountEvents, FillKey
from smc_quant.executor_exits import MarketExits
from smc_quant.executor_hand import OperatorHand
from smc_quant.executor_summary import DailySummary, DayFunding
from smc_quant.funding import FundingQuote
from smc_quant.orders.broker import AccountEvent, Broker
from smc_quant.persist import Writer
from smc_quant.reconciler import Reconciler, client_id
from smc_quant.risk import DAY_MS, Decision, DrawdownGuard, RiskManager
from smc_quant.tasks import cancel_and_wait


class Notify(Protocol):
    def notify(self, text: str, kind: str) -> None: ...


class Executor(MarketExits, OperatorHand, AccountEvents, DailySummary):
    """Turns signals into protected positions and closed trades; see the module docstring."""

    def __init__(self, *, broker: Broker, manager: Any, risk: Any, repo: Any | None = None,
                 notifier: Notify | None = None, on_trade_closed: Callable[[Trade], None] | None = None,
                 clock: Callable[[], int], config: ExecutorConfig | None = None,
                 logger: structlog.stdlib.BoundLogger | None = None, returns: ReturnSource | None = None,
                 funding: Callable[[str], FundingQuote | None] | None = None,
                 market_clock: Callable[[], int] | None = None, day_funding: DayFunding | None = None) -> None:
        self.broker = broker
        self.manager = manager
        self.risk = risk
        self.repo = repo
        self.notifier = notifier
        self.returns = returns
        """Recent 1m closes for the correlation guard (fed by the caller; ``None``: no guard)."""
        self.funding = funding
        """The symbol's current funding quote (``smc_quant.funding.FundingBook.quote``; ``None``: no guard)."""
        self.day_funding = day_funding
        """The funding the account booked in a time range, for the daily summary (``None``: not told)."""
        self._trade_listeners: list[Callable[[Trade], None]] = [on_trade_closed] if on_trade_closed else []
        self.clock = clock
        self.market_clock = market_clock or clock
        """A signal's age is measured on this: the newest candle close seen, on paper (``None``: ``clock``)."""
        self.config = config or ExecutorConfig()
        self.log = logger or structlog.get_logger().bind(component="executor")
        self.stats = ExecutorStats()
        self.book = Book(self.config.dedupe_max)
        self.marks: dict[str, Decimal] = {}
        self.wallet = ZERO
        self._wallet_known = False  # until a balance or an ACCOUNT_UPDATE says what it is
        self._summary_day: int | None = None
        self._summarising: asyncio.Task[Any] | None = None
        self._summary_wanted = False
        self._breaker_told: int | None = None  # the UTC day the tripped breaker was told
        self.trades: list[Trade] = []
        self._signals: asyncio.Queue[Signal] = asyncio.Queue(self.config.queue_size)
        self._events: asyncio.Queue[AccountEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._symbol_locks: dict[str, asyncio.Lock] = {}
        self._reconciling = asyncio.Lock()  # a reconciliation and an immediate protection repair never overlap
        self._finishing: set[asyncio.Task[Any]] = set()
        """Entries and exits under way, trades being finished and protection being repaired (awaited by
        :meth:`idle` and :meth:`stop`)."""
        self._stopping = False
        self._recent_fills: dict[FillKey, None] = {}
        self._triggered: dict[tuple[str, int], ExitReason] = {}
        self._repairing: set[str] = set()
        self._unresolved: set[str] = set()
        """Symbols whose entry's outcome the exchange could not tell, until a reconciliation succeeds: the exchange
        may hold a position the book does not count, so no new entry goes out meanwhile."""
        self.foreign: set[str] = set()
        """Symbols holding a position that is not ours (a person's, another tool's): no entry on them — it would
        add to that position or reverse it, and our stop, target and exits would then close it. Found by the
        reconciliation and by ``ACCOUNT_UPDATE``; a symbol leaves the set when it is found flat."""
        self.writes = Writer(self.log, first_delay_s=self.config.store_retry_s)  # retried through a database blip
        self._idle = asyncio.Event()
        self._idle.set()
        self.started = asyncio.Event()
        self.halted: str | None = None
        """The operator's reason while trading is halted (no new entries); ``None`` while it trades."""
        self.last_reconciled: float | None = None
        self._no_entry_in_flight = asyncio.Event()
        self._no_entry_in_flight.set()
        self.drawdown_guard = DrawdownGuard(self.config.max_drawdown_pct)
        self.on_drawdown: Callable[[str], Awaitable[None]] | None = None
        """Called once when the max drawdown is reached (the service records a flatten request, so the halt holds
        across restarts); without it the executor halts and flattens itself."""
        self.reconciler = Reconciler(book=self.book, broker=broker, manager=manager, risk=risk, repo=repo,
                                     marks=self.marks, clock=clock, config=self.config, stats=self.stats, log=self.log,
                                     settle=self._check_complete, save=self._save,
                                     refresh_balance=self.refresh_balance, busy=self._busy,
                                     on_alarm=self._notify_alarm, foreign=self.foreign)
        manager.on_alarm = self._notify_alarm
        self._alarms_told: dict[str, float] = {}

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
        return self.book.seen(signal_id)

    def add_trade_listener(self, listener: Callable[[Trade], None]) -> None:
        """Call ``listener(trade)`` after every closed trade is stored (the learner counts here)."""
        self._trade_listeners.append(listener)

    def set_taker_fee(self, rate: Decimal) -> None:
        """The account's taker rate, for the fees the exchange does not report (the executor's and reconciler's)."""
        self.config = self.reconciler.config = replace(self.config, taker_fee=rate)

    def on_price(self, symbol: str, price: Decimal) -> None:
        """Latest mark for ``symbol`` (fed by the candle stream)."""
        self.marks[symbol] = price

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the book, reconcile with the exchange, then start the loops."""
        self.broker.subscribe(self._events.put_nowait)
        await self.reconciler.recover()
        await self.reconcile()
        self._tasks = [
            asyncio.create_task(self._signal_loop(), name="executor-signals"),
            asyncio.create_task(self._event_loop(), name="executor-events"),
            asyncio.create_task(self._every(self.config.exit_check_interval_s, self.check_exits, "exit_check_failed"),
                                name="executor-exits"),
            asyncio.create_task(self._every(self.config.reconcile_interval_s, self.reconcile, "reconcile_failed"),
                                name="executor-reconcile"),
        ]
        self.started.set()
        self.log.info("executor_started", positions=len(self.book))

    def stop_intake(self) -> None:
        """Enter nothing from now on (the service is stopping): every signal handled is skipped as ``stopping``.
        Exits, protection and the pending writes go on."""
        self._stopping = True

    async def stop(self) -> None:
        """Stop taking signals; positions stay protected by their exchange-side orders."""
        self.stop_intake()
        await self._drain()
        failure: Exception | None = None
        try:
            summary = [t for t in (self._summarising,) if t is not None and not t.done()]  # an ended one was logged
            await cancel_and_wait([*self._tasks, *summary])
        except Exception as exc:  # a loop ended by a bug: the second drain still runs, then the stop fails
            failure = exc
        self._tasks = []
        await self._drain()  # what the loops started while the first drain waited (a repair, a trade's finish)
        if failure is not None:
            raise failure

    async def _drain(self) -> None:
        """Wait for the trades being finished, the repairs and the pending writes — bounded: a write the store
        still refuses is given up, and logged with what it held."""
        waiting: set[asyncio.Future[Any]] = {*self._finishing, *self.writes.pending, *self.manager.in_flight}
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.config.stop_wait_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until every queued signal and account event has been handled (tests, shutdown)."""
        while True:
            await self._idle.wait()
            await self._events.join()
            if self._finishing or self.writes.pending:
                # wait, not gather: cancelling a gather cancels what it waits for, and a caller's bound on idle()
                # (the scaled executor's stop) cut the very entries that handle() shields from cancellation
                done, _ = await asyncio.wait({*self._finishing, *self.writes.pending})
                for task in done:  # their failures are logged where they happen; retrieved here
                    if not task.cancelled():
                        task.exception()
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
        the book at the latest marks and at what they still hold (after a partial exit: a person's partial close
        on the exchange), available = equity − the book's margin."""
        positions = {s: replace(e.position, quantity=held if (held := self.book.held(s)) > 0 else e.position.quantity,
                                mark_price=self.marks.get(s, e.position.entry_price))
                     for s, e in self.book.items()}
        return AccountSnapshot.of(self.wallet, positions, self.clock())

    def _reconcile_soon(self, why: str) -> None:
        """A reconciliation now, in the background (idle() and a stop's drain wait for it)."""
        self._track(self._reconcile_now(why), f"reconcile:{why}")

    async def _reconcile_now(self, why: str) -> None:
        """An extra reconciliation now; a failure is counted and logged (the periodic one tries again)."""
        try:
            await self.reconcile()
        except Exception as exc:
            self.stats.errors += 1
            self.log.error("reconcile_failed", why=why, error=f"{type(exc).__name__}: {exc}")

    async def reconcile(self) -> None:
        """Exchange positions and protection vs our book, repaired and logged; ``last_reconciled`` marks success."""
        async with self._reconciling:
            pending = set(self._unresolved)  # a round begun before an entry went unknown may have skipped it (busy)
            await self.reconciler.reconcile()
        self.last_reconciled = time.monotonic()
        self._unresolved -= pending  # every exchange position it saw is now booked (adopted) or alarmed

    async def refresh_balance(self) -> Decimal:
        """Read the wallet balance over REST (start, reconciliation)."""
        balance = await self.broker.balance()
        self.wallet, self._wallet_known = balance.wallet, True
        return balance.margin_balance

    async def handle(self, signal: Signal) -> None:
        """Risk decision, persistence, then orders — one signal.

        Duplicates are refused from memory (the ids of the last ``dedupe_window_ms``, reloaded from PostgreSQL
        at start; the signals table's primary key is the backstop), so the signal row is written *after* the
        entry went out, off the order path; the order journal row (which names the signal id) is still
        written before the order leaves, so a crash in between loses nothing a restart needs.
        """
        self.stats.signals += 1
        if self.book.seen(signal.signal_id):
            self.stats.duplicates += 1
            self.log.info("signal_seen_before", signal_id=signal.signal_id)
            return
        self.book.expect(signal.signal_id)
        if self.halted is not None:
            self._skip(signal, Decision("skip", "halted", signal), {"halted": self.halted})
            return
        if self._stopping:  # SIGTERM: a signal still queued (the feed's last flush) would race the stop's budget
            self._skip(signal, Decision("skip", "stopping", signal), {})
            return
        if self._unresolved:  # a position the book may not count: max_positions and one-per-symbol would not hold
            self._skip(signal, Decision("skip", "entry_unresolved", signal), {"unresolved": sorted(self._unresolved)})
            return
        if signal.symbol in self.foreign:  # someone else's position: ours would add to it or reverse it
            self._skip(signal, Decision("skip", "foreign_position", signal), {})
            return
        now = self.clock()
        age_ms = self.market_clock() - signal.open_time - MINUTE_MS  # since its candle closed
        if 0 < self.config.max_signal_age_ms < age_ms:  # held up (a restart, a Redis outage): its setup is gone
            self._skip(signal, Decision("skip", "stale_signal", signal), {"age_s": round(age_ms / 1000, 1)})
            return
        account = self.snapshot()
        mark = self.marks.get(signal.symbol, signal.price)
        held = [symbol for symbol in self.book if symbol != signal.symbol]
        rho = self.returns.correlations(signal.symbol, held, signal.open_time) if held and self.returns else {}
        quote = self.funding(signal.symbol) if self.funding is not None else None
        if self.funding is not None and quote is None:
            self.stats.funding_unknown += 1
        decision = self.risk.evaluate(signal, account, mark, now, rho, funding=quote)
        detail: dict[str, Any] = {"correlations": {k: round(v, 4) for k, v in rho.items()}} if rho else {}
        if quote is not None:
            detail["funding"] = quote.as_record()
        if decision.action == "skip":
            self._skip(signal, decision, detail)
            return
        # The entry runs as its own task, awaited by the drain at a stop like a trade being finished: cancelling
        # the caller (the scaled executor cancels the task awaiting handle() at SIGTERM) must not cut an entry
        # off between its fill and its stop, nor leave a position out of the book and the database.
        self._no_entry_in_flight.clear()  # a flatten waits for this entry: it could not see it in the book yet
        entering = self._track(self._enter(signal, decision, detail, mark), signal.signal_id, unwatched=False)
        entering.add_done_callback(lambda _task: self._no_entry_in_flight.set())
        await self._shielded(entering)

    async def _enter(self, signal: Signal, decision: Any, detail: dict[str, Any], mark: Decimal) -> None:
        if decision.action == "rotate" and decision.close_symbol in self.book:
            if not await self.manager.journal_ready():  # the entry would be refused after the close: a position
                self._skip(signal, Decision("skip", "rotation_journal_unavailable", signal),  # given up for nothing
                           {**detail, "close_symbol": decision.close_symbol})
                return
            self.stats.rotations += 1
            if not await self.close(decision.close_symbol, ExitReason.ROTATION):
                # Its exit failed, or another exit of it is still under way: there is no room, and the
                # entry would be one position over ``max_positions``.
                self._skip(signal, Decision("skip", "rotation_not_closed", signal),
                           {**detail, "close_symbol": decision.close_symbol})
                return
        async with self._lock(signal.symbol):
            if signal.symbol in self.foreign:  # a person's position seen while this entry waited (rotation, lock)
                self._skip(signal, Decision("skip", "foreign_position", signal), detail)
                return
            try:
                result = await self.manager.open(decision, mark)
            finally:  # after the entry left: the order journal (written before it) already names the signal
                self._record(signal, decision, detail)
            position = getattr(result, "position", None)
            if position is not None:
                entry = BookEntry.of(position, signal, client_id(getattr(result, "sl", None)),
                                     client_id(getattr(result, "tp", None)))
                close = getattr(result, "close", None)
                if close is not None and close.closed:  # closed at once: booked all the same, settled by its fills
                    entry.exit_reason = close.reason
                self.book.put(entry)
                await self._save(entry)
                if close is not None and not close.closed:
                    # Closing at once (its trigger passed, or no stop would stick) cancelled its protection and
                    # then failed: protect it again now, as after any failed exit, not at the next reconciliation.
                    await self._reprotect(entry, mark)
        if position is None:
            reason = getattr(result, "reason", "unknown")
            self.log.warning("entry_not_opened", signal_id=signal.signal_id, reason=reason)
            if reason != "entry_unknown":
                self.manager.forget(signal.signal_id)
            else:
                # The exchange could not say whether it filled: look now (a position it opened is adopted and
                # protected from the journal), not at the next round of reconciliation, minutes away. Until a
                # reconciliation succeeds, no new entry: one failing here used to let the next signal open a
                # fourth position beside a filled entry the book did not count.
                self._unresolved.add(signal.symbol)
                await self._reconcile_now("entry_unknown")
            return
        self.stats.opened += 1
        self.log.info("position_opened", symbol=signal.symbol, side=position.side, qty=str(position.quantity),
                      entry=str(position.entry_price), leverage=position.leverage, signal_id=signal.signal_id)
        self._notify(messages.opened(signal, position), "open")
        # fills that arrived before the entry returned may already complete the position
        self._check_complete(signal.symbol)

    def _skip(self, signal: Signal, decision: Any, detail: dict[str, Any]) -> None:
        self._record(signal, decision, detail)
        self.stats.skipped += 1
        self.stats.skip_reasons[decision.reason] = self.stats.skip_reasons.get(decision.reason, 0) + 1
        self.log.info("signal_skipped", signal_id=signal.signal_id, reason=decision.reason, **detail)

    def _record(self, signal: Signal, decision: Any, extra: dict[str, Any]) -> None:
        """Write the signal and its decision (plus ``extra`` details, e.g. the correlations it was judged by) in
        the background, retried through a database blip (awaited by :meth:`idle` and :meth:`stop`)."""
        if self.repo is None:
            return
        repo, record = self.repo, {**decision.as_record(), **extra}

        async def write() -> None:
            if not await repo.record_signal(signal, decision.action, decision.reason, record):
                self.log.warning("signal_row_existed", note="a duplicate passed the in-memory filter")

        self.writes.later("signal", write, {"signal_id": signal.signal_id, "decision": decision.action,
                                            "reason": decision.reason})

    # -- exits -------------------------------------------------------------------------------------
    def open_risk_pct(self) -> Decimal:
        """What the book would lose if every stop filled now, % of equity (:meth:`RiskManager.book_risk`)."""
        snap = self.snapshot()
        if snap.equity <= 0:
            return ZERO
        return RiskManager.book_risk(snap.positions.values(), snap.equity) / snap.equity * 100

    def drawdown(self) -> Decimal:
        """The account's drawdown now, % below its peak since the baseline (:class:`smc_quant.risk.DrawdownGuard`)."""
        snap = self.snapshot()
        return self.drawdown_guard.pct(snap.wallet_balance, snap.unrealized_pnl)

    async def check_drawdown(self) -> bool:
        """With ``max_drawdown_pct`` set: at or past it, halt and close everything (once, until a resume). Also
        while an operator's halt leaves positions open (they can still lose); not once halted and flat."""
        if self.halted is not None and not self.book:
            return False
        snap = self.snapshot()
        dd = self.drawdown_guard.trip(snap.wallet_balance, snap.unrealized_pnl)
        if dd is None:
            return False
        limit = self.drawdown_guard.limit_pct
        text = (f"max drawdown: equity {snap.equity:.2f} is {dd:.2f} % below its peak "
                f"{self.drawdown_guard.peak_equity(snap.wallet_balance):.2f} (limit {limit} %)")
        self.log.error("max_drawdown", drawdown_pct=str(round(dd, 4)), limit_pct=str(limit), equity=str(snap.equity))
        self._notify(messages.error("max drawdown", text), "error")
        if self.on_drawdown is not None:
            await self.on_drawdown(text)
        else:
            self.halt(text)
            await self.flatten()
        return True

    async def check_exits(self) -> int:
        """Close every position past its holding limit (and everything at the max drawdown); returns how many
        positions were closed for the 2-hour limit or the breaker."""
        await self.check_drawdown()
        snap = self.snapshot()  # the book's positions keep their entry price as mark: the breaker needs today's
        equity = snap.equity if self._wallet_known else None  # unknown: no day starts from zero
        due = self.risk.due_exits([snap.positions[s] for s, e in self.book.items() if e.status == "open"],
                                  self.clock(), equity=equity, unrealized=snap.unrealized_pnl)
        self._tell_breaker(len(due))
        for position, reason in due:
            await self.close(position.symbol, reason)
        self.summarise()  # beside the exits: its reads never hold up the next check
        return len(due)

    def _tell_breaker(self, due: int) -> None:
        """Once a UTC day (and once more after a restart that finds it tripped — a daily limit lowered between two
        runs trips it at the start): the daily loss breaker tripped, with the day's loss when it tripped (by this
        check, a trade's close or a signal's evaluation) and the positions this check closes. Nothing told it: the
        trader saw positions closed as ``daily_breaker`` and then no entries, with no reason given. Never raises:
        the exits it precedes must go out."""
        try:
            day = self.clock() // DAY_MS
            start, trip = self.risk.day_start_equity, self.risk.trip
            if trip is None or start is None or self._breaker_told == day:
                return
            self._breaker_told = day
            limit = self.risk.config.daily_loss_limit_pct
            self.log.error("daily_loss_limit", realised=str(trip[0]), unrealised=str(trip[1]),
                           day_start_equity=str(start), limit_pct=str(limit), closing=due)
            kept = not self.risk.config.close_on_breaker and bool(self.book)
            self._notify(messages.daily_loss_limit(trip[0], trip[1], start, limit, None if kept else due), "breaker")
        except Exception as exc:
            self.stats.errors += 1
            self.log.error("daily_loss_limit_untold", error=f"{type(exc).__name__}: {exc}")

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[object]], failure: str) -> None:
        """Run ``job`` every ``interval_s`` (exit checks, reconciliation); a failure is counted and logged under
        ``failure`` and the next round runs as planned."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.log.error(failure, error=f"{type(exc).__name__}: {exc}")

    def _check_complete(self, symbol: str) -> None:
        """When the position's fills make it flat, take it off the book and finish its trade."""
        settled = self.book.settle(symbol)
        if settled is not None:
            task = asyncio.get_running_loop().create_task(self._finish(*settled))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _finish(self, entry: BookEntry, trade: Trade) -> None:
        """The position is flat: cancel leftover protection, store the trade, tell risk/learner/people."""
        pos = entry.position
        with contextlib.suppress(SmcError):  # the leftover leg (a fired stop leaves the target, and back)
            await self.manager.cancel_protection(pos)
        self.manager.forget(pos.signal_id)
        self.trades.append(trade)  # the breaker and the max drawdown know at once, whatever the database says
        self.stats.closed += 1
        self.drawdown_guard.on_trade(trade.net_pnl)
        self.risk.on_trade_closed(trade, self.snapshot().equity)
        if self.repo is not None:  # before the learner hears of it: it reads the experience rows
            repo = self.repo
            await self.writes.store("trade", lambda: repo.close_trade(
                trade, features=entry.features, schema_version=entry.schema_version,
                signal_time_ms=entry.signal_time_ms, model_version=entry.model_version), {"trade": repr(trade)})
        for listener in self._trade_listeners:
            try:
                listener(trade)
            except Exception as exc:  # a listener never breaks trade bookkeeping
                self.stats.errors += 1
                self.log.error("trade_listener_failed", error=f"{type(exc).__name__}: {exc}")
        self.log.info("trade_closed", symbol=trade.symbol, side=trade.side, reason=trade.exit_reason.value,
                      net_pnl=str(trade.net_pnl), net_pct=round(trade.net_return_pct, 4))
        self._notify(messages.closed(trade), "close")

    # -- helpers -----------------------------------------------------------------------------------
    def _lock(self, symbol: str) -> asyncio.Lock:
        lock = self._symbol_locks.get(symbol)
        if lock is None:
            lock = self._symbol_locks[symbol] = asyncio.Lock()
        return lock

    def _busy(self, symbol: str) -> bool:
        """Whether an entry or an exit of ``symbol`` is under way (its lock is held)."""
        lock = self._symbol_locks.get(symbol)
        return lock is not None and lock.locked()

    async def _save(self, entry: BookEntry) -> None:
        if self.repo is not None:
            repo = self.repo
            await self.writes.store("position", lambda: repo.save_position(
                entry.position, status=entry.status, sl_client_id=entry.sl_client_id,
                tp_client_id=entry.tp_client_id), {"symbol": entry.position.symbol, "status": entry.status})

    def _notify(self, text: str, kind: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(text, kind)

    def _notify_alarm(self, kind: str, detail: str, key: str | None = None) -> None:
        """An alarm (reconciliation's, the order manager's, a failed exit's): something a human must look at. The
        same one — the same text, or the same ``key`` when given (a detail that changes at every try) — is told
        once per ``alarm_repeat_s``: a position nobody owns is alarmed again at every reconciliation, a refused
        exit at every try of the exit clock."""
        text, now = messages.error(kind, detail), time.monotonic()
        key = key or text
        if self._alarms_told.get(key, -math.inf) > now - self.config.alarm_repeat_s:
            self.stats.alarms_not_repeated += 1
            return
        self._alarms_told[key] = now
        for old in [t for t, at in self._alarms_told.items() if at <= now - self.config.alarm_repeat_s]:
            del self._alarms_told[old]
        self._notify(text, "error")

    def metrics(self) -> dict[str, float]:
        """Counters for /metrics; ``executor_skipped_<reason>`` for every risk reason seen (why it is not trading)."""
        w = self.writes
        return {**self.stats.metrics(), "executor_store_retries": w.retries, "executor_store_failures": w.failures,
                "executor_open_positions": len(self.book), "executor_halted": float(self.halted is not None),
                "executor_drawdown_pct": float(self.drawdown()), "executor_open_risk_pct": float(self.open_risk_pct())}


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["BookEntry", "Executor", "ExecutorConfig", "ExecutorStats", "direction", "wall_clock_ms"]
