"""The broker contract: what the SmartOrderManager asks of an exchange, and what an exchange tells it.

Three implementations share it, so strategy, risk and order code are the same objects in every mode:

- ``LiveBroker`` (``smc_quant/exchange/trade_client.py``): signed REST to Binance or the emulator, with
  account events from the user-data stream (``smc_quant/exchange/user_stream.py``);
- ``PaperBroker`` (``smc_quant/paper.py``): the simulated account of ``smc_quant/sim`` in process,
  priced by the live (or emulated) market data, no keys;
- the emulator itself serves the same simulated account over the Binance wire protocol.

Values are venue-neutral and Decimal; wire names live only in the REST and stream adapters.

Errors a broker raises (``smc_quant.errors``): ``VenueRejected`` (with ``.code``: the exchange said no),
``TemporaryError`` / ``RateLimited`` (nothing happened, retry later) and :class:`OrderStatusUnknown`
(a timeout or a 503 "unknown": the order may or may not exist — query before anything is re-sent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from smc_quant.domain.trading import ZERO, OrderSide, PositionSide
from smc_quant.errors import TemporaryError

__all__ = [
    "FILL_EXECUTIONS",
    "AccountConfig",
    "AccountEvent",
    "AccountModeChanged",
    "AccountUpdate",
    "AlgoRequest",
    "AlgoState",
    "AlgoStatus",
    "AlgoType",
    "AlgoUpdate",
    "Balance",
    "Broker",
    "ExchangePosition",
    "ExchangeTrade",
    "IncomeRow",
    "OrderRequest",
    "OrderState",
    "OrderStatus",
    "OrderStatusUnknown",
    "OrderUpdate",
    "StreamExpired",
    "TriggerType",
]

OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"]
AlgoStatus = Literal["NEW", "CANCELED", "TRIGGERING", "TRIGGERED", "FINISHED", "REJECTED", "EXPIRED"]
TriggerType = Literal["STOP_MARKET", "TAKE_PROFIT_MARKET"]
"""The conditional orders we place."""
AlgoType = Literal["STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"]
"""Every conditional type the Algo Order endpoint takes: the account may hold a person's of any of them."""
FINAL_ORDER = frozenset({"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"})
FINAL_ALGO = frozenset({"CANCELED", "FINISHED", "REJECTED", "EXPIRED"})
FILL_EXECUTIONS = frozenset({"TRADE", "CALCULATED"})
"""Execution types that carry a fill (with ``l > 0``): TRADE, and CALCULATED — a liquidation's or an ADL's own fill
(Binance may send the same fill again as TRADE, with the same trade id)."""


class OrderStatusUnknown(TemporaryError):
    """The request may have reached the matching engine (timeout, 503 "unknown"): query it first."""

    def __init__(self, message: str, *, client_id: str) -> None:
        super().__init__(message)
        self.client_id = client_id


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A plain order (``POST /fapi/v1/order``); quantities and prices already pass the filters."""

    symbol: str
    side: OrderSide
    type: Literal["MARKET", "LIMIT"]
    quantity: Decimal
    client_order_id: str
    price: Decimal | None = None
    reduce_only: bool = False
    time_in_force: str = "GTC"


@dataclass(frozen=True, slots=True)
class AlgoRequest:
    """A conditional order (``POST /fapi/v1/algoOrder``, ``algoType=CONDITIONAL``)."""

    symbol: str
    side: OrderSide
    type: TriggerType
    trigger_price: Decimal
    client_algo_id: str
    quantity: Decimal | None = None
    """Omitted with ``close_position``."""
    close_position: bool = False
    reduce_only: bool = False
    working_type: Literal["CONTRACT_PRICE", "MARK_PRICE"] = "CONTRACT_PRICE"


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order as the exchange reports it."""

    symbol: str
    client_order_id: str
    order_id: int
    status: OrderStatus
    side: OrderSide
    type: str
    orig_qty: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    reduce_only: bool = False
    update_time_ms: int = 0

    @property
    def final(self) -> bool:
        return self.status in FINAL_ORDER


