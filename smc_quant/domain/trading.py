"""Trading values shared by the strategy, the risk manager, the order manager and every broker.

Pure and immutable. Money (prices, quantities, balances, PnL, fees) is ``Decimal``; model outputs
and percentages used only for decisions (confidence, % stop/target) are floats and are converted to
Decimal prices by the risk manager with the symbol's tick size.

Direction convention: ``side`` of a *position* is ``"LONG"`` or ``"SHORT"``; the order that opens it
is a BUY or a SELL respectively, the order that closes it the opposite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Literal

PositionSide = Literal["LONG", "SHORT"]
OrderSide = Literal["BUY", "SELL"]

ZERO = Decimal(0)


def entry_side(side: PositionSide) -> OrderSide:
    """The order side that opens a position of ``side``."""
    return "BUY" if side == "LONG" else "SELL"


def exit_side(side: PositionSide) -> OrderSide:
    """The order side that closes a position of ``side``."""
    return "SELL" if side == "LONG" else "BUY"


def direction(side: PositionSide) -> int:
    """+1 for LONG, −1 for SHORT."""
    return 1 if side == "LONG" else -1


class ExitReason(StrEnum):
    """Why a position was closed (stored with the trade, shown in reports)."""

    TAKE_PROFIT = "take_profit"
    STOP_LOSS = "stop_loss"
    TIME = "time_limit"
    ROTATION = "rotation"
    LIQUIDATION = "liquidation"
    ADL = "adl"
    MANUAL = "manual"
    SHUTDOWN = "shutdown"
    BREAKER = "daily_breaker"
    RECONCILED = "reconciled"
    """Found closed at the exchange by reconciliation without an event we saw."""
    DELISTING = "delisting"
    """Closed by us before the exchange's scheduled delisting of the symbol (``TradingSettings.delisting_exit_s``)."""
    UNPROTECTED = "unprotected"
    """Closed by us at market because its stop could not be placed at the exchange (no position without a stop): a
    failure of the exchange or of our request, not of the market, so no stop-loss cooldown follows."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A trade idea from the strategy: what, which way, how sure, and the % distances of the exits.

    ``signal_id`` is deterministic (symbol, side, setup bar), so the same setup seen twice — e.g. by a
    restarted shard — yields the same id and therefore the same client order ids.
    """

    signal_id: str
    symbol: str
    side: PositionSide
    open_time: int
    """Open time (ms) of the closed 1m candle the signal was computed after."""
    price: Decimal
    """That candle's close: the reference for the % stop and target."""
    confidence: float
    """The model's P(win), in [0, 1]."""
    stop_pct: float
    target_pct: float
    setup: str
    """Which rule fired and on which structure, e.g. ``sweep>choch>fvg@1700000000000``."""
    features: tuple[float, ...] = ()
    """The feature row at signal time (frozen, stored with the signal and the trade)."""
    expected_return_pct: float | None = None
    model_version: int | None = None
    schema_version: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class Position:
    """An open position as the executor knows it (exchange facts + our bookkeeping)."""

    symbol: str
    side: PositionSide
    quantity: Decimal
    """Absolute size in base units (> 0)."""
    entry_price: Decimal
    entry_time_ms: int
    leverage: int = 1
    signal_id: str = ""
    confidence: float = 0.0
    stop_price: Decimal | None = None
    target_price: Decimal | None = None
    mark_price: Decimal | None = None

    @property
    def notional(self) -> Decimal:
        return self.quantity * (self.mark_price or self.entry_price)

    @property
    def margin(self) -> Decimal:
        return self.notional / Decimal(self.leverage)

    @property
    def unrealized_pnl(self) -> Decimal:
        if self.mark_price is None:
            return ZERO
        return (self.mark_price - self.entry_price) * self.quantity * direction(self.side)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one of our orders."""

    symbol: str
    client_order_id: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    """Commission in the quote asset (USDT), positive = paid."""
    time_ms: int
    realized_pnl: Decimal = ZERO
    trade_id: int = 0
    order_id: int = 0
    is_maker: bool = False


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed round trip: entry, exit, fees and the realised result."""

    signal_id: str
    symbol: str
    side: PositionSide
    quantity: Decimal
    entry_price: Decimal
    exit_price: Decimal
    entry_time_ms: int
    exit_time_ms: int
    fees: Decimal
    exit_reason: ExitReason
    confidence: float = 0.0

    @property
    def gross_pnl(self) -> Decimal:
        return (self.exit_price - self.entry_price) * self.quantity * direction(self.side)

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees

    @property
    def net_return_pct(self) -> float:
        """Net PnL as % of the entry notional (independent of capital and leverage)."""
        notional = self.entry_price * self.quantity
        return float(self.net_pnl / notional * 100) if notional else 0.0


