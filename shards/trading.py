"""Trading composition: strategy on scored batches, the executor, and the broker chosen by the mode.

``paper`` (and ``replay`` without keys): the simulated account in process, priced by every closed candle; ``live`` /
``replay`` with keys: signed REST + the user-data stream at ``venue.rest_base``. The same objects in every mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import structlog

from shards.account_guard import check_book_is_this_accounts, keep_booked_symbols
from shards.control import ControlWatcher
from shards.funding_feed import FundingFeed
from shards.market_clock import MarketClock
from shards.paper_restore import restore_paper_account
from shards.venue import live_broker
from smc_quant.correlation import ReturnWindows
from smc_quant.domain.candles import Candle
from smc_quant.domain.trading import Trade
from smc_quant.errors import ConfigError, SmcError
from smc_quant.exchange.brackets import DEFAULT_TIER, brackets_for, load_brackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.executor import Executor, ExecutorConfig
from smc_quant.funding import FundingBook
from smc_quant.model.scoring import Batch, Scores
from smc_quant.notify import learned, utc_minute
from smc_quant.ops.health import HealthWatch, TradingState, trading_health
from smc_quant.orders.account_mode import check as check_account_mode
from smc_quant.orders.account_mode import multi_assets_halt_reason, refusals
from smc_quant.orders.broker import AccountEvent, AccountModeChanged, Broker
from smc_quant.paper import FundingPayment
from smc_quant.persist import ATTEMPTS, retried
from smc_quant.risk import pnl_path
from smc_quant.settings import Settings
from smc_quant.store.control import ACCOUNT_MODE_BY, DRAWDOWN_BY, EXECUTOR_LOCK_BY, Action
from smc_quant.store.trading import AccountConflict

if TYPE_CHECKING:
    from smc_quant.exchange.trade_client import LiveBroker
    from smc_quant.model.learner import LearnOutcome


HEALTH_CHECK_S = 15.0
"""How often the trading stack judges its own health (a change is notified)."""
ACCOUNT_CHECK_S = 300.0
"""How often a live stack re-reads the account's settings (``GET /fapi/v1/accountConfig``, weight 5)."""
BRACKETS_REFRESH_S = 3600.0
"""How often a live stack re-reads its leverage brackets (``GET /fapi/v1/leverageBracket``, weight 1)."""
LOCK_CHECK_S, LOCK_LOST = 30.0, "executor lock lost"
"""How often the stack checks it still holds the executor lock (one query on its own session); the halt's text."""