@dataclass(frozen=True, slots=True)
class AlgoState:
    """A conditional order as the exchange reports it."""

    symbol: str
    client_algo_id: str
    algo_id: int
    status: AlgoStatus
    side: OrderSide
    type: AlgoType
    trigger_price: Decimal | None
    """The trigger; for a trailing stop its activation price, ``None`` when it has none (active at once)."""
    quantity: Decimal | None = None
    close_position: bool = False
    update_time_ms: int = 0
    actual_order_id: int | None = None
    """``actualOrderId``: the matching-engine order the trigger placed (``None`` before it fired). Its client id
    is not documented to be our ``clientAlgoId``: the fill is looked up by this id when that one is unknown."""
    callback_rate: Decimal | None = None
    """A trailing stop's ``callbackRate`` in percent (``None`` for every other type)."""

    @property
    def final(self) -> bool:
        return self.status in FINAL_ALGO


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    """One non-zero position (one-way mode)."""

    symbol: str
    side: PositionSide
    quantity: Decimal
    """Absolute size (> 0)."""
    entry_price: Decimal
    mark_price: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    liquidation_price: Decimal = ZERO
    leverage: int = 0
    update_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class Balance:
    """USDT balance: wallet, unrealised PnL, available for new margin."""

    wallet: Decimal
    unrealized_pnl: Decimal
    available: Decimal

    @property
    def margin_balance(self) -> Decimal:
        return self.wallet + self.unrealized_pnl


@dataclass(frozen=True, slots=True)
class IncomeRow:
    """One row of the account's income history (``GET /fapi/v1/income``): a wallet movement and its kind."""

    symbol: str
    """Empty for movements of no symbol (a TRANSFER)."""
    income_type: str
    """``FUNDING_FEE``, ``REALIZED_PNL``, ``COMMISSION``, ``TRANSFER`` …"""
    income: Decimal
    """Signed, in ``asset``: positive = received, negative = paid."""
    asset: str
    time_ms: int
    tran_id: int
    """Unique within one income type of the account."""


@dataclass(frozen=True, slots=True)
class ExchangeTrade:
    """One execution of the account as the exchange's trade history reports it (``GET /fapi/v1/userTrades``): no
    client id (an order's is learned by querying ``order_id``), the commission in its own asset."""

    symbol: str
    trade_id: int
    order_id: int
    side: OrderSide
    quantity: Decimal
    price: Decimal
    commission: Decimal
    """Paid (positive), in ``commission_asset``."""
    commission_asset: str
    realized_pnl: Decimal
    time_ms: int
    is_maker: bool = False


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """The account-wide settings that decide whether our orders and our margin arithmetic hold
    (``GET /fapi/v1/accountConfig``; ``None`` where the exchange did not say)."""

    dual_side_position: bool
    """Hedge Mode (``true``): every order must name ``positionSide`` LONG/SHORT. We trade One-way Mode."""
    multi_assets_margin: bool
    """Multi-Assets Mode: margin and liquidation across several assets. We size and guard in USDT alone."""
    can_trade: bool | None = None
    fee_tier: int | None = None


# -- account events (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, ALGO_UPDATE, listenKeyExpired) ---------


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """One ``ORDER_TRADE_UPDATE``: a state change of an order, with a fill when :attr:`has_fill`."""

    symbol: str
    client_order_id: str
    order_id: int
    side: OrderSide
    type: str
    execution: str
    """NEW, TRADE, CANCELED, EXPIRED, CALCULATED (liquidation), AMENDMENT."""
    status: OrderStatus
    orig_qty: Decimal
    last_qty: Decimal
    last_price: Decimal
    cum_qty: Decimal
    avg_price: Decimal
    commission: Decimal
    realized_pnl: Decimal
    reduce_only: bool
    is_maker: bool
    trade_id: int
    event_time_ms: int
    trade_time_ms: int
    commission_asset: str = "USDT"
    """``N``: the asset ``commission`` is in (BNB with BNB Fee Discount on; :mod:`smc_quant.orders.fees`)."""

    @property
    def has_fill(self) -> bool:
        """It carries an execution: ``last_qty > 0`` on a TRADE or a CALCULATED (liquidation, ADL) event."""
        return self.last_qty > 0 and self.execution in FILL_EXECUTIONS

    @property
    def is_liquidation(self) -> bool:
        return self.client_order_id.startswith("autoclose-") or self.execution == "CALCULATED"

    @property
    def is_adl(self) -> bool:
        return self.client_order_id.startswith("adl_autoclose")


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """One ``ACCOUNT_UPDATE``: balances and the positions that changed (quantity 0 = flat)."""

    reason: str
    wallet_balance: Decimal | None
    positions: tuple[ExchangePosition | tuple[str, None], ...]
    """A changed position, or ``(symbol, None)`` when it went flat."""
    event_time_ms: int
    balance_change: Decimal | None = None
    """The quote asset's ``bc``: the wallet change other than realised PnL and commission (a funding fee, a
    transfer); ``None`` when not sent."""


