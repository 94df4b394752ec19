"""The simulator's mutable records of one order and one conditional (algo) order.

They live only inside :class:`smc_quant.sim.account.SimAccount`; the outside world sees the frozen
``OrderState`` / ``AlgoState`` / ``OrderUpdate`` / ``AlgoUpdate`` values they produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from smc_quant.domain.trading import ZERO, OrderSide
from smc_quant.orders.broker import AlgoState, AlgoStatus, AlgoType, AlgoUpdate, OrderState, OrderStatus, OrderUpdate

__all__ = ["AlgoRecord", "OrderRecord", "triggers"]


def triggers(type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
    """STOP BUY / TAKE_PROFIT SELL fire at ``price ≥ trigger``; STOP SELL / TAKE_PROFIT BUY at ``price ≤ trigger``."""
    rising = (type == "STOP_MARKET") == (side == "BUY")
    return price >= trigger if rising else price <= trigger


@dataclass(slots=True)
class OrderRecord:
    """One order: what was asked, how much filled, and the initial margin it holds while resting."""

    symbol: str
    client_order_id: str
    order_id: int
    side: OrderSide
    type: str
    quantity: Decimal
    price: Decimal | None
    reduce_only: bool
    time_in_force: str
    time_ms: int
    status: OrderStatus = "NEW"
    executed: Decimal = ZERO
    avg_price: Decimal = ZERO
    margin: Decimal = ZERO
    """Initial margin reserved while the order rests (its opening part × price / leverage)."""

    @property
    def sign(self) -> int:
        """+1 for a BUY, −1 for a SELL."""
        return 1 if self.side == "BUY" else -1

    def state(self) -> OrderState:
        """The order as ``GET /fapi/v1/order`` reports it."""
        return OrderState(self.symbol, self.client_order_id, self.order_id, self.status, self.side, self.type,
                          self.quantity, self.executed, self.avg_price, self.reduce_only, self.time_ms)

    def update(self, execution: str, time_ms: int, *, last_qty: Decimal = ZERO, last_price: Decimal = ZERO,
               commission: tuple[Decimal, str] = (ZERO, "USDT"), realized_pnl: Decimal = ZERO,
               is_maker: bool = False, trade_id: int = 0) -> OrderUpdate:
        """An ``ORDER_TRADE_UPDATE`` for the record's current status (``execution`` = NEW, TRADE, …);
        ``commission``: amount and asset."""
        return OrderUpdate(
            symbol=self.symbol, client_order_id=self.client_order_id, order_id=self.order_id, side=self.side,
            type=self.type, execution=execution, status=self.status, orig_qty=self.quantity, last_qty=last_qty,
            last_price=last_price, cum_qty=self.executed, avg_price=self.avg_price, commission=commission[0],
            realized_pnl=realized_pnl, reduce_only=self.reduce_only, is_maker=is_maker, trade_id=trade_id,
            event_time_ms=time_ms, trade_time_ms=time_ms, commission_asset=commission[1])


@dataclass(slots=True)
class AlgoRecord:
    """One conditional order: STOP_MARKET / TAKE_PROFIT_MARKET, or a TRAILING_STOP_MARKET (``callback_rate`` set)."""

    symbol: str
    client_algo_id: str
    algo_id: int
    side: OrderSide
    type: AlgoType
    trigger_price: Decimal | None
    """The trigger; a trailing stop's activation price (``None``: it watched from its placement)."""
    quantity: Decimal | None
    close_position: bool
    reduce_only: bool
    working_type: str
    time_ms: int
    status: AlgoStatus = "NEW"
    actual_order_id: int | None = None
    """The MARKET order its trigger placed (``actualOrderId``, ``ai``)."""
    callback_rate: Decimal | None = None
    """A trailing stop's callback in percent."""
    extreme: Decimal | None = None
    """A trailing stop's best price since it became active (the highest for a SELL); ``None`` before."""

    def triggers_at(self, price: Decimal) -> bool:
        """Whether ``price`` fires this order (:func:`triggers`; a trailing stop follows the price, see
        :meth:`_trails_to`)."""
        if self.callback_rate is not None:
            return self._trails_to(price, self.callback_rate)
        assert self.trigger_price is not None
        return triggers(self.type, self.side, self.trigger_price, price)

    def _trails_to(self, price: Decimal, callback_rate: Decimal) -> bool:
        """A trailing stop sees ``price``: once active (at its activation price, or from its placement) it keeps
        the best price since — the highest for a SELL, the lowest for a BUY — and fires when ``price`` has come
        back ``callback_rate`` percent from it."""
        selling = self.side == "SELL"
        if self.extreme is None:
            if self.trigger_price is not None and (price < self.trigger_price if selling else
                                                   price > self.trigger_price):
                return False
            self.extreme = price
        self.extreme = max(self.extreme, price) if selling else min(self.extreme, price)
        back = self.extreme * callback_rate / 100
        return price <= self.extreme - back if selling else price >= self.extreme + back

    def state(self) -> AlgoState:
        """The algo order as ``GET /fapi/v1/algoOrder`` reports it."""
        return AlgoState(self.symbol, self.client_algo_id, self.algo_id, self.status, self.side, self.type,
                         self.trigger_price, self.quantity, self.close_position, self.time_ms, self.actual_order_id,
                         self.callback_rate)

    def move(self, status: AlgoStatus, time_ms: int, reject_reason: str = "",
             executed: Decimal = ZERO) -> AlgoUpdate:
        """Set the status and return its ``ALGO_UPDATE``; ``executed`` is what its triggered order filled (``aq``)."""
        self.status = status
        self.time_ms = time_ms
        trigger = ZERO if self.trigger_price is None else self.trigger_price
        return AlgoUpdate(self.symbol, self.client_algo_id, self.algo_id, status, self.side, self.type,
                          trigger, time_ms, reject_reason, executed, self.actual_order_id)
