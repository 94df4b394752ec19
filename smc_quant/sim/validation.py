"""Raw input checks of the simulated exchange: the request as sent, against the symbol's filters.

The simulator is the exchange: it must catch what our client gets wrong, so it checks the raw values
itself rather than trusting :func:`smc_quant.orders.filters.validate_order` (which *normalises*).
Checks run in a fixed order and raise :class:`SimRejected` with the code Binance answers:

- quantity: not finite or ≤ 0 → -4003; more decimals than the step → -1111; above maxQty → -4005;
  not a multiple of the step → -4023; below minQty → -4004 (``LOT_SIZE`` for LIMIT, ``MARKET_LOT_SIZE``
  for MARKET and conditional orders);
- price: not finite → -1102, ≤ 0 → -4001; more decimals than the tick → -1111; below minPrice → -4013; above
  maxPrice → -4002; not a multiple of the tick → -4014; ``PERCENT_PRICE`` band around the mark: above
  ``mark × multiplierUp`` → -4016, below ``mark × multiplierDown`` → -4024 (the LIMIT codes; -4131 is
  only for a MARKET order whose fill price would leave the band);
- trigger price: as price, but -4006 when ≤ 0 or below minPrice, -4007 above maxPrice;
- notional ``q × price < MIN_NOTIONAL`` and not reduce-only → -4164.
"""

from __future__ import annotations

from decimal import Decimal

from smc_quant.domain.trading import OrderSide
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.orders.client_ids import CLIENT_ID_RE
from smc_quant.orders.filters import decimals_of
from smc_quant.sim.rejections import SimRejected

__all__ = [
    "check_client_id", "check_notional", "check_price", "check_quantity", "check_side", "check_trailing",
    "check_trigger", "decimals",
]


def decimals(value: Decimal) -> int:
    """Decimal places ``value`` really carries (``1.2300`` → 2, ``100`` → 0)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def check_quantity(quantity: Decimal | None, step: Decimal, low: Decimal, high: Decimal) -> Decimal:
    """The quantity, or ``SimRejected`` (max is checked before the step: no huge remainder division)."""
    if quantity is None:
        raise SimRejected(-1102, "quantity is mandatory")
    if not quantity.is_finite() or quantity <= 0:
        raise SimRejected(-4003, f"quantity {quantity}")
    if decimals(quantity) > decimals_of(step):
        raise SimRejected(-1111, f"quantity {quantity} has more decimals than step {step}")
    if quantity > high:
        raise SimRejected(-4005, f"quantity {quantity} above maxQty {high}")
    if quantity % step != 0:
        raise SimRejected(-4023, f"quantity {quantity} is not a multiple of step {step}")
    if quantity < low:
        raise SimRejected(-4004, f"quantity {quantity} below minQty {low}")
    return quantity


def _check_grid(price: Decimal, f: SymbolFilters, name: str, low_code: int, high_code: int, zero_code: int) -> None:
    if not price.is_finite():
        raise SimRejected(-1102, f"{name} {price} is not a number")
    if price <= 0:
        raise SimRejected(zero_code, f"{name} {price} is not positive")
    if decimals(price) > decimals_of(f.tick_size):
        raise SimRejected(-1111, f"{name} {price} has more decimals than tick {f.tick_size}")
    if price < f.min_price:
        raise SimRejected(low_code, f"{name} {price} below minPrice {f.min_price}")
    if price > f.max_price:
        raise SimRejected(high_code, f"{name} {price} above maxPrice {f.max_price}")
    if price % f.tick_size != 0:
        raise SimRejected(-4014, f"{name} {price} is not a multiple of tick {f.tick_size}")


def check_price(price: Decimal | None, f: SymbolFilters, mark: Decimal) -> Decimal:
    """A LIMIT price on the grid, inside PRICE_FILTER and the PERCENT_PRICE band around ``mark``."""
    if price is None:
        raise SimRejected(-1102, "price is mandatory for LIMIT")
    _check_grid(price, f, "price", -4013, -4002, -4001)
    if price > mark * f.percent_up:
        raise SimRejected(-4016, f"price {price} above mark {mark} × {f.percent_up}")
    if price < mark * f.percent_down:
        raise SimRejected(-4024, f"price {price} below mark {mark} × {f.percent_down}")
    return price


def check_trigger(trigger: Decimal | None, f: SymbolFilters) -> Decimal:
    """A trigger price on the grid and inside PRICE_FILTER (-4006 / -4007 outside)."""
    if trigger is None:
        raise SimRejected(-1102, "triggerPrice is mandatory")
    _check_grid(trigger, f, "triggerPrice", -4006, -4007, -4006)
    return trigger


def check_trailing(callback_rate: Decimal | None, activation: Decimal | None, f: SymbolFilters,
                   close_position: bool) -> Decimal | None:
    """A TRAILING_STOP_MARKET's ``callbackRate`` (0.1–10 percent, -1130 outside) and optional activation price
    (on the grid as a trigger); it never takes ``closePosition`` (-1106)."""
    if callback_rate is None or not Decimal("0.1") <= callback_rate <= 10:
        raise SimRejected(-1130, f"callbackRate {callback_rate} (0.1 to 10)")
    if close_position:
        raise SimRejected(-1106, "closePosition sent with TRAILING_STOP_MARKET")
    return None if activation is None else check_trigger(activation, f)


def check_notional(quantity: Decimal, price: Decimal, f: SymbolFilters, *, reduce_only: bool) -> None:
    """``MIN_NOTIONAL``: ``q × price ≥ notional`` unless reduce-only (-4164)."""
    if not reduce_only and quantity * price < f.min_notional:
        raise SimRejected(-4164, f"notional {quantity * price} below {f.min_notional}")


def check_client_id(client_id: str) -> str:
    """Binance's client id rule ``^[.A-Z:/a-z0-9_-]{1,36}$`` (-4015 "Client order id is not valid.")."""
    if not CLIENT_ID_RE.fullmatch(client_id):
        raise SimRejected(-4015, f"client id {client_id!r} breaks {CLIENT_ID_RE.pattern}")
    return client_id


def check_side(side: str) -> OrderSide:
    """BUY or SELL (-1117 otherwise)."""
    if side == "BUY":
        return "BUY"
    if side == "SELL":
        return "SELL"
    raise SimRejected(-1117, f"side {side!r}")
