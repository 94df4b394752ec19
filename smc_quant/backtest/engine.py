"""The backtest engine: history through the live decision objects, one event loop, candle time.

Per symbol, once: ``FeatureEngineer.batch`` (row t = the live incremental row after candle t, proven
identical) and ``find_setups`` (row-wise, so evaluating it on a whole history equals evaluating it on each
minute's batch). Then one pass over the minutes:

1. the symbols with something at stake (a booked position, resting orders) get their bar fed to the paper
   account (:class:`~smc_quant.backtest.stack.BarBroker`, OHLC path) and their mark to the executor; if
   the account produced events, the loop yields once (they are delivered with ``call_soon``, like a user-data
   stream) and waits for ``Executor.idle()``;
2. if the minute holds setup rows: their marks and paper prices are set to the minute's close, the
   model scores exactly those rows (``MLPredictor.predict_batch``), the same ``ICTScalper.on_batch`` turns
   them into signals and each goes through ``Executor.submit`` → RiskManager → SmartOrderManager → PaperBroker;
   then ``Executor.idle()``;
3. with a position open, ``Executor.check_exits()`` (the 2-hour limit and the daily breaker on the candle
   clock).

Minutes where nothing is at stake cost one dictionary look-up. The clock the executor, manager and broker
read is the close of the current minute (``open_time + 60 000``), as in the service's replay mode.

Signal sources (``mode``): ``model`` (the model's P(win), gated by ``min_confidence``), ``unfiltered`` (the
same rules, every setup passes with ``baseline_confidence``) and ``random`` (as many entries as the rules
find per symbol, at seeded random minutes with random sides, exits sized by the same ATR formula, through
the same risk rules). Funding is not simulated (documented in docs/backtest.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from smc_quant.backtest.stack import BacktestClock, PricePath, Stack, build_stack
from smc_quant.correlation import SeriesReturns
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.series import KlineSeries
from smc_quant.domain.trading import PositionSide, Signal, Trade
from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer
from smc_quant.funding import FundingQuote, next_funding_ms
from smc_quant.settings import TradingSettings
from smc_quant.strategy import ATR_PCT, BOS, CHOCH, ICTScalper, ScalperConfig, Setups, batch_break_times, find_setups

__all__ = ["BacktestConfig", "BacktestResult", "Mode", "OrderRow", "Prepared", "account_orders", "prepare",
           "run_backtest"]

F64 = npt.NDArray[np.float64]
Mode = Literal["model", "unfiltered", "random"]
Scorer = Callable[[F64], F64 | None]
"""Rows of features → P(win) per row (``MLPredictor.predict_batch``); None = no model (no signals)."""
Progress = Callable[[int, int], None]
"""Called with (minutes done, minutes in all)."""
MinuteHook = Callable[[int], Awaitable[None]]
"""Awaited after every minute with the minute's close time (the walk-forward learner hooks in here)."""


@dataclass(frozen=True)
class BacktestConfig:
    """One run: the service's trading settings, the rules, the price path, the window and the signal source."""

    trading: TradingSettings = field(default_factory=TradingSettings)
    scalper: ScalperConfig | None = None
    """Default: ``ScalperConfig(min_confidence=trading.min_confidence)``, as the service builds it."""
    mode: Mode = "model"
    price_path: PricePath = "ohlc"
    start_ms: int | None = None
    """Trade from this open time (earlier candles only warm the features up)."""
    end_ms: int | None = None
    baseline_confidence: float = 0.75
    """P(win) given to every entry of the ``unfiltered`` and ``random`` baselines (risk multiplier 1×)."""
    seed: int = 7
    funding_rate: Decimal | None = None
    """An assumed constant funding rate (fraction) charged every ``funding_interval_h`` hours (UTC) and seen by
    the risk manager's funding guard; ``None``: funding is not simulated (there is no funding history)."""
    funding_interval_h: int = 8

    def funding_quote(self, now_ms: int, price: Decimal = Decimal(1)) -> FundingQuote | None:
        """The assumed quote at ``now_ms``: the constant rate, due at the next multiple of the interval."""
        if self.funding_rate is None:
            return None
        return FundingQuote(self.funding_rate, next_funding_ms(now_ms, self.funding_interval_h * 3_600_000), price,
                            now_ms)

    def rules(self) -> ScalperConfig:
        return self.scalper or ScalperConfig(min_confidence=self.trading.min_confidence)


