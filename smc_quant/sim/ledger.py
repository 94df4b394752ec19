"""Position arithmetic of a one-way (``positionSide=BOTH``) USDT-M account, in Decimal.

A position is a signed amount ``a`` (> 0 long, < 0 short) and an entry price ``e``. A fill of signed
quantity ``d`` at price ``p``:

- increases (``a = 0`` or same sign): ``a' = a + d``, ``e' = (|a|·e + |d|·p) / |a'|`` (weighted average);
- reduces / closes: realised PnL ``rp = (p − e) × c × sign(a)`` with ``c = min(|d|, |a|)``; ``e`` unchanged;
- flips (``|d| > |a|``): closes ``|a|`` as above and opens the rest at ``e' = p``.

Liquidation price of one position in cross margin, one-way mode (Binance's formula). The account is
liquidated when the margin balance falls to the total maintenance margin:

    WB + UPNL_o + s·q·(P − e) = TMM_o + q·P·mmr − cum

with ``WB`` the wallet, ``UPNL_o`` / ``TMM_o`` the unrealised PnL and maintenance margin of the *other*
positions, ``s`` = +1 long / −1 short, ``q`` = |amount|, ``(mmr, cum)`` the bracket of the notional
``q·P``. Solving for ``P``:

    LP = (WB − TMM_o + UPNL_o + cum − s·q·e) / (q·mmr − s·q)

The bracket depends on ``P`` itself, so the tier is chosen by fixed point: start from the tier of the
current notional, recompute with the tier of ``q·LP`` until it stops changing (≤ one pass per tier).
A negative result means the position cannot be liquidated by price alone: reported as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from smc_quant.domain.trading import ZERO
from smc_quant.exchange.brackets import SymbolBrackets

__all__ = ["USDT_PLACES", "FillEffect", "apply_fill", "liquidation_price", "opening_qty", "to_usdt"]

USDT_PLACES = Decimal("1E-8")
"""Fees and realised PnL are booked in USDT to 8 decimals (half-up), so the wallet is an exact sum of them."""


@dataclass(frozen=True, slots=True)
class FillEffect:
    """A position after one fill, and the PnL the fill realised."""

    amount: Decimal
    entry_price: Decimal
    realized_pnl: Decimal


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


def to_usdt(amount: Decimal) -> Decimal:
    """``amount`` rounded half-up to :data:`USDT_PLACES`."""
    return amount.quantize(USDT_PLACES, rounding=ROUND_HALF_UP)


def opening_qty(amount: Decimal, signed_qty: Decimal) -> Decimal:
    """The part of a fill of ``signed_qty`` that opens or increases exposure (the rest only reduces ``amount``)."""
    if amount == 0 or (amount > 0) == (signed_qty > 0):
        return abs(signed_qty)
    return max(ZERO, abs(signed_qty) - abs(amount))


def apply_fill(amount: Decimal, entry: Decimal, signed_qty: Decimal, price: Decimal) -> FillEffect:
    """The position ``(amount, entry)`` after a fill of ``signed_qty`` (BUY > 0) at ``price``."""
    new_amount = amount + signed_qty
    if amount == 0 or _sign(amount) == _sign(signed_qty):
        new_entry = (abs(amount) * entry + abs(signed_qty) * price) / abs(new_amount)
        return FillEffect(new_amount, new_entry, ZERO)
    closed = min(abs(signed_qty), abs(amount))
    realized = (price - entry) * closed * _sign(amount)
    if new_amount == 0:
        return FillEffect(ZERO, ZERO, realized)
    if _sign(new_amount) != _sign(amount):
        return FillEffect(new_amount, price, realized)
    return FillEffect(new_amount, entry, realized)


def liquidation_price(amount: Decimal, entry: Decimal, brackets: SymbolBrackets, *, wallet: Decimal,
                      other_maintenance: Decimal, other_unrealized: Decimal, mark: Decimal) -> Decimal:
    """Binance's cross, one-way liquidation price of one position (see the module docstring); 0 if none."""
    if amount == 0:
        return ZERO
    s = _sign(amount)
    q = abs(amount)
    tier = brackets.tier(q * mark)
    lp = ZERO
    for _ in range(len(brackets.tiers) + 1):
        lp = (wallet - other_maintenance + other_unrealized + tier.cum - s * q * entry) / (
            q * tier.maint_margin_ratio - s * q)
        if lp <= 0:
            return ZERO
        next_tier = brackets.tier(q * lp)
        if next_tier == tier:
            break
        tier = next_tier
    return lp
