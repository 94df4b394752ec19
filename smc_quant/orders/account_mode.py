"""The account settings smc-quant can trade on, checked before a live start and watched while it runs. Pure.

Three account-wide settings of a Binance USDT-M account decide whether our orders and our arithmetic hold:

- **Position Mode.** We trade One-way Mode: one position per symbol, orders without ``positionSide`` (it is
  ``BOTH``), exits ``reduceOnly``. In Hedge Mode every one of our orders is rejected (-4061, and -1106 for
  ``reduceOnly``): the service would run and never trade, or, worse, open an entry it then cannot protect.
- **Asset Mode.** Sizing, the liquidation guard, the daily breaker and the max-drawdown halt read the USDT
  wallet. In Multi-Assets Mode the margin (and the liquidation price) spans every asset of the account, so
  those figures are not the exchange's any more.
- **canTrade.** An account (or key) that may not trade rejects every order.

A live start checks all three first (:func:`check`) and refuses, in one line that says what to change,
before it binds the database or reads a position. Multi-Assets Mode switched on while the service runs
(``ACCOUNT_CONFIG_UPDATE``) halts new entries (:func:`multi_assets_halt_reason`); exits and protection go on.
Position Mode can only be changed with no position and no open order, and Binance pushes no event for it: an
entry after such a change is rejected with -4061 (an alarm).
"""

from __future__ import annotations

from smc_quant.errors import ConfigError
from smc_quant.orders.broker import AccountConfig

__all__ = ["AccountModeRefused", "check", "multi_assets_halt_reason", "refusals"]

HEDGE = ("Hedge Mode is on: smc-quant holds one position per symbol and sends no positionSide, so Binance would "
         "reject every order (-4061); switch Position Mode to One-way (Futures → Preferences; it needs no open "
         "position or order)")
MULTI_ASSETS = ("Multi-Assets Mode is on: smc-quant sizes and guards margin in USDT alone, so its liquidation "
                "and drawdown figures would not be the exchange's; switch Asset Mode to Single-Asset "
                "(Futures → Preferences)")
NO_TRADE = "the account may not trade (canTrade false): enable futures trading for it and for the API key"


class AccountModeRefused(ConfigError):
    """The exchange account is set up in a way smc-quant cannot trade (the message says what to change)."""


def refusals(config: AccountConfig) -> list[str]:
    """What is wrong with ``config`` for us, one sentence each; empty when it can be traded."""
    out = []
    if config.can_trade is False:
        out.append(NO_TRADE)
    if config.dual_side_position:
        out.append(HEDGE)
    if config.multi_assets_margin:
        out.append(MULTI_ASSETS)
    return out


def check(config: AccountConfig, venue: str) -> None:
    """Raise :class:`AccountModeRefused` naming every problem of ``config`` (one line), else nothing."""
    problems = refusals(config)
    if problems:
        raise AccountModeRefused(f"the Binance account at {venue} cannot be traded as it is set: "
                                 + "; ".join(problems))


def multi_assets_halt_reason() -> str:
    """The halt recorded when Multi-Assets Mode is switched on while the service runs."""
    return ("Multi-Assets Mode was switched on at the exchange: margin is no longer USDT alone. New entries are "
            "halted (open positions keep their stop and target); switch Asset Mode back to Single-Asset, then "
            "smc-quant resume")
