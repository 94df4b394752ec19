"""RiskManager: turns a Signal into an order size, a leverage and exit prices, or a reasoned refusal.

Every decision carries a machine-readable ``reason``. In evaluation order:

* bad input → ``unknown_symbol``, ``no_brackets``, ``bad_mark``, ``bad_signal``, ``no_equity``;
* ``delisting``: the exchange has scheduled the symbol's delisting (:attr:`RiskManager.delistings`, from
  exchangeInfo's ``deliveryDate``): no new entry on a dying market, whenever the delisting is due;
* ``daily_breaker``: realised net PnL of today's (UTC) closed trades + the account's unrealised PnL has
  lost ≥ ``daily_loss_limit_pct`` of the day's starting equity; latched until the next UTC day;
* ``already_open`` (one position per symbol), ``cooldown`` (a stop-loss or liquidation exit on the symbol
  less than ``cooldown_ms`` ago), ``low_confidence`` (multiplier ≤ 0);
* exits: stop = price × (1 ∓ stop%/100), target = price × (1 ± target%/100) from the signal's candle close,
  each rounded to the tick *toward the entry* (a stop never further away, a target never further away than
  planned); then ``price_drifted`` (the mark moved from the signal price by more than ``max_entry_drift`` of
  the stop distance), ``stop_crossed``/``target_crossed`` (an exit on the wrong side of the mark),
  ``price_filter`` (outside PRICE_FILTER);
* ``funding``: the next funding time of the symbol falls in the hold window (now, now + ``max_hold_ms`` +
  ``exit_slack_ms``] and
  the signal's side would pay more than ``max_funding_pct`` % of notional there (:mod:`smc_quant.funding`;
  no quote, or a stale one, is not counted);
* ``max_positions``: at the limit the weakest-confidence position is rotated out (decision ``rotate``,
  ``close_symbol`` names it) only if it is in profit at its mark and the new signal is more confident;
* ``correlated``: an open position (other than one being rotated out) is the same bet —
  ρ · dir(signal) · dir(position) ≥ ``max_correlation``, with ρ the correlation of the two symbols' recent
  1m returns handed in by the caller (:mod:`smc_quant.correlation`; a pair without a figure is not counted);
* sizing (entry at the mark, all Decimal)::

      m          = min((confidence − 0.5) × 4, max_confidence_multiplier)      (0.75 → 1×, 1.0 → 2×)
      risk %     = min(risk_per_trade_pct × m, 2)                               (hard cap 2 % of equity)
      quantity   = floor_step(equity × risk % / 100 / |mark − stop|)           (MARKET_LOT_SIZE step)

  then the open-risk cap (:func:`open_risk`: what every open position would lose from its mark to its stop,
  plus this one's ``quantity × |mark − stop|``, ≤ ``max_open_risk_pct`` of equity — the loss if all stops
  fill at once, as they do when a crash moves every alt together), the margin caps (this position ≤
  ``max_position_margin_pct``, all positions incl. this one ≤ ``max_total_margin_pct`` of equity) and the
  leverage guard: the lowest integer leverage L ≤ ``max_leverage`` such that the margin fits, L ≤ the
  bracket's max leverage for the notional, notional ≤ ``max_notional(L)`` (both at the notional plus
  ``bracket_headroom``, for a fill above the mark), and the liquidation guard
  ``stop_distance ≤ (1/L − mmr_tier) / liq_safety`` (the isolated-style worst-case liquidation distance as
  a fraction of the entry) holds. When no L carries the full size, the size shrinks to the largest any
  admissible L allows (reason ``shrunk_<cap>``); if no L passes the liquidation guard →
  ``stop_beyond_liquidation``; no risk room → ``open_risk_cap``; no margin room → ``total_margin_cap``; a
  quantity under minQty or MIN_NOTIONAL → ``below_min_notional``.

Exits of open positions: :meth:`RiskManager.due_exits` (2-hour limit, breaker). Pure: no I/O, time passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from smc_quant.domain.trading import ZERO, AccountSnapshot, ExitReason, Position, Signal, Trade, direction
from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.funding import FundingQuote, funding_cost_pct
from smc_quant.orders.filters import PriceRounding, floor_to_step, round_price

if TYPE_CHECKING:
    from smc_quant.settings import TradingSettings

__all__ = ["DAY_MS", "MAX_RISK_PER_TRADE_PCT", "Decision", "DrawdownGuard", "RiskConfig", "RiskManager",
           "confidence_multiplier", "drawdown_pct", "funding_amount", "open_risk", "pnl_path"]

DAY_MS = 86_400_000
MAX_RISK_PER_TRADE_PCT = Decimal(2)
HUNDRED = Decimal(100)
ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Limits of the global book (percentages of equity; times in ms)."""

    risk_per_trade_pct: Decimal = Decimal(1)
    max_confidence_multiplier: Decimal = Decimal(2)
    max_position_margin_pct: Decimal = Decimal(10)
    max_total_margin_pct: Decimal = Decimal(50)
    max_leverage: int = 10
    liq_safety: Decimal = Decimal(2)
    max_positions: int = 3
    cooldown_ms: int = 30 * 60_000
    daily_loss_limit_pct: Decimal = Decimal(5)
    close_on_breaker: bool = True
    max_hold_ms: int = 2 * 3_600_000
    delisting_exit_ms: int = 30 * 60_000
    """An open position on a symbol in :attr:`RiskManager.delistings` is closed this long before the delisting."""
    max_entry_drift: Decimal = Decimal("0.5")
    """How far (fraction of the stop distance) the mark may have moved from the signal price."""
    max_correlation: float = 0.8
    """Refuse a signal whose symbol's returns correlate this much with an open position's, same direction
    (1 refuses only identical moves)."""
    max_funding_pct: Decimal = Decimal("0.05")
    """Refuse a signal whose side pays more than this % of notional at a funding time inside its hold."""
    exit_slack_ms: int = 60_000
    """How long past ``max_hold_ms`` from now a position may still be held: the fill comes after the decision,
    the exit clock checks every 15 s and at each minute close, then its order goes out. The funding guard's window
    is (now, now + max_hold_ms + this]: it used to end at now + max_hold_ms, and a signal handled 50 s after its
    candle let the 08:00 funding fall just past the window and be paid."""
    max_open_risk_pct: Decimal = Decimal(5)
    """What all positions, this one included, would lose if every stop filled now, as % of equity at most."""
    taker_fee: Decimal = Decimal("0.0005")
    """Taker fee rate: a position is rotated out only when its unrealised gain pays its entry's and its exit's fees."""
    bracket_headroom: Decimal = Decimal("0.005")
    """The leverage brackets are checked at the mark plus this fraction: a market fill above the mark (slippage)
    would otherwise take a size sized to the bracket's cap over it, and the exchange refuses it (-2027)."""
    max_tick_distortion: Decimal = Decimal("0.25")
    """A stop or target whose distance from the signal price shrinks by more than this fraction when rounded onto
    the tick grid (toward the entry) is refused ``tick_too_coarse``: the trade would not be the one the model
    scored (CRVUSDT at 0.590, tick 0.001: a 0.30 % stop becomes 0.17 %)."""

    @classmethod
    def of(cls, t: TradingSettings) -> RiskConfig:
        """The limits set by the trading settings (the service and the backtest use this one mapping)."""
        return cls(risk_per_trade_pct=Decimal(str(t.risk_per_trade_pct)), max_positions=t.max_positions,
                   max_position_margin_pct=Decimal(str(t.max_position_margin_pct)),
                   max_total_margin_pct=Decimal(str(t.max_total_margin_pct)), max_leverage=t.max_leverage,
                   max_hold_ms=int(t.max_hold_s * 1000), delisting_exit_ms=int(t.delisting_exit_s * 1000),
                   daily_loss_limit_pct=Decimal(str(t.daily_loss_limit_pct)),
                   cooldown_ms=int(t.cooldown_after_stop_s * 1000), max_correlation=t.max_correlation,
                   max_funding_pct=Decimal(str(t.max_funding_pct)),
                   max_open_risk_pct=Decimal(str(t.max_open_risk_pct)),
                   taker_fee=Decimal(str(t.taker_fee_pct)) / HUNDRED)

    def __post_init__(self) -> None:
        pct = (self.risk_per_trade_pct, self.max_position_margin_pct, self.max_total_margin_pct,
               self.daily_loss_limit_pct, self.max_open_risk_pct)
        problems = []
        if not ZERO < self.risk_per_trade_pct <= MAX_RISK_PER_TRADE_PCT:
            problems.append(f"risk_per_trade_pct must be in (0, {MAX_RISK_PER_TRADE_PCT}]")
        if any(not p.is_finite() or p <= 0 or p > HUNDRED for p in pct):
            problems.append("percentages must be in (0, 100]")
        if self.max_confidence_multiplier <= 0 or self.liq_safety < 1 or self.max_entry_drift < 0:
            problems.append("need max_confidence_multiplier > 0, liq_safety ≥ 1, max_entry_drift ≥ 0")
        if not 1 <= self.max_leverage <= 125 or self.max_positions < 1:
            problems.append("need 1 ≤ max_leverage ≤ 125 and max_positions ≥ 1")
        if self.cooldown_ms < 0 or self.max_hold_ms <= 0 or self.delisting_exit_ms < 0:
            problems.append("need cooldown_ms ≥ 0, max_hold_ms > 0 and delisting_exit_ms ≥ 0")
        if not 0 < self.max_correlation <= 1:
            problems.append("max_correlation must be in (0, 1]")
        if not (self.max_funding_pct.is_finite() and self.max_funding_pct >= 0):
            problems.append("max_funding_pct must be ≥ 0")
        if not (self.bracket_headroom.is_finite() and 0 <= self.bracket_headroom < 1):
            problems.append("bracket_headroom must be in [0, 1)")
        if problems:
            raise ValueError("invalid RiskConfig: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one signal and why; sizes are filled for ``open`` and ``rotate``."""

    action: Literal["open", "skip", "rotate"]
    reason: str
    signal: Signal
    quantity: Decimal = ZERO
    leverage: int = 0
    stop_price: Decimal | None = None
    target_price: Decimal | None = None
    close_symbol: str | None = None
    notional: Decimal = ZERO
    margin: Decimal = ZERO
    risk_amount: Decimal = ZERO

    def as_record(self) -> dict[str, str]:
        """Every field as a string (``signal`` as its id; ``None`` as ""), for persistence and logs."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "signal":
                out["signal_id"], out["symbol"], out["side"] = value.signal_id, value.symbol, value.side
                out["confidence"] = repr(value.confidence)
            else:
                out[f.name] = "" if value is None else format(value, "f") if isinstance(value, Decimal) else str(value)
        return out


def open_risk(position: Position) -> Decimal | None:
    """What ``position`` loses if its stop fills now: ``quantity × max(0, dir · (mark − stop))`` — from the mark,
    so a gain so far is at risk too; from the entry while no mark is known; 0 once the mark has crossed the stop
    (it is filling); ``None`` without a stop."""
    if position.stop_price is None:
        return None
    ref = position.mark_price or position.entry_price
    return position.quantity * max(ZERO, direction(position.side) * (ref - position.stop_price))


def drawdown_pct(wallet: Decimal, unrealized: Decimal, pnl: Decimal, pnl_peak: Decimal) -> Decimal:
    """How far the equity is below its peak, in % of that peak, measured on the account's PnL since a baseline::

        base        = wallet − pnl                 the wallet at the baseline, moved by deposits and withdrawals
        peak equity = base + pnl_peak              pnl_peak = max(0, the highest running pnl since then)
        drawdown %  = (peak equity − (wallet + unrealized)) / peak equity × 100,   at least 0

    ``pnl`` is Σ net PnL of the trades closed since the baseline plus the funding received (minus paid) since
    then (:func:`pnl_path`). The wallet cancels out of the numerator (``pnl_peak − pnl − unrealized``): a
    transfer moves the wallet and the base together, so it is never mistaken for a loss, and a loss counts
    only once it is in ``pnl`` — funding as it is charged, a trade's fees when it closes (an open position's
    entry fee moves the base until then)."""
    peak_equity = wallet - pnl + pnl_peak
    if peak_equity <= 0:
        return ZERO
    return max(ZERO, (peak_equity - wallet - unrealized) / peak_equity * HUNDRED)


def funding_amount(balance_change: Decimal | None, wallet: Decimal | None,
                   known_wallet: Decimal | None) -> Decimal | None:
    """What a ``FUNDING_FEE`` account update charged (negative) or paid out: its ``bc`` (Binance sends the wallet
    and that change for cross margin), else the wallet's change since the last known wallet; ``None`` if neither
    is known."""
    if balance_change is not None:
        return balance_change
    if wallet is None or known_wallet is None:
        return None
    return wallet - known_wallet


def pnl_path(steps: Iterable[tuple[int, Decimal]]) -> tuple[Decimal, Decimal]:
    """``(Σ amount, the highest running Σ, at least 0)`` of ``(time_ms, amount)`` steps taken in time order
    (ties keep their given order): the max-drawdown baseline from the closed trades' net PnL and the funding
    since then (a payment negative)."""
    total = peak = ZERO
    for _, amount in sorted(steps, key=lambda step: step[0]):
        total += amount
        peak = max(peak, total)
    return total, peak


@dataclass(slots=True)
class DrawdownGuard:
    """The max-drawdown halt: the PnL path (trades and funding) since the baseline (:func:`drawdown_pct`) and a
    latch, so it trips once until :meth:`rearm` (a resume) or :meth:`restore` (a new baseline)."""

    limit_pct: Decimal = ZERO
    """0: off."""
    pnl: Decimal = ZERO
    """Σ net PnL of the trades closed since the baseline, plus the funding received (minus paid) since then."""
    pnl_peak: Decimal = ZERO
    """The highest running value of :attr:`pnl` since the baseline (≥ 0)."""
    tripped: bool = False

    def restore(self, pnl: Decimal, pnl_peak: Decimal) -> None:
        """A new baseline's path, read back from the stored trades (start, resume after a max-drawdown halt)."""
        self.pnl, self.pnl_peak, self.tripped = pnl, max(pnl_peak, pnl, ZERO), False

    def on_trade(self, net_pnl: Decimal) -> None:
        self.pnl += net_pnl
        self.pnl_peak = max(self.pnl_peak, self.pnl)

    def on_funding(self, amount: Decimal) -> None:
        """A funding settlement moved the wallet by ``amount`` (negative: paid)."""
        self.on_trade(amount)

    def pct(self, wallet: Decimal, unrealized: Decimal) -> Decimal:
        return drawdown_pct(wallet, unrealized, self.pnl, self.pnl_peak)

    def peak_equity(self, wallet: Decimal) -> Decimal:
        return wallet - self.pnl + self.pnl_peak

    def trip(self, wallet: Decimal, unrealized: Decimal) -> Decimal | None:
        """The drawdown, when it reaches the limit now for the first time since the baseline or a rearm (then
        latched); ``None`` otherwise or when off."""
        if self.limit_pct <= 0 or self.tripped:
            return None
        dd = self.pct(wallet, unrealized)
        if dd < self.limit_pct:
            return None
        self.tripped = True
        return dd

    def rearm(self) -> None:
        self.tripped = False