class TradingStack:
    """Scalper → executor (risk, orders, persistence, notifications) wired to one broker."""

    def __init__(self, settings: Settings, *, filters: Mapping[str, SymbolFilters | None],
                 session: aiohttp.ClientSession, pool: asyncpg.Pool | None, governor: Any,
                 brackets_file: Any | None = None, logger: structlog.stdlib.BoundLogger | None = None,
                 on_trade_closed: Callable[[Trade], None] | None = None,
                 model_version: Callable[[], int | None] = lambda: None,
                 delistings: Mapping[str, int] | None = None,
                 on_stale_rules: Callable[[int], object] | None = None,
                 other_filters: Mapping[str, SymbolFilters] | None = None) -> None:
        """``on_stale_rules``: live, called with the code of an order refused on a rule our filters got wrong (the
        process re-reads exchangeInfo then). ``other_filters``: ``Universe.other_filters``, for a booked symbol."""
        from smc_quant.notify import Notifier
        from smc_quant.order_manager import OrderConfig, SmartOrderManager
        from smc_quant.risk import RiskConfig, RiskManager
        from smc_quant.store.trading import TradingRepository
        from smc_quant.strategy import ICTScalper, ScalperConfig

        t = settings.trading
        self.settings = settings
        self.log = logger or structlog.get_logger()
        self.filters: dict[str, SymbolFilters] = {s: f for s, f in filters.items() if f is not None}
        self._other_filters = other_filters or {}
        known = load_brackets(brackets_file) if brackets_file is not None else {}
        self.brackets = brackets_for(self.filters, known)
        self.clock = MarketClock(settings.mode == "replay")
        keys = settings.binance_api_key is not None and settings.binance_api_secret is not None
        if settings.mode == "live" and not keys:
            raise ConfigError("invalid setting SMC_MODE: live trading needs BINANCE_API_KEY and BINANCE_API_SECRET")
        self.funding = FundingBook(t.funding_max_age_s, time.monotonic) if t.funding_stream else None
        self.paper = None
        self.live: LiveBroker | None = None
        self._account_checked = False
        self.broker: Broker
        if keys and settings.mode in ("live", "replay"):
            self.broker = self.live = live_broker(settings, session, governor)
            self.live.subscribe(self._on_account_event)
            self.live.on_stale_rules = on_stale_rules
        else:
            from smc_quant.paper import PaperBroker
            from smc_quant.sim.account import SimAccount, SimConfig

            account = SimAccount(self.filters, self.brackets, SimConfig(
                balance=Decimal(str(t.paper_balance)), taker_fee=Decimal(str(t.taker_fee_pct)) / 100,
                slippage_bps=Decimal(str(t.slippage_bps))))
            self.paper = PaperBroker(account, self.clock, on_funding=self._store_funding,
                                     funding=self.funding.quote if self.funding is not None else None)
            self.broker = self.paper
        self._brackets_from = self.live or (live_broker(settings, session, governor) if keys else None)
        """Who tells the account's leverage brackets: the live broker, or (paper with keys) signed reads only."""
        self.repo = TradingRepository(pool) if pool is not None else None
        self.notifier = Notifier.of(settings.notify, session)
        self.scalper = ICTScalper(ScalperConfig(min_confidence=t.min_confidence))
        self.risk = RiskManager(RiskConfig.of(t), self.filters, self.brackets)
        self.manager = SmartOrderManager(self.broker, self.filters, config=OrderConfig(
            entry_type=t.entry_type, margin_type=t.margin_type), journal=self.repo, clock=self.clock,
            logger=self.log)
        self.returns = ReturnWindows(t.correlation_minutes)
        self.funding_feed: FundingFeed | None = None
        self._session = session
        self._writes: set[asyncio.Task[Any]] = set()
        # a replay's market time runs N× faster than a signal's way to the executor: no age limit there
        age_ms = round(t.max_signal_age_s * 1000) if settings.mode != "replay" else 0
        self.executor = Executor(
            broker=self.broker, manager=self.manager, risk=self.risk, repo=self.repo, notifier=self.notifier,
            returns=self.returns, funding=self.funding.quote if self.funding is not None else None,
            on_trade_closed=on_trade_closed, clock=self.clock, logger=self.log.bind(component="executor"),
            market_clock=(lambda: self.clock.latest_close_ms) if settings.mode == "paper" else None,
            day_funding=self._day_funding if self.repo is not None or self.live is not None else None,
            config=ExecutorConfig(exit_check_interval_s=t.exit_check_interval_s,
                                  reconcile_interval_s=t.reconcile_interval_s,
                                  taker_fee=Decimal(str(t.taker_fee_pct)) / 100,
                                  max_drawdown_pct=Decimal(str(t.max_drawdown_pct)),
                                  max_signal_age_ms=age_ms))
        self.signals_emitted = 0
        self._model_version = model_version
        self._exit_check: asyncio.Task[None] | None = None
        self.health_watch = HealthWatch()
        self._started_mono = time.monotonic()
        self._health_task: asyncio.Task[None] | None = None
        self.control = (ControlWatcher(pool, self.executor, logger=self.log.bind(component="control"),
                                       on_resume=self._load_drawdown_baseline) if pool is not None else None)
        """The operator's halt / flatten / resume (``smc-quant halt``), read from PostgreSQL."""
        if pool is not None:
            self.executor.on_drawdown = self._drawdown_flatten
        self.set_delistings(delistings or {})

    # -- feed side -----------------------------------------------------------------------------------
    def on_candle(self, candle: Candle, _completed: list[Candle]) -> None:
        """Every accepted closed candle: the clock, the marks, the paper account's prices (the bar's path,
        so a stop inside the bar fills at its trigger) and, once per market minute, the exit clock."""
        minute = self.clock.latest_close_ms
        self.clock.observe(candle)
        price = Decimal(repr(candle.close))
        self.executor.on_price(candle.symbol, price)
        self.returns.record(candle.symbol, candle.open_time, candle.close)
        if self.paper is not None:  # it reads the symbol's funding quote before the bar
            self.paper.on_bar(candle.symbol, candle.open, candle.high, candle.low, candle.close, candle.open_time,
                              self.settings.trading.paper_price_path)
        if self.clock.latest_close_ms > minute and self._exit_check is None and self.executor.started.is_set():
            self._exit_check = asyncio.get_running_loop().create_task(self._minute_exits())

    async def _minute_exits(self) -> None:
        """The 2-hour limit on market time (a replay at N× speed passes minutes faster than the 15 s timer)."""
        try:
            await self.executor.check_exits()
        except Exception as exc:  # logged; the timer-driven check runs regardless
            self.log.error("exit_check_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._exit_check = None

    def on_scores(self, batch: Batch, scores: Scores) -> None:
        """A scored feature batch: the scalper's signals go to the executor's queue."""
        closes = getattr(batch, "closes", None)
        if closes is None or not self.settings.trading.enabled:
            return
        prices = [Decimal(repr(float(c))) for c in closes]
        signals = self.scalper.on_batch(batch.symbols, batch.open_times, batch.features, scores.p_win,
                                        model_version=self._model_version(),
                                        close_prices=prices, now_ms=self.clock(),
                                        break_open_times=batch.break_times)
        for signal in signals:
            if self.executor.submit(signal):
                self.signals_emitted += 1

    def set_delistings(self, delistings: Mapping[str, int]) -> list[str]:
        """The exchange's scheduled delistings (symbol → ms; ``Universe.delistings``, at start and at every
        universe refresh): no new entry on those symbols (risk reason ``delisting``). A newly scheduled one is
        logged and notified once, with the open position on it if any and when it closes at the latest (its
        2-hour limit, or ``delisting_exit_s`` before the delisting). Returns the newly scheduled symbols."""
        new = sorted(set(delistings) - set(self.risk.delistings))
        self.risk.delistings = dict(delistings)
        for symbol in new:
            at, entry = utc_minute(delistings[symbol]), self.executor.book.get(symbol)
            closes = None if entry is None else utc_minute(min(
                entry.position.entry_time_ms + self.risk.config.max_hold_ms,
                delistings[symbol] - self.risk.config.delisting_exit_ms))
            self.log.warning("delisting_scheduled", symbol=symbol, at=at, open_position=entry is not None,
                             closes_by=closes)
            self.notifier.notify(f"DELISTING {symbol} scheduled {at} · no new entries on it"
                                 + (f" · the open position closes by {closes}" if closes else ""), "delisting")
        return new

    async def set_filters(self, filters: Mapping[str, SymbolFilters | None]) -> tuple[list[str], list[str]]:
        """The exchange's trading filters at every universe refresh (``Universe.filters``), replaced in place for
        the risk manager, the order manager and a paper account alike:

        - a symbol new to the stack (a new listing) becomes tradable, with the default bracket tier until the
          account's own are read — at once when keys allow (:meth:`refresh_brackets`);
        - a symbol whose filters changed (Binance moves a tick or step size, or a minimum notional, from time to
          time) is sized, rounded and checked with the new ones from its next order: with the old ones every
          order on it would be refused (-1111, -4014) until a restart. Logged, old and new side by side.

        Symbols the refresh no longer lists keep theirs (an open position on a delisted symbol still closes).
        Returns (new, changed)."""
        fresh = {s: f for s, f in filters.items() if f is not None and self.filters.get(s) != f}
        new = sorted(s for s in fresh if s not in self.filters)
        changed = sorted(s for s in fresh if s in self.filters)
        for symbol in changed:
            was, now = self.filters[symbol], fresh[symbol]
            self.log.warning("symbol_filters_changed", symbol=symbol, changes={
                f.name: [str(getattr(was, f.name)), str(getattr(now, f.name))] for f in fields(SymbolFilters)
                if getattr(was, f.name) != getattr(now, f.name)})
        self.filters.update(fresh)
        tiers = brackets_for([s for s in new if s not in self.brackets], {})
        self.brackets.update(tiers)
        if self.paper is not None:
            self.paper.account.set_filters(fresh)
            self.paper.account.set_brackets(tiers)
        if new:
            self.log.warning("symbols_tradable", symbols=new)
            if self._brackets_from is not None:
                await self._refresh_brackets_quietly()
        return new, changed

    def report_learned(self, outcome: LearnOutcome) -> None:
        """A learner round's report: a new champion, or a champion with no edge left, goes to the notification
        channels (``smc_quant.notify.learned``); a kept champion with an edge says nothing."""
        text = learned(outcome)
        if text is not None:
            self.notifier.notify(text, "model")

    def _store_funding(self, payment: FundingPayment) -> None:
        """A paper position paid (or received) funding: log it and store it in the background (the wallet
        restore reads it back); awaited by :meth:`stop`."""
        self.log.info("paper_funding", symbol=payment.symbol, time_ms=payment.time_ms, rate=str(payment.rate),
                      amount=str(payment.amount))
        if self.repo is None:
            return
        self._background(self._write_funding(payment))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def settle(self) -> None:
        """Wait for the background writes started so far (paper funding, an account-mode halt)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _write_funding(self, payment: FundingPayment, attempts: int = ATTEMPTS) -> bool:
        """Store one payment, retried through a database blip (:func:`smc_quant.persist.retried`; the write is
        idempotent); an error log if it never lands (the paper wallet after a restart would then miss it)."""
        assert self.repo is not None
        repo = self.repo
        return await retried(lambda: repo.record_funding(payment.symbol, payment.time_ms, payment.rate, payment.amount),
                             what="paper_funding", log=self.log, attempts=attempts,
                             detail={"symbol": payment.symbol, "time_ms": payment.time_ms,
                                     "amount": str(payment.amount)})

    async def _restore_paper_account(self) -> None:
        """The paper account lives in memory: rebuild it from PostgreSQL before the executor recovers its book, so
        a restart keeps the paper positions (re-protected by the reconciliation), at what their stored fills leave
        of them, and the balance (:func:`shards.paper_restore.restore_paper_account`)."""
        assert self.paper is not None and self.repo is not None
        await restore_paper_account(self.paper.account, self.repo,
                                    balance=Decimal(str(self.settings.trading.paper_balance)),
                                    tradable=self.filters.keys() & self.brackets.keys(), log=self.log)

    async def on_minute(self) -> None:
        await self.executor.check_exits()

    @property
    def account(self) -> str:
        """Whose trading state the database holds: ``paper`` (the simulated account, also in a replay without
        keys), ``live <rest base>`` (signed trading on that venue) or ``replay`` (signed, against an emulator)."""
        if self.paper is not None:
            return "paper"
        if self.settings.mode == "live":
            return f"live {self.settings.venue.rest_base.rstrip('/')}"
        return "replay"

    async def _bind_account(self) -> None:
        """Claim the database for :attr:`account` before anything reads its book (``AccountConflict`` when it
        holds another account's open positions)."""
        assert self.repo is not None
        await self.repo.claim_executor()  # one executor per account, whatever the compose profiles start
        epoch = await self.repo.bind_account(self.account, self.clock.wall_or_market())
        if epoch.switched:
            self.log.warning("account_switched", account=epoch.account, previous=epoch.previous,
                             note="restores read this account's trades only, from now on")
        else:
            self.log.info("account_bound", account=epoch.account)

    async def _day_funding(self, start_ms: int, end_ms: int) -> Decimal:
        """The funding booked at times in ``[start_ms, end_ms)``, received positive: live the exchange's income
        history (``GET /fapi/v1/income``), the paper account its stored payments."""
        if self.live is not None:
            return await self.live.funding_between(start_ms, end_ms)
        assert self.repo is not None
        return -await self.repo.funding_between(start_ms, end_ms - 1)

    async def _load_drawdown_baseline(self) -> None:
        """The executor's PnL path since the max-drawdown baseline — the account's start, or the first resume
        after the latest max-drawdown halt (the operator accepted that loss) — at start and at every resume:
        the stored trades and paper funding payments, and live the funding the exchange charged since then
        (``GET /fapi/v1/income``, which keeps three months). If the exchange cannot say, the funding is left out
        (logged) rather than the start held up."""
        assert self.repo is not None and self.control is not None
        since = await self.control.repo.drawdown_baseline()
        steps = await self.repo.pnl_steps(since)
        if self.live is not None:
            start = since or self.repo.epoch_start
            try:
                steps += await self.live.funding_income(0 if start is None else int(start.timestamp() * 1000))
            except Exception as exc:  # the exchange's history is a refinement; the trades alone still guard
                self.log.warning("drawdown_funding_unknown", error=f"{type(exc).__name__}: {exc}")
        self.executor.drawdown_guard.restore(*pnl_path(steps))

    async def _drawdown_flatten(self, text: str) -> None:
        """The max drawdown was reached: record a flatten request, as an operator would, so the halt holds across
        restarts until `smc-quant resume`; the watcher carries it out. Unrecorded (database down): the executor
        halts and flattens itself now and the request is not kept."""
        self._hold(text)  # at once; the recorded request makes it last across restarts
        if not await self._request("flatten", text, DRAWDOWN_BY, "drawdown"):
            await self.executor.flatten()

    async def _request(self, action: Action, text: str, by: str, what: str) -> bool:
        """Record a control request of our own, as an operator would (``smc-quant status`` shows it, it holds
        across restarts), and wake the watcher; ``False`` (logged ``<what>_request_not_stored``) when the
        database cannot take it."""
        assert self.control is not None
        try:
            state = await self.control.repo.request(action, text, by)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.log.error(f"{what}_request_not_stored", error=f"{type(exc).__name__}: {exc}")
            return False
        self.control.wake()
        self.log.warning(f"{what}_{action}_requested", event_id=state.event_id)
        return True

    async def check_account(self) -> None:
        """Live: the exchange account must be in One-way and Single-Asset Mode and allowed to trade
        (``smc_quant.orders.account_mode``); ``AccountModeRefused`` (exit 2, one line) before anything is bound
        or read. Then its fees (:meth:`_read_fees`: BNB Fee Discount, the taker rate) and its own leverage
        brackets (:meth:`refresh_brackets`). Once per stack:
        :meth:`start` runs it unless the caller already did (the service does, before its shards are warmed).
        Paper: nothing to check."""
        if self.live is None or self._account_checked:
            return
        config = await self.live.account_config()
        self.log.info("account_config", hedge_mode=config.dual_side_position, multi_assets=config.multi_assets_margin,
                      can_trade=config.can_trade, fee_tier=config.fee_tier)
        check_account_mode(config, self.settings.venue.rest_base.rstrip("/"))
        await self._read_fees()
        await self.refresh_brackets()
        self._account_checked = True

    async def _read_fees(self) -> None:
        """The account's fees: whether commissions are charged in BNB (each fill's is then counted in USDT at
        BNBUSDT's price, :mod:`smc_quant.orders.fees`), and its taker rate (``GET /fapi/v1/commissionRate`` on
        one watched symbol: the VIP tier's), which replaces ``SMC_TRADING__TAKER_FEE_PCT`` for the fees the
        exchange does not report (fills learnt by query). Each read that fails is logged; the start goes on."""
        assert self.live is not None
        try:
            if await self.live.fee_burn():
                priced = "BNBUSDT" in self.filters
                (self.log.info if priced else self.log.warning)(
                    "fees_in_bnb", priced_by="BNBUSDT" if priced else None,
                    note=None if priced else "BNBUSDT is not watched: BNB fees are estimated at the taker rate")
        except SmcError as exc:
            self.log.warning("fee_burn_unknown", error=f"{type(exc).__name__}: {exc}",
                             note="fills charged in BNB are still counted in USDT")
        symbol = "BTCUSDT" if "BTCUSDT" in self.filters else min(self.filters, default=None)
        if symbol is None:
            return
        try:
            maker, taker = await self.live.commission_rate(symbol)
        except SmcError as exc:
            self.log.warning("commission_rate_unknown", error=f"{type(exc).__name__}: {exc}",
                             taker_pct=float(self.executor.config.taker_fee * 100), note="the setting is used")
            return
        setting = self.executor.config.taker_fee
        (self.log.info if taker == setting else self.log.warning)(
            "commission_rate", symbol=symbol, maker_pct=float(maker * 100), taker_pct=float(taker * 100),
            setting_pct=float(setting * 100), note=None if taker == setting else
            "SMC_TRADING__TAKER_FEE_PCT differs: the account's rate is used to estimate unreported fees")
        self.executor.set_taker_fee(taker)

    async def refresh_brackets(self) -> int:
        """With keys: the account's leverage brackets from the exchange (``GET /fapi/v1/leverageBracket``, weight
        1, all symbols at once) replace the file's (or the default tier) in place, so the risk manager's leverage
        and liquidation guards — and in paper mode the simulated account's margin and liquidation — follow what
        Binance applies. At start and every ``BRACKETS_REFRESH_S``; a failed live start raises (sizing on guessed
        brackets could put a stop beyond the liquidation price), a failed paper start or refresh keeps the last
        ones. Returns how many symbols came from the exchange."""
        if self._brackets_from is None:
            return 0
        known = {s: b for s, b in (await self._brackets_from.leverage_brackets()).items()
                 if s in self.filters and b.tiers}
        self.brackets.update(known)
        if self.paper is not None:
            self.paper.account.set_brackets(known)
        missing = sorted(set(self.filters) - set(known))
        self.log.info("leverage_brackets_loaded", source="exchange", symbols=len(known), missing=missing[:20])
        return len(known)

    def _on_account_event(self, event: AccountEvent) -> None:
        """Multi-Assets Mode switched on while we run: halt new entries now, and record the halt (as an operator
        would) so it holds across restarts and shows in ``smc-quant status``. Switched off: logged;
        trading resumes with ``smc-quant resume``."""
        if not isinstance(event, AccountModeChanged):
            return
        if not event.multi_assets_margin:
            self.log.warning("multi_assets_mode_off", note="smc-quant resume lifts the halt")
            return
        self._account_halt(multi_assets_halt_reason())

    def _account_halt(self, text: str, by: str = ACCOUNT_MODE_BY, what: str = "account_mode") -> None:
        self._hold(text)  # at once (and notified); the recorded request makes it last across restarts
        if self.control is not None:
            self._background(self._request("halt", text, by, what))

    def _hold(self, text: str) -> None:
        """Halt new entries on a decision of our own, which no older request in the database lifts."""
        (self.control.hold if self.control is not None else self.executor.halt)(text)

    async def check_executor_lock(self) -> bool:
        """Every ``LOCK_CHECK_S``: still this database's one executor? A lock lost with its session is taken again;
        one another process took meanwhile halts new entries (recorded once: the other executor halts too, no older
        resume lifts it; until `smc-quant resume`); ``False`` then."""
        assert self.repo is not None
        try:
            if not await self.repo.check_executor():
                self.log.warning("executor_lock_retaken", note="its PostgreSQL session had ended")
        except AccountConflict as exc:
            self.log.error("executor_lock_lost", error=str(exc))
            if not (self.executor.halted or "").startswith(LOCK_LOST):
                self._account_halt(f"{LOCK_LOST}: {exc}", EXECUTOR_LOCK_BY, "executor_lock")
            return False
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # asked again next round
            self.log.warning("executor_lock_unchecked", error=f"{type(exc).__name__}: {exc}")
        return True

    async def recheck_account(self) -> list[str]:
        """Live, every ``ACCOUNT_CHECK_S``: the account's settings again. Hedge Mode (it can be switched while
        flat, and Binance pushes nothing) or a lost right to trade halts new entries with a recorded request,
        as Multi-Assets Mode does; returns the problems. An exchange that does not answer changes nothing."""
        if self.live is None:
            return []
        try:
            config = await self.live.account_config()
        except Exception as exc:  # the next round asks again; orders would meet the same exchange anyway
            self.log.warning("account_recheck_failed", error=f"{type(exc).__name__}: {exc}")
            return []
        problems = refusals(config)
        if problems and self.executor.halted is None:
            self.log.error("account_mode_changed", problems=problems)
            self._account_halt("the Binance account cannot be traded as it is set now: " + "; ".join(problems)
                               + " — fix it, then smc-quant resume")
        return problems

    async def start(self) -> None:
        """Bring the stack up; a start that fails gives the executor lock back (a retry in this process, or
        another process, may then start)."""
        try:
            await self._start()
        except BaseException:
            if self.repo is not None:
                await self.repo.release_executor()
            raise

    async def _start(self) -> None:
        await self.check_account()
        if self.paper is not None:  # with keys, the paper account sizes with the real account's brackets
            await self._refresh_brackets_quietly()
        if self.repo is not None:
            await self._bind_account()
            await keep_booked_symbols(self.repo, self.filters, self._other_filters, self.set_filters, self.log)
        if self.paper is not None and self.repo is not None:
            await self._restore_paper_account()
        if self.funding is not None:
            self.funding_feed = FundingFeed(session=self._session, ws_market_base=self.settings.venue.ws_market_base,
                                            book=self.funding, settings=self.settings.feed, logger=self.log)
            self.funding_feed.start()
        start = getattr(self.broker, "start", None)
        if start is not None:
            await start()
        if self.live is not None and self.repo is not None:  # before the reconciliation ends a book it cannot see
            await check_book_is_this_accounts(self.repo, self.live, self.log)
        await self.notifier.start()
        if self.control is not None:  # a halt requested while we were down holds before the first signal
            await self.control.sync()
            await self._load_drawdown_baseline()
        await self.executor.start()
        if self.control is not None:  # a flatten needs the recovered book: carried out from here
            self.control.start()
        self._started_mono = time.monotonic()
        self._health_task = asyncio.get_running_loop().create_task(self._watch_health(), name="trading-health")

    def check_health(self, now: float | None = None) -> bool:
        """The trading verdict at monotonic ``now`` (what ``/health`` says); a change is logged and sent to the
        notification channels (:class:`~smc_quant.ops.health.HealthWatch`). Run every ``HEALTH_CHECK_S``."""
        ok, body = trading_health(self.health_state(), now=time.monotonic() if now is None else now,
                                  started=self._started_mono)
        text = self.health_watch.update(body)
        if text is not None:
            (self.log.info if ok else self.log.error)("trading_health_changed", problems=body["problems"], text=text)
            self.notifier.notify(text, "health")
        return ok

    async def _refresh_brackets_quietly(self) -> None:
        try:
            await self.refresh_brackets()
        except Exception as exc:  # the last brackets stay; the next hour tries again
            self.log.warning("leverage_brackets_refresh_failed", error=f"{type(exc).__name__}: {exc}")

    async def _watch_health(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(HEALTH_CHECK_S)
            rounds += 1
            try:
                self.check_health()
                if rounds % round(ACCOUNT_CHECK_S / HEALTH_CHECK_S) == 0:
                    await self.recheck_account()
                if rounds % round(BRACKETS_REFRESH_S / HEALTH_CHECK_S) == 0:
                    await self._refresh_brackets_quietly()
                if self.repo is not None and rounds % round(LOCK_CHECK_S / HEALTH_CHECK_S) == 0:
                    await self.check_executor_lock()
            except Exception as exc:  # a bug here must not end the watch
                self.log.error("trading_health_check_failed", error=f"{type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        if self.control is not None:
            await self.control.stop()
        if (check := self._exit_check) is not None:  # its exit goes on, drained within the executor's stop bound
            check.cancel()  # (waited for, a minute of refused exits ran the stop budget out before the executor's stop)
            await asyncio.gather(check, return_exceptions=True)
        await self.executor.stop()
        await self.settle()
        if self.repo is not None:  # no order leaves from here: another executor may take over
            await self.repo.release_executor()
        if self.funding_feed is not None:
            await self.funding_feed.stop()
        close = getattr(self.broker, "close", None)
        if close is not None:
            await close()
        await self.notifier.close()

    def health_state(self) -> TradingState:
        """What ``/health`` judges the trading side by (``smc_quant.ops.health.trading_health``)."""
        ex = self.executor
        return TradingState(halted=ex.halted, positions=len(ex.book), last_reconciled=ex.last_reconciled,
                            reconcile_interval_s=ex.config.reconcile_interval_s,
                            stream_down_since=self.live.stream.down_since if self.live is not None else None,
                            store_down_since=self.repo.down_since if self.repo is not None else None,
                            clock_offset_ms=self._clock_offset_ms())

    def _clock_offset_ms(self) -> int | None:
        """Live: the exchange's clock minus ours (signing syncs it every few minutes). Signing corrects for it, but
        the signal age, the funding window, the 2-hour limit's day and the breaker's UTC day run on ours: a host
        clock off by minutes skipped every signal as stale, or let one pay a funding it should have avoided,
        with /health still ok. (A replay's exchange runs on market time: not judged.)"""
        if self.live is None or self.settings.mode != "live" or self.live.offset.best is None:
            return None
        return self.live.offset.offset_ms

    def metrics(self) -> dict[str, float]:
        out = self.executor.metrics()
        state, now = self.health_state(), time.monotonic()
        if state.last_reconciled is not None:
            out["trading_seconds_since_reconcile"] = now - state.last_reconciled
        if self.live is not None:
            out["user_stream_down_s"] = 0.0 if state.stream_down_since is None else now - state.stream_down_since
        if state.clock_offset_ms is not None:
            out["exchange_clock_offset_ms"] = float(state.clock_offset_ms)
        out.update(self.scalper.stats.metrics(), strategy_signals=float(self.signals_emitted))
        out.update(self.funding_feed.metrics_dict() if self.funding_feed is not None else {})
        out.update(self.control.metrics() if self.control is not None else {})
        return out


__all__ = ["DEFAULT_TIER", "MarketClock", "TradingStack", "brackets_for", "live_broker"]