@dataclass(frozen=True, slots=True)
class AlgoUpdate:
    """One ``ALGO_UPDATE``: a conditional order changed state (``reject_reason`` on REJECTED)."""

    symbol: str
    client_algo_id: str
    algo_id: int
    status: AlgoStatus
    side: OrderSide
    type: str
    trigger_price: Decimal
    event_time_ms: int
    reject_reason: str = ""
    executed_qty: Decimal | None = None
    """``aq``: what the triggered order executed (``None`` when the frame does not say)."""
    actual_order_id: int | None = None
    """``ai``: the order the trigger placed in the matching engine (``None`` while there is none)."""

    @property
    def ended_unexecuted(self) -> bool:
        """It is over without having executed anything: REJECTED, EXPIRED, CANCELED, or FINISHED with ``aq = 0``
        (it fired, but its order filled nothing). Whether a cancel was ours is for the caller to know."""
        if self.status == "FINISHED":
            return self.executed_qty is not None and self.executed_qty == 0
        return self.status in ("REJECTED", "EXPIRED", "CANCELED")


@dataclass(frozen=True, slots=True)
class StreamExpired:
    """``listenKeyExpired`` (or the paper broker's equivalent): events may have been missed; reconcile."""

    event_time_ms: int


@dataclass(frozen=True, slots=True)
class AccountModeChanged:
    """``ACCOUNT_CONFIG_UPDATE`` with ``ai``: the account's Multi-Assets Mode was switched (``j``). A leverage
    change (``ac``) is not an event here: we set each symbol's leverage ourselves before an entry."""

    multi_assets_margin: bool
    event_time_ms: int


AccountEvent = OrderUpdate | AccountUpdate | AlgoUpdate | StreamExpired | AccountModeChanged
EventSink = Callable[[AccountEvent], None]


class Broker(Protocol):
    """What the SmartOrderManager needs from an exchange."""

    async def server_time(self) -> int: ...

    async def place_order(self, request: OrderRequest) -> OrderState: ...

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """``None`` when the exchange does not know the id (-2013)."""
        ...

    async def query_order_id(self, symbol: str, order_id: int) -> OrderState | None:
        """The order by the exchange's id (a triggered stop's ``actualOrderId``); ``None`` when unknown."""
        ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """``None`` when already gone (-2011 / -2013)."""
        ...

    async def place_algo(self, request: AlgoRequest) -> AlgoState: ...

    async def query_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None: ...

    async def cancel_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None: ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]: ...

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoState]: ...

    async def positions(self) -> list[ExchangePosition]: ...

    async def balance(self) -> Balance: ...

    async def set_leverage(self, symbol: str, leverage: int) -> None: ...

    async def user_trades(self, symbol: str, since_ms: int) -> list[ExchangeTrade]:
        """The account's executions on ``symbol`` at or after ``since_ms`` (within the exchange's 7-day window),
        oldest first: every one, ours or not."""
        ...

    async def set_margin_type(self, symbol: str, margin_type: Literal["ISOLATED", "CROSSED"]) -> None:
        """No-op when already set (-4046)."""
        ...

    def subscribe(self, sink: EventSink) -> None:
        """Deliver every account event to ``sink`` (called on the event loop, in exchange order)."""
        ...
