"""A fill's commission in USDT, whatever asset the exchange charged it in. Pure: no I/O.

With BNB Fee Discount on (Binance Futures → Preferences, or ``POST /fapi/v1/feeBurn``), Binance charges the
commission of a USDT-M trade in BNB, 10 % cheaper, for as long as the futures wallet holds enough BNB:
``ORDER_TRADE_UPDATE`` then carries ``"N": "BNB"`` and ``"n"`` in BNB (a few ten-thousandths), and the USDT
wallet does not move. Trades, the daily breaker, the max drawdown and the learner's labels count fees in USDT,
so taking ``n`` as USDT would make every fee nearly zero and every trade look better than it was.

:func:`fee_in_quote` turns the commission into USDT:

- ``reported``: the asset is USDT (or absent, or the commission is zero) → ``n`` as is;
- ``converted``: another asset with a known price of ``<asset>USDT`` → ``n × price`` (the same conversion
  Binance makes the other way when it charges BNB);
- ``estimated``: no price for the asset → ``fee_rate × quantity × price`` of the fill (the taker rate: never
  less than the discounted fee, never zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

__all__ = ["BNB", "QUOTE", "FeeSource", "fee_in_quote"]

QUOTE = "USDT"
BNB = "BNB"
FeeSource = Literal["reported", "converted", "estimated"]


def fee_in_quote(commission: Decimal, asset: str, quantity: Decimal, price: Decimal,
                 prices: Mapping[str, Decimal], fee_rate: Decimal) -> tuple[Decimal, FeeSource]:
    """The fill's commission in USDT and where the figure comes from (see the module docstring).

    ``prices``: latest prices by symbol (``BNBUSDT`` → 612.40); ``fee_rate``: fraction of the notional used
    when the asset cannot be priced.
    """
    if commission == 0 or asset in ("", QUOTE):
        return commission, "reported"
    rate = prices.get(f"{asset}{QUOTE}")
    if rate is not None and rate.is_finite() and rate > 0:
        return commission * rate, "converted"
    return quantity * price * fee_rate, "estimated"
