"""exchangeInfo filters applied to one order, in Decimal only (``BINANCE-PROTOCOL.md`` §3.1, §8).

Quantities are floored to the step (``LOT_SIZE`` for LIMIT, ``MARKET_LOT_SIZE`` for MARKET), so we
never send more than asked. Prices are rounded to the tick toward safety (down for a BUY limit, up
for a SELL limit) or half-up. Then ``minQty ≤ q ≤ maxQty``, ``PRICE_FILTER`` min/max,
``q × price ≥ MIN_NOTIONAL`` (reduce-only orders are exempt) and the ``PERCENT_PRICE`` band around
the mark price are checked. Wire strings come from ``format(d, 'f')`` with the step's decimals.

A failed check raises :class:`FilterRejected`, a ``VenueRejected`` carrying the filter's name and
the Binance code the exchange would have answered, so the caller drops the order exactly as if the
exchange had refused it — without spending a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from smc_quant.errors import VenueRejected
from smc_quant.exchange.exchange_info import SymbolFilters

__all__ = [
    "FilterRejected", "OrderType", "PriceRounding", "Side", "TriggerType", "ValidOrder", "ceil_to_step",
    "check_notional", "decimals_of", "floor_to_step", "round_price", "safe_rounding", "to_wire", "validate_order",
    "validate_trigger",
]

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET"]
TriggerType = Literal["STOP_MARKET", "TAKE_PROFIT_MARKET"]
PriceRounding = Literal["down", "up", "half_up"]


class FilterRejected(VenueRejected):
    """An order that would break an exchangeInfo filter; ``filter`` names it (e.g. ``MIN_NOTIONAL``)."""

    def __init__(self, filter_name: str, detail: str, *, code: int | None) -> None:
        super().__init__(f"{filter_name}: {detail}", status=400, code=code)
        self.filter = filter_name


@dataclass(frozen=True, slots=True)
class ValidOrder:
    """An order that passes every filter, with its wire strings (``price`` is ``None`` for MARKET)."""

    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None
    reduce_only: bool
    wire_quantity: str
    wire_price: str | None


def decimals_of(step: Decimal) -> int:
    """Decimal places a step needs: ``0.0001000`` → 4, ``1E-7`` → 7, ``10`` → 0."""
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int), "a step is a finite number"
    return max(0, -exponent)


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` not above ``value`` (``value ≥ 0``).

    ``//`` is Decimal's exact integer division (no rounding, unlike ``/``), and an integer times the
    step is exact, so float-born inputs with 50 digits still land on the grid and never above.
    """
    return (value // step) * step


def ceil_to_step(value: Decimal, step: Decimal) -> Decimal:
    """The smallest multiple of ``step`` not below ``value`` (``value ≥ 0``)."""
    low = floor_to_step(value, step)
    return low if low == value else low + step


def round_price(price: Decimal, tick: Decimal, mode: PriceRounding) -> Decimal:
    """``price`` on the tick grid: ``down``, ``up`` or ``half_up`` (a half tick goes up, like ccxt ROUND)."""
    low = floor_to_step(price, tick)
    if mode == "down" or low == price:
        return low
    if mode == "up":
        return low + tick
    return low + tick if (price - low) * 2 >= tick else low


def safe_rounding(side: Side) -> PriceRounding:
    """Rounding toward safety for a limit price: never pay more (BUY down), never sell cheaper (SELL up)."""
    return "down" if side == "BUY" else "up"


def to_wire(value: Decimal, step: Decimal) -> str:
    """The wire string of a value already on ``step``'s grid, with exactly the step's decimals."""
    return format(value.quantize(Decimal(1).scaleb(-decimals_of(step))), "f")


def _lot(quantity: Decimal, step: Decimal, low: Decimal, high: Decimal, name: str) -> Decimal:
    """The quantity floored to ``step`` and checked against ``[low, high]`` (max first: no huge division)."""
    if quantity > high:
        raise FilterRejected(name, f"quantity {quantity} above maxQty {high}", code=-4005)
    qty = floor_to_step(quantity, step)
    if qty < low:
        raise FilterRejected(name, f"quantity {quantity} floors to {qty}, below minQty {low}", code=-4004)
    return qty


def _check_price(price: Decimal, f: SymbolFilters, mark: Decimal) -> None:
    if not f.min_price <= price <= f.max_price:
        raise FilterRejected("PRICE_FILTER", f"price {price} outside [{f.min_price}, {f.max_price}]", code=-1013)
    if price > mark * f.percent_up:
        raise FilterRejected("PERCENT_PRICE", f"price {price} above mark {mark} × {f.percent_up}", code=-4016)
    if price < mark * f.percent_down:
        raise FilterRejected("PERCENT_PRICE", f"price {price} below mark {mark} × {f.percent_down}", code=-4024)


def check_notional(qty: Decimal, price: Decimal, min_notional: Decimal, *, reduce_only: bool) -> None:
    """``MIN_NOTIONAL``: ``qty × price ≥ notional`` unless the order is reduce-only."""
    if not reduce_only and qty * price < min_notional:
        raise FilterRejected("MIN_NOTIONAL", f"notional {qty * price} below {min_notional}", code=-4164)


def validate_order(filters: SymbolFilters, *, side: Side, order_type: OrderType, quantity: Decimal,
                   mark_price: Decimal, price: Decimal | None = None, reduce_only: bool = False,
                   rounding: PriceRounding | None = None) -> ValidOrder:
    """The order normalised to the filters, or ``FilterRejected`` naming the first filter it breaks.

    ``mark_price`` is the reference for PERCENT_PRICE (LIMIT) and for the notional of a MARKET order.
    ``rounding`` defaults to :func:`safe_rounding` for the side.
    """
    if not quantity.is_finite() or quantity <= 0:
        raise FilterRejected("QUANTITY", f"quantity {quantity} is not positive", code=-4003)
    if not mark_price.is_finite() or mark_price <= 0:
        raise ValueError(f"mark price {mark_price} is not positive")
    if order_type == "MARKET":
        if price is not None:
            raise ValueError("a MARKET order takes no price")
        step = filters.market_step_size
        qty = _lot(quantity, step, filters.market_min_qty, filters.market_max_qty, "MARKET_LOT_SIZE")
        check_notional(qty, mark_price, filters.min_notional, reduce_only=reduce_only)
        return ValidOrder(side, "MARKET", qty, None, reduce_only, to_wire(qty, step), None)
    if price is None or not price.is_finite() or not 0 < price <= filters.max_price:
        raise FilterRejected("PRICE_FILTER", f"limit price {price} outside (0, {filters.max_price}]", code=-1013)
    step = filters.step_size
    qty = _lot(quantity, step, filters.min_qty, filters.max_qty, "LOT_SIZE")
    px = round_price(price, filters.tick_size, rounding or safe_rounding(side))
    _check_price(px, filters, mark_price)
    check_notional(qty, px, filters.min_notional, reduce_only=reduce_only)
    return ValidOrder(side, "LIMIT", qty, px, reduce_only, to_wire(qty, step), to_wire(px, filters.tick_size))


def validate_trigger(filters: SymbolFilters, *, side: Side, order_type: TriggerType, trigger: Decimal,
                     reference_price: Decimal, rounding: PriceRounding) -> tuple[Decimal, str]:
    """A protective ``triggerPrice`` on the tick grid and its wire string, or ``FilterRejected``.

    ``reference_price`` is the price the trigger watches (last price for CONTRACT_PRICE, mark for
    MARK_PRICE). A SELL stop / BUY take-profit must sit below it, a BUY stop / SELL take-profit above
    it; otherwise Binance answers -2021 "Order would immediately trigger".
    """
    if not trigger.is_finite() or not 0 < trigger <= filters.max_price:
        raise FilterRejected("PRICE_FILTER", f"trigger {trigger} outside (0, {filters.max_price}]", code=-1013)
    px = round_price(trigger, filters.tick_size, rounding)
    if px < filters.min_price:
        raise FilterRejected("PRICE_FILTER", f"trigger {px} below minPrice {filters.min_price}", code=-1013)
    must_be_below = (side == "SELL") == (order_type == "STOP_MARKET")
    if (px >= reference_price) if must_be_below else (px <= reference_price):
        where = "below" if must_be_below else "above"
        raise FilterRejected("TRIGGER", f"{side} {order_type} trigger {px} must be {where} {reference_price}",
                             code=-2021)
    return px, to_wire(px, filters.tick_size)
