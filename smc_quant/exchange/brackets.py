"""Notional and leverage brackets (``GET /fapi/v1/leverageBracket``), as Decimal.

Each symbol has tiers ``[floor, cap)`` of position notional; a tier allows up to ``max_leverage`` and
charges ``maint_margin_ratio`` with the cumulative amount ``cum``, so the maintenance margin of a
position of notional N in its tier is ``N × mmr − cum`` (Binance's formula, ``BINANCE-PROTOCOL.md`` §3.4).

Two inputs are read: the exchange's own wire shape (a list of ``{"symbol", "brackets": [...]}``, or one
object when a symbol was asked) and ccxt's ``fetch_leverage_tiers`` dump kept in the data folder
(``{"BTC/USDT:USDT": [{..., "info": {raw bracket}}]}``; only perpetuals, i.e. keys without an expiry).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from smc_quant.errors import DataRejected

__all__ = ["DEFAULT_TIER", "Bracket", "SymbolBrackets", "brackets_for", "load_brackets", "parse_ccxt_tiers",
           "parse_leverage_brackets"]


@dataclass(frozen=True, slots=True)
class Bracket:
    """One notional tier."""

    floor: Decimal
    cap: Decimal
    max_leverage: int
    maint_margin_ratio: Decimal
    cum: Decimal


@dataclass(frozen=True, slots=True)
class SymbolBrackets:
    """The tiers of one symbol, lowest notional first."""

    symbol: str
    tiers: tuple[Bracket, ...]

    def tier(self, notional: Decimal) -> Bracket:
        """The tier a position of ``notional`` falls in (the last tier beyond the last cap)."""
        for b in self.tiers:
            if notional < b.cap:
                return b
        return self.tiers[-1]

    def max_leverage(self, notional: Decimal) -> int:
        """The highest leverage allowed for a position of ``notional``."""
        return self.tier(notional).max_leverage

    def max_notional(self, leverage: int) -> Decimal:
        """The largest notional allowed at ``leverage`` (Binance answers -2027 beyond it)."""
        allowed = [b.cap for b in self.tiers if b.max_leverage >= leverage]
        return max(allowed) if allowed else Decimal(0)

    def maintenance_margin(self, notional: Decimal) -> Decimal:
        b = self.tier(notional)
        return notional * b.maint_margin_ratio - b.cum


def _bracket(raw: Mapping[str, Any]) -> Bracket:
    try:
        return Bracket(
            floor=Decimal(str(raw["notionalFloor"])),
            cap=Decimal(str(raw["notionalCap"])),
            max_leverage=int(Decimal(str(raw["initialLeverage"]))),
            maint_margin_ratio=Decimal(str(raw["maintMarginRatio"])),
            cum=Decimal(str(raw["cum"])),
        )
    except (KeyError, ArithmeticError, ValueError, TypeError) as exc:
        raise DataRejected("bad_bracket", f"{raw!r}: {exc}") from exc


def _symbol(symbol: str, raw: Sequence[Mapping[str, Any]]) -> SymbolBrackets:
    tiers = tuple(sorted((_bracket(b) for b in raw), key=lambda b: b.floor))
    if not tiers:
        raise DataRejected("bad_bracket", f"{symbol}: no tiers")
    return SymbolBrackets(symbol, tiers)


def parse_leverage_brackets(payload: Any) -> dict[str, SymbolBrackets]:
    """The ``/fapi/v1/leverageBracket`` response (list, or one object) → symbol → brackets."""
    items = payload if isinstance(payload, list) else [payload]
    return {str(i["symbol"]): _symbol(str(i["symbol"]), i["brackets"]) for i in items}


def parse_ccxt_tiers(payload: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, SymbolBrackets]:
    """ccxt's leverage-tier dump → Binance symbol (e.g. ``BTCUSDT``) → brackets; dated futures skipped."""
    out: dict[str, SymbolBrackets] = {}
    for market, tiers in payload.items():
        base_quote, _, settle = market.partition(":")
        if "-" in settle or "/" not in base_quote:
            continue
        symbol = base_quote.replace("/", "")
        out[symbol] = _symbol(symbol, [t["info"] for t in tiers])
    return out


def load_brackets(path: Path) -> dict[str, SymbolBrackets]:
    """Read either shape from a JSON file."""
    with open(path, "rb") as fh:
        payload = json.load(fh)
    if isinstance(payload, dict) and "symbol" not in payload:
        return parse_ccxt_tiers(payload)
    return parse_leverage_brackets(payload)


DEFAULT_TIER = Bracket(Decimal(0), Decimal(10) ** 12, 20, Decimal("0.01"), Decimal(0))
"""Used for a symbol whose brackets are unknown: 20× max, 1 % maintenance (conservative)."""


def brackets_for(symbols: Iterable[str], known: Mapping[str, SymbolBrackets]) -> dict[str, SymbolBrackets]:
    """Known brackets, or the conservative :data:`DEFAULT_TIER` for a symbol without any."""
    return {s: known.get(s) or SymbolBrackets(s, (DEFAULT_TIER,)) for s in symbols}