def confidence_multiplier(confidence: float, cap: Decimal = Decimal(2)) -> Decimal:
    """m = (confidence − 0.5) × 4, capped: 0.5 → 0 (skip), 0.75 → 1, 1.0 → 2 (exact Decimal of the float's repr)."""
    return min((Decimal(repr(confidence)) - Decimal("0.5")) * 4, cap)


@dataclass(frozen=True, slots=True)
class _Size:
    leverage: int
    quantity: Decimal
    bound: str  # "" when the risk-sized quantity fitted


class RiskManager:
    """The global book's gatekeeper: sizing, caps, leverage guard, rotation, cooldown, breaker, forced exits."""

    def __init__(self, config: RiskConfig, filters: Mapping[str, SymbolFilters],
                 brackets: Mapping[str, SymbolBrackets]) -> None:
        self.config = config
        self.filters = filters
        self.brackets = brackets
        self._day: int | None = None
        self._day_start_equity: Decimal | None = None
        self._realised = ZERO
        self._tripped = False
        self._trip: tuple[Decimal, Decimal] = (ZERO, ZERO)
        self._cooldown_until: dict[str, int] = {}
        self.delistings: Mapping[str, int] = {}
        """Symbols the exchange will delist → when (ms); refreshed with the universe (``delisting``)."""

    # ---- day, breaker, cooldown -------------------------------------------------------------------

    @property
    def breaker_tripped(self) -> bool:
        """True once today's loss reached the limit; stays true until the next UTC day."""
        return self._tripped

    @property
    def realised_today(self) -> Decimal:
        """Net PnL of the trades closed this UTC day."""
        return self._realised

    @property
    def day_start_equity(self) -> Decimal | None:
        """The equity today's loss limit is a share of (``None`` before the day's first look at the account)."""
        return self._day_start_equity

    def on_transfer(self, amount: Decimal) -> None:
        """Money moved into (+) or out of (−) the futures wallet — a deposit, a withdrawal: no profit or loss, so the
        day's starting equity moves with it and the daily loss limit stays a share of what the account holds (after
        a 60 % withdrawal, a 5 % limit on the old base allowed 12.5 % of the rest)."""
        if self._day_start_equity is not None:
            self._day_start_equity = max(ZERO, self._day_start_equity + amount)

    def start_day(self, equity: Decimal, now_ms: int) -> None:
        """Begin the UTC day of ``now_ms`` with ``equity`` as its starting equity (resets PnL and breaker)."""
        self._day, self._day_start_equity = now_ms // DAY_MS, equity
        self._realised, self._tripped = ZERO, False

    def _roll(self, now_ms: int, equity: Decimal | None) -> None:
        """Start a new day implicitly when ``now_ms`` is on a later UTC day than the current one."""
        if self._day is None or now_ms // DAY_MS > self._day:
            self._day, self._day_start_equity = now_ms // DAY_MS, equity
            self._realised, self._tripped = ZERO, False
        elif self._day_start_equity is None:
            self._day_start_equity = equity

    def _check_breaker(self, unrealised: Decimal) -> bool:
        start = self._day_start_equity
        if start is not None and start > 0 and not self._tripped:
            loss = -(self._realised + unrealised)
            if loss >= start * self.config.daily_loss_limit_pct / HUNDRED:
                self._tripped, self._trip = True, (self._realised, unrealised)
        return self._tripped

    @property
    def trip(self) -> tuple[Decimal, Decimal] | None:
        """Today's realised and unrealised PnL when the breaker tripped (``None`` while it has not)."""
        return self._trip if self._tripped else None

    def _record(self, trade: Trade) -> None:
        if trade.exit_reason in (ExitReason.STOP_LOSS, ExitReason.LIQUIDATION):
            until = trade.exit_time_ms + self.config.cooldown_ms
            self._cooldown_until[trade.symbol] = max(until, self._cooldown_until.get(trade.symbol, 0))
        if trade.exit_time_ms // DAY_MS == self._day:
            self._realised += trade.net_pnl

    def on_trade_closed(self, trade: Trade, equity_after: Decimal) -> None:
        """Book a closed trade: stop-loss/liquidation cooldown for its symbol, today's realised PnL, breaker."""
        self._roll(trade.exit_time_ms, equity_after - trade.net_pnl)
        self._record(trade)
        self._check_breaker(ZERO)

    def restore(self, trades_today: Iterable[Trade], day_start_equity: Decimal, now_ms: int) -> None:
        """Rebuild the state after a restart from the persisted trades of today (plus any closed within
        ``cooldown_ms`` before, for the cooldowns) and the day's starting equity."""
        self._cooldown_until.clear()
        self.start_day(day_start_equity, now_ms)
        for trade in sorted(trades_today, key=lambda t: t.exit_time_ms):
            self._record(trade)
        self._check_breaker(ZERO)

    def due_exits(self, positions: Iterable[Position], now_ms: int, equity: Decimal | None = None,
                  unrealized: Decimal | None = None) -> list[tuple[Position, ExitReason]]:
        """Positions to close now: on a symbol whose delisting is ``delisting_exit_ms`` away or less
        (``delisting_ms − delisting_exit_ms ≤ now_ms``) → DELISTING; held ``max_hold_ms`` or longer
        (``entry_time_ms + max_hold_ms ≤ now_ms``) → TIME; otherwise, if the breaker is tripped (checked with the
        positions' unrealised PnL at their marks) and ``close_on_breaker`` → BREAKER.

        ``equity`` (the account's, now) starts a new UTC day when this check is the first of it: without it the
        day had no starting equity and the breaker was blind until the first signal or trade of the day.
        ``unrealized``: the whole book's unrealised PnL at the current marks, positions being closed included
        (default: the sum over ``positions``, whose ``mark_price`` must then be current)."""
        held = list(positions)
        self._roll(now_ms, equity)
        self._check_breaker(sum((p.unrealized_pnl for p in held), ZERO) if unrealized is None else unrealized)
        out: list[tuple[Position, ExitReason]] = []
        for p in held:
            delisting_ms = self.delistings.get(p.symbol)
            if delisting_ms is not None and delisting_ms - self.config.delisting_exit_ms <= now_ms:
                out.append((p, ExitReason.DELISTING))
            elif p.entry_time_ms + self.config.max_hold_ms <= now_ms:
                out.append((p, ExitReason.TIME))
            elif self._tripped and self.config.close_on_breaker:
                out.append((p, ExitReason.BREAKER))
        return out

    # ---- entries ----------------------------------------------------------------------------------

    def evaluate(self, signal: Signal, account: AccountSnapshot, mark: Decimal, now_ms: int,
                 correlations: Mapping[str, float] | None = None, funding: FundingQuote | None = None) -> Decision:
        """The decision for ``signal`` given the account, the symbol's mark price, the time, ρ between the
        signal's symbol and the open positions' symbols (absent: not counted) and the symbol's funding quote
        (``None``: unknown, not counted)."""
        equity = account.equity
        self._roll(now_ms, equity)
        reason = self._refusal(signal, account, mark, now_ms)
        if reason:
            return Decision("skip", reason, signal)
        if funding is not None and self.pays_funding(signal, funding, now_ms):
            return Decision("skip", "funding", signal)
        positions = dict(account.positions)
        rotate: str | None = None
        if len(positions) >= self.config.max_positions:
            if len(positions) > self.config.max_positions:  # the limit was lowered with more open: no swap keeps it
                return Decision("skip", "max_positions", signal)
            weakest = min(positions.values(), key=lambda p: (p.confidence, p.symbol))
            fees = 2 * weakest.notional * self.config.taker_fee  # its entry's and its exit's: the trade nets > 0
            if not (weakest.unrealized_pnl > fees and signal.confidence > weakest.confidence):
                return Decision("skip", "max_positions", signal)
            rotate = weakest.symbol
            del positions[rotate]
        if correlations and self._same_bet(signal, positions.values(), correlations):
            return Decision("skip", "correlated", signal)
        used = sum((p.margin for p in positions.values()), ZERO)
        return self._size(signal, equity, used, self.book_risk(positions.values(), equity), mark, rotate)

    def _refusal(self, signal: Signal, account: AccountSnapshot, mark: Decimal, now_ms: int) -> str:
        """The first reason to refuse before sizing, or ""."""
        checks: tuple[tuple[bool, str], ...] = (
            (signal.symbol not in self.filters, "unknown_symbol"),
            (signal.symbol not in self.brackets, "no_brackets"),
            (not (mark.is_finite() and mark > 0), "bad_mark"),
            (not _valid_signal(signal), "bad_signal"),
            (not (account.equity.is_finite() and account.equity > 0), "no_equity"),
        )
        for failed, reason in checks:
            if failed:
                return reason
        if signal.symbol in self.delistings:
            return "delisting"
        if self._tripped or self._check_breaker(account.unrealized_pnl):
            return "daily_breaker"
        if signal.symbol in account.positions:
            return "already_open"
        if now_ms < self._cooldown_until.get(signal.symbol, 0):
            return "cooldown"
        if confidence_multiplier(signal.confidence, self.config.max_confidence_multiplier) <= 0:
            return "low_confidence"
        return ""

    def pays_funding(self, signal: Signal, funding: FundingQuote, now_ms: int) -> bool:
        """Whether the funding time falls inside the hold window and the signal's side pays more than allowed."""
        inside = now_ms < funding.next_ms <= now_ms + self.config.max_hold_ms + self.config.exit_slack_ms
        return inside and funding_cost_pct(signal.side, funding.rate) > self.config.max_funding_pct

    def _same_bet(self, signal: Signal, positions: Iterable[Position], correlations: Mapping[str, float]) -> bool:
        """Whether an open position moves with the signal: ρ · dir(signal) · dir(position) ≥ max_correlation."""
        side = direction(signal.side)
        return any(correlations.get(p.symbol, 0.0) * side * direction(p.side) >= self.config.max_correlation
                   for p in positions)

    @staticmethod
    def book_risk(positions: Iterable[Position], equity: Decimal) -> Decimal:
        """Σ :func:`open_risk` of ``positions``; one without a known stop counts as the most a position of ours
        is sized to risk (``MAX_RISK_PER_TRADE_PCT`` of ``equity``)."""
        unknown = equity * MAX_RISK_PER_TRADE_PCT / HUNDRED
        return sum((unknown if (r := open_risk(p)) is None else r for p in positions), ZERO)

    def exit_prices(self, signal: Signal, mark: Decimal) -> tuple[Decimal, Decimal] | str:
        """(stop, target) on the tick grid, rounded toward the entry, or the refusal reason (``tick_too_coarse``:
        the rounding took more than ``max_tick_distortion`` of a distance)."""
        f = self.filters[signal.symbol]
        d = direction(signal.side)
        ref = signal.price
        raw_stop = ref * (ONE - d * Decimal(repr(signal.stop_pct)) / HUNDRED)
        raw_target = ref * (ONE + d * Decimal(repr(signal.target_pct)) / HUNDRED)
        toward_entry_stop: PriceRounding = "up" if d > 0 else "down"
        toward_entry_target: PriceRounding = "down" if d > 0 else "up"
        stop = round_price(raw_stop, f.tick_size, toward_entry_stop)
        target = round_price(raw_target, f.tick_size, toward_entry_target)
        if abs(mark - ref) > self.config.max_entry_drift * abs(ref - raw_stop):
            return "price_drifted"
        keep = ONE - self.config.max_tick_distortion
        if abs(ref - stop) < keep * abs(ref - raw_stop) or abs(target - ref) < keep * abs(raw_target - ref):
            return "tick_too_coarse"
        if (mark - stop) * d <= 0:
            return "stop_crossed"
        if (target - mark) * d <= 0:
            return "target_crossed"
        if not (f.min_price <= min(stop, target) and max(stop, target) <= f.max_price):
            return "price_filter"
        return stop, target

    def _size(self, signal: Signal, equity: Decimal, used: Decimal, at_risk: Decimal, mark: Decimal,
              rotate: str | None) -> Decision:
        exits = self.exit_prices(signal, mark)
        if isinstance(exits, str):
            return Decision("skip", exits, signal)
        stop, target = exits
        cfg, f = self.config, self.filters[signal.symbol]
        m = confidence_multiplier(signal.confidence, cfg.max_confidence_multiplier)
        risk_pct = min(cfg.risk_per_trade_pct * m, MAX_RISK_PER_TRADE_PCT)
        dist = abs(mark - stop)
        wanted = floor_to_step(equity * risk_pct / HUNDRED / dist, f.market_step_size)
        bound = ""
        top = min(f.market_max_qty, f.max_qty)  # an entry of either type (LOT_SIZE binds a LIMIT) and its exit fit
        if wanted > top:
            wanted, bound = floor_to_step(top, f.market_step_size), "max_qty"
        risk_room = equity * cfg.max_open_risk_pct / HUNDRED - at_risk
        if risk_room <= 0:
            return Decision("skip", "open_risk_cap", signal)
        if wanted * dist > risk_room:
            wanted, bound = floor_to_step(risk_room / dist, f.market_step_size), "open_risk_cap"
        position_cap = equity * cfg.max_position_margin_pct / HUNDRED
        room = equity * cfg.max_total_margin_pct / HUNDRED - used
        if room <= 0:
            return Decision("skip", "total_margin_cap", signal)
        cap_name = "position_margin_cap" if position_cap <= room else "total_margin_cap"
        size = self._leverage(signal.symbol, wanted, mark, dist / mark, min(position_cap, room), cap_name)
        if size is None:
            return Decision("skip", "stop_beyond_liquidation", signal)
        qty = size.quantity
        if qty <= 0 or qty < f.market_min_qty or qty * mark < f.min_notional:
            return Decision("skip", "below_min_notional", signal)
        bound = size.bound or bound
        notional = qty * mark
        return Decision(
            "rotate" if rotate else "open", f"shrunk_{bound}" if bound else "sized", signal, quantity=qty,
            leverage=size.leverage, stop_price=stop, target_price=target, close_symbol=rotate, notional=notional,
            margin=notional / size.leverage, risk_amount=qty * dist,
        )

    def _leverage(self, symbol: str, wanted: Decimal, mark: Decimal, stop_frac: Decimal, margin_cap: Decimal,
                  cap_name: str) -> _Size | None:
        """The lowest leverage carrying ``wanted`` within every limit, else the one allowing the largest size.

        For each L: notional ≤ min(wanted × mark, margin_cap × L, max_notional(L) / (1 + headroom)); the bracket of
        that notional × (1 + headroom) must allow L, and the stop must sit inside the liquidation distance:
        ``stop_frac × liq_safety ≤ 1/L − mmr``. A notional that lands in a tier not allowing L steps back
        just under that tier's floor. ``None`` when no L passes the liquidation guard.
        """
        br, step = self.brackets[symbol], self.filters[symbol].market_step_size
        pad = ONE + self.config.bracket_headroom  # the brackets see the notional at a fill this far above the mark
        best: _Size | None = None
        for lev in range(1, self.config.max_leverage + 1):
            limits = {"": wanted * mark, cap_name: margin_cap * lev, "bracket_notional": br.max_notional(lev) / pad}
            bound = min(limits, key=lambda k: (limits[k], k != ""))
            qty = min(wanted, floor_to_step(limits[bound] / mark, step))
            tier = br.tier(qty * mark * pad)
            if tier.max_leverage < lev and tier.floor > 0:  # just over a tier floor: step back under it
                qty, bound = _below(tier.floor / pad, mark, step), "bracket_notional"
                tier = br.tier(qty * mark * pad)
            if tier.max_leverage < lev or stop_frac * self.config.liq_safety > ONE / lev - tier.maint_margin_ratio:
                continue
            if qty == wanted:
                return _Size(lev, qty, "")
            if best is None or qty > best.quantity:
                best = _Size(lev, qty, bound)
        return best


def _below(floor: Decimal, mark: Decimal, step: Decimal) -> Decimal:
    """The largest quantity on the step grid whose notional is strictly below ``floor``."""
    qty = floor_to_step(floor / mark, step)
    return max(qty - step if qty * mark >= floor else qty, ZERO)


def _valid_signal(signal: Signal) -> bool:
    """Finite positive price and exits, confidence in [0, 1], a known side."""
    finite = all(math.isfinite(x) for x in (signal.stop_pct, signal.target_pct, signal.confidence))
    return (finite and signal.side in ("LONG", "SHORT") and signal.price.is_finite() and signal.price > 0
            and 0 < signal.stop_pct < 100 and signal.target_pct > 0 and 0.0 <= signal.confidence <= 1.0)