@dataclass(frozen=True)
class Prepared:
    """Per-symbol features and setup rows, computed once and shared by every run over the same candles."""

    series: dict[str, KlineSeries]
    features: dict[str, F64]
    setups: dict[str, Setups]
    seconds: float

    @property
    def setup_rows(self) -> dict[str, npt.NDArray[np.int64]]:
        return {s: found.rows for s, found in self.setups.items()}

    def distinct_setups(self, symbol: str, start: int, end: int) -> int:
        """Setups (``(side, break bar)`` keys, as ICTScalper fires them at most once) in [start, end)."""
        found, ot = self.setups[symbol], self.series[symbol].open_time
        t = ot[found.rows]
        inside = (t >= start) & (t < end)
        keys = set(zip(found.sides[inside].tolist(), batch_break_times(ot, found)[inside].tolist(), strict=True))
        return len(keys)

    @property
    def candles(self) -> int:
        return sum(len(s) for s in self.series.values())


def prepare(series: Mapping[str, KlineSeries], rules: ScalperConfig | None = None, threads: int = 2) -> Prepared:
    """Features (``FeatureEngineer.batch_many``) and ``find_setups`` rows of every series."""
    started = time.perf_counter()
    symbols = list(series)
    fe = FeatureEngineer()
    out = fe.batch_many([series[s] for s in symbols], threads=threads)
    feats = {s: x for s, (x, _) in zip(symbols, out, strict=True)}
    found = {s: find_setups(feats[s], rules) for s in symbols}
    return Prepared(dict(series), feats, found, time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order the paper account received, in arrival order (client id, side, type, quantity, trigger)."""

    client_id: str
    symbol: str
    side: str
    type: str
    quantity: str
    trigger_price: str
    updated_ms: int
    """The order's last update (placement, fill, trigger or cancel) in account time."""


@dataclass
class BacktestResult:
    """Everything one run produced: trades, signals, orders and counters."""

    mode: Mode
    start_ms: int
    end_ms: int
    balance: Decimal
    trades: list[Trade]
    signals: list[Signal]
    orders: list[OrderRow]
    open_positions: list[str]
    skip_reasons: dict[str, int]
    minutes: int
    candles: int
    seconds: float
    final_wallet: Decimal
    notes: list[str] = field(default_factory=list)
    funding_paid: Decimal = Decimal(0)
    """Σ funding the positions paid under ``BacktestConfig.funding_rate`` (in ``final_wallet``, not in the trades)."""
    equity: list[tuple[int, Decimal]] = field(default_factory=list)
    """(minute close, wallet + unrealised PnL at that minute's marks) at every minute whose equity changed: the
    marked-to-market curve behind ``max_drawdown_marked`` (the trades alone see only realised equity)."""


def _minute_index(prepared: Prepared, start: int, end: int) -> dict[int, list[tuple[str, int]]]:
    """Open time → [(symbol, row)] of every setup row inside [start, end)."""
    out: dict[int, list[tuple[str, int]]] = {}
    for sym, found in prepared.setups.items():
        ot = prepared.series[sym].open_time
        for r in found.rows.tolist():
            t = int(ot[r])
            if start <= t < end:
                out.setdefault(t, []).append((sym, r))
    return out


def _random_index(prepared: Prepared, start: int, end: int, seed: int) -> dict[int, list[tuple[str, int, int]]]:
    """Open time → [(symbol, row, side)]: per symbol as many entries as its distinct setups in the window, at
    uniformly drawn minutes with a usable ATR, sides ±1 by a fair coin (seeded)."""
    rng = np.random.default_rng(seed)
    out: dict[int, list[tuple[str, int, int]]] = {}
    for sym in sorted(prepared.series):
        s, x = prepared.series[sym], prepared.features[sym]
        n = prepared.distinct_setups(sym, start, end)
        with np.errstate(invalid="ignore"):
            ok = np.flatnonzero((s.open_time >= start) & (s.open_time < end) & np.isfinite(x[:, ATR_PCT])
                                & (x[:, ATR_PCT] > 0))
        if n == 0 or len(ok) == 0:
            continue
        picks = np.sort(rng.choice(ok, size=min(n, len(ok)), replace=False))
        sides = rng.choice(np.array([1, -1]), size=len(picks))
        for r, d in zip(picks.tolist(), sides.tolist(), strict=True):
            out.setdefault(int(s.open_time[r]), []).append((sym, int(r), int(d)))
    return out


class _Run:
    """State of one pass over the minutes (see the module docstring)."""

    def __init__(self, prepared: Prepared, config: BacktestConfig, stack: Stack, clock: BacktestClock,
                 scorer: Scorer | None, model_version: Callable[[], int | None]) -> None:
        self.p, self.cfg, self.stack, self.clock = prepared, config, stack, clock
        self.scorer, self.model_version = scorer, model_version
        self.rules = config.rules()
        self.scalper = ICTScalper(self.rules)
        self.cursor: dict[str, int] = {}
        self.active: set[str] = set()
        self.signals: list[Signal] = []
        self.equity: list[tuple[int, Decimal]] = []
        """(minute close, wallet + unrealised PnL at the marks) after every minute whose equity changed."""

    def _row_at(self, sym: str, t: int) -> int | None:
        """Row of open time ``t`` of ``sym``, walking the symbol's cursor forward (gaps give None)."""
        ot = self.p.series[sym].open_time
        i = self.cursor.get(sym)
        if i is None or i >= len(ot) or int(ot[i]) > t or (i > 0 and int(ot[i - 1]) >= t):
            i = int(np.searchsorted(ot, t))
        while i < len(ot) and int(ot[i]) < t:
            i += 1
        self.cursor[sym] = i
        if i < len(ot) and int(ot[i]) == t:
            self.cursor[sym] = i + 1
            return i
        return None

    def _price(self, sym: str, r: int) -> None:
        s = self.p.series[sym]
        price = Decimal(repr(float(s.close[r])))
        self.stack.executor.on_price(sym, price)
        self.stack.broker.on_price(sym, price, int(s.open_time[r]) + MINUTE_MS - 1)

    async def _settle(self) -> None:
        await asyncio.sleep(0)  # one loop turn: the account's events (call_soon) reach the executor's queue
        await self.stack.executor.idle()

    async def minute(self, t: int, setups: Sequence[tuple[Any, ...]]) -> None:
        ex, broker = self.stack.executor, self.stack.broker
        self.clock.now_ms = t + MINUTE_MS
        events = 0
        for sym in sorted(self.active):
            r = self._row_at(sym, t)
            if r is None:
                continue
            s = self.p.series[sym]
            if sym in ex.book and (quote := self.cfg.funding_quote(t)) is not None:
                broker.note_funding(sym, quote)  # the bar ending at the funding time settles it
            events += broker.on_bar(sym, float(s.open[r]), float(s.high[r]), float(s.low[r]), float(s.close[r]),
                                    t, self.cfg.price_path)
            ex.on_price(sym, Decimal(repr(float(s.close[r]))))
        if events:
            await self._settle()
        if setups:
            await self._signals(t, setups)
        if ex.book and await ex.check_exits():
            await self._settle()
        self._refresh_active()
        equity = broker.account.balance().margin_balance
        if not self.equity or equity != self.equity[-1][1]:
            self.equity.append((t + MINUTE_MS, equity))

    async def _signals(self, t: int, setups: Sequence[tuple[Any, ...]]) -> None:
        ex = self.stack.executor
        for item in setups:
            if item[0] not in self.active:
                self._price(item[0], item[1])
        out = self._random(t, setups) if self.cfg.mode == "random" else self._ruled(t, setups)
        for sig in out:
            self.signals.append(sig)
            ex.submit(sig)
        if out:
            await self._settle()
            for sig in out:
                self.cursor.setdefault(sig.symbol, 0)
            self._refresh_active()

    def _ruled(self, t: int, setups: Sequence[tuple[Any, ...]]) -> list[Signal]:
        syms = [sym for sym, _ in setups]
        x = np.stack([self.p.features[sym][r] for sym, r in setups])
        if self.cfg.mode == "unfiltered":
            p: F64 | None = np.full(len(syms), self.cfg.baseline_confidence)
        else:
            scores = None if self.scorer is None else self.scorer(x)
            p = None if scores is None else np.asarray(scores, dtype=np.float64)
        closes = [Decimal(repr(float(self.p.series[sym].close[r]))) for sym, r in setups]
        bars = np.fmin(x[:, BOS], x[:, CHOCH])  # a setup always has a break: b is a whole number of candles
        breaks = np.array([self.p.series[sym].open_time[r - int(b)] for (sym, r), b in zip(setups, bars, strict=True)],
                          dtype=np.int64)
        return self.scalper.on_batch(syms, np.full(len(syms), t, dtype=np.int64), x, p,
                                     model_version=self.model_version(), close_prices=closes,
                                     now_ms=self.clock(), break_open_times=breaks)

    def _random(self, t: int, setups: Sequence[tuple[Any, ...]]) -> list[Signal]:
        out = []
        for sym, r, d in setups:
            row = self.p.features[sym][r]
            stop = float(np.clip(self.rules.stop_atr_mult * row[ATR_PCT], self.rules.min_stop_pct,
                                 self.rules.max_stop_pct))
            side: PositionSide = "LONG" if d > 0 else "SHORT"
            out.append(Signal(signal_id=f"{sym}:{side}:{t}", symbol=sym, side=side, open_time=t,
                              price=Decimal(repr(float(self.p.series[sym].close[r]))),
                              confidence=self.cfg.baseline_confidence, stop_pct=stop,
                              target_pct=self.rules.reward_risk * stop, setup=f"random@{t}",
                              features=tuple(float(v) for v in row), schema_version=FEATURE_SCHEMA.version,
                              created_ms=self.clock()))
        return out

    def _refresh_active(self) -> None:
        acc = self.stack.broker.account
        keep = set(self.stack.executor.book)
        for sym in self.active - keep:
            if acc.open_orders(sym) or acc.open_algo_orders(sym):
                keep.add(sym)
        self.active = keep


async def run_backtest(prepared: Prepared, filters: Mapping[str, SymbolFilters],
                       brackets: Mapping[str, SymbolBrackets], config: BacktestConfig | None = None, *,
                       scorer: Scorer | None = None, model_version: Callable[[], int | None] = lambda: None,
                       progress: Progress | None = None, on_minute: MinuteHook | None = None,
                       on_trade: Callable[[Trade, Signal | None], None] | None = None) -> BacktestResult:
    """One backtest over ``prepared`` candles (must run inside an event loop; see the module docstring)."""
    cfg = config or BacktestConfig()
    started = time.perf_counter()
    series = prepared.series
    missing = [s for s in series if s not in filters]
    if missing:
        raise ValueError(f"no exchange filters for {', '.join(missing)} (not in exchangeInfo)")
    first = min(int(s.open_time[0]) for s in series.values() if len(s))
    last = max(int(s.open_time[-1]) for s in series.values() if len(s))
    start = max(first, cfg.start_ms if cfg.start_ms is not None else first)
    end = min(last + MINUTE_MS, cfg.end_ms if cfg.end_ms is not None else last + MINUTE_MS)
    timeline = np.unique(np.concatenate([s.open_time[(s.open_time >= start) & (s.open_time < end)]
                                         for s in series.values()]))
    index: Mapping[int, Sequence[tuple[Any, ...]]] = (
        _random_index(prepared, start, end, cfg.seed) if cfg.mode == "random" else _minute_index(prepared, start, end))
    clock = BacktestClock(start)
    returns = SeriesReturns({sym: (s.open_time, s.close) for sym, s in series.items()},
                            cfg.trading.correlation_minutes)
    guard = (lambda _sym: cfg.funding_quote(clock.now_ms)) if cfg.funding_rate is not None else None
    stack = build_stack(cfg.trading, filters, brackets, clock, returns=returns, funding=guard)
    run = _Run(prepared, cfg, stack, clock, scorer, model_version)
    by_id: dict[str, Signal] = {}
    closed: list[Trade] = []

    def trade_closed(trade: Trade) -> None:
        closed.append(trade)
        if on_trade is not None:
            on_trade(trade, by_id.get(trade.signal_id))

    stack.executor.add_trade_listener(trade_closed)
    await stack.executor.start()
    try:
        total = len(timeline)
        step = max(1, total // 200)
        for k, t in enumerate(timeline.tolist()):
            n_before = len(run.signals)
            await run.minute(t, index.get(t, ()))
            for sig in run.signals[n_before:]:
                by_id[sig.signal_id] = sig
            if on_minute is not None:
                await on_minute(t + MINUTE_MS)
            if progress is not None and (k % step == 0 or k == total - 1):
                progress(k + 1, total)
        await stack.executor.idle()
    finally:
        await stack.executor.stop()
    acc = stack.broker.account
    return BacktestResult(
        mode=cfg.mode, start_ms=start, end_ms=end, balance=Decimal(str(cfg.trading.paper_balance)),
        trades=sorted(closed, key=lambda tr: (tr.exit_time_ms, tr.signal_id)), signals=run.signals,
        orders=account_orders(acc, sorted(series)), open_positions=sorted(stack.executor.book),
        skip_reasons=dict(stack.executor.stats.skip_reasons), minutes=len(timeline),
        candles=int(sum(np.count_nonzero((s.open_time >= start) & (s.open_time < end)) for s in series.values())),
        seconds=time.perf_counter() - started, final_wallet=acc.balance().wallet,
        funding_paid=sum((f.amount for f in stack.broker.funding_payments), Decimal(0)), equity=run.equity)


def account_orders(account: Any, symbols: Sequence[str]) -> list[OrderRow]:
    """Every order a simulated account received (its ``order_log``), in arrival order, with what it asked for.

    Works on any :class:`~smc_quant.sim.account.SimAccount` — the backtest's and the service's paper account —
    so the two can be compared order by order (the parity test)."""
    from smc_quant.errors import VenueRejected

    out: list[OrderRow] = []
    for cid in dict.fromkeys(account.order_log):
        try:
            a = account.query_algo(client_algo_id=cid)
        except VenueRejected:
            a = None
        if a is not None:
            qty = "" if a.quantity is None else format(a.quantity, "f")
            out.append(OrderRow(cid, a.symbol, a.side, a.type, qty, format(a.trigger_price, "f"), a.update_time_ms))
            continue
        for sym in symbols:
            try:
                o = account.query_order(sym, client_order_id=cid)
            except VenueRejected:
                continue
            out.append(OrderRow(cid, o.symbol, o.side, o.type, format(o.orig_qty, "f"), "", o.update_time_ms))
            break
    return out