@dataclass(frozen=True, slots=True)
class ExperienceRow:
    """One closed trade as the learner sees it: signal-time features and the realised net % return."""

    symbol: str
    side: PositionSide
    features: tuple[float, ...]
    schema_version: str
    net_return_pct: float
    """Net of fees, % of entry notional (:attr:`Trade.net_return_pct`)."""
    signal_time_ms: int
    closed_ms: int
    model_version: int | None = None
    exit_reason: str | None = None
    """The trade's :class:`ExitReason` value (``None``: not known, e.g. a row stored before it was read back)."""

    @property
    def win(self) -> bool:
        """The history labels' rule (``smc_quant.labels.triple_barrier``: the target was hit): an exit at the take
        profit. A trade closed at the time limit with a small net gain is not a win there, and must not be one
        here — the model learns one target from both kinds of rows, and the confidence threshold is reasoned on
        full-target wins. Without an exit reason: a positive net return."""
        if self.exit_reason is not None:
            return self.exit_reason == ExitReason.TAKE_PROFIT.value
        return self.net_return_pct > 0

    @property
    def labelled(self) -> bool:
        """Whether the market ended the trade the way a history label ends: at its target, its stop (or beyond it:
        a liquidation), or its time limit. A trade we cut short — rotated out (in profit), the breaker, a
        delisting, a shutdown, a person, a stop that could not be placed — or found closed without its fill
        (``reconciled``) has no such outcome and is not a training row (it used to be one, a loss at 3× weight,
        whatever it made)."""
        return self.exit_reason is None or self.exit_reason in _LABELLED_EXITS


_LABELLED_EXITS = frozenset({ExitReason.TAKE_PROFIT.value, ExitReason.STOP_LOSS.value, ExitReason.TIME.value,
                             ExitReason.LIQUIDATION.value})


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What the risk manager needs to know about the account at one instant."""

    wallet_balance: Decimal
    unrealized_pnl: Decimal
    available_balance: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    time_ms: int = 0

    @classmethod
    def of(cls, wallet: Decimal, positions: dict[str, Position], time_ms: int) -> AccountSnapshot:
        """The account holding ``positions`` (valued at their ``mark_price``): available = equity − their
        margin."""
        unrealized = sum((p.unrealized_pnl for p in positions.values()), ZERO)
        used = sum((p.margin for p in positions.values()), ZERO)
        return cls(wallet, unrealized, wallet + unrealized - used, positions, time_ms)

    @property
    def equity(self) -> Decimal:
        """Margin balance = wallet + unrealised PnL (what Binance calls ``totalMarginBalance``)."""
        return self.wallet_balance + self.unrealized_pnl

    @property
    def used_margin(self) -> Decimal:
        return sum((p.margin for p in self.positions.values()), ZERO)


__all__ = [
    "ZERO", "AccountSnapshot", "ExitReason", "ExperienceRow", "Fill", "OrderSide", "Position", "PositionSide",
    "Signal", "Trade", "direction", "entry_side", "exit_side",
]
