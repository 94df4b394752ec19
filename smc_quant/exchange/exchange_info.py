"""``GET /fapi/v1/exchangeInfo``: the wire payload in, our frozen symbol descriptions out.

Wire names → ours: ``PRICE_FILTER.tickSize/minPrice/maxPrice`` → ``tick_size/min_price/max_price``;
``LOT_SIZE.stepSize/minQty/maxQty`` → ``step_size/min_qty/max_qty``; ``MARKET_LOT_SIZE`` →
``market_step_size/market_min_qty/market_max_qty``; ``MIN_NOTIONAL.notional`` → ``min_notional``;
``PERCENT_PRICE.multiplierUp/multiplierDown`` → ``percent_up/percent_down``. Money stays Decimal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from smc_quant.domain.series import KlineSeries
from smc_quant.errors import DataRejected

__all__ = ["BORROWED_MAX_NOTIONAL", "ExchangeInfo", "SymbolFilters", "SymbolInfo", "borrowed_filters",
           "candle_decimals", "parse_exchange_info"]


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """The trading filters of one symbol, as Decimal."""

    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    percent_up: Decimal
    percent_down: Decimal


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One instrument of exchangeInfo; ``filters`` is ``None`` when a filter is missing or malformed."""

    symbol: str
    contract_type: str
    status: str
    base_asset: str
    quote_asset: str
    filters: SymbolFilters | None
    delivery_date_ms: int = 0
    """``deliveryDate``: a perpetual's is far in the future (2100) until a delisting is scheduled, then it is the
    delisting time (0 when absent or malformed)."""


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """The parts of exchangeInfo we use: every symbol and the REQUEST_WEIGHT limit per minute."""

    symbols: tuple[SymbolInfo, ...]
    weight_limit: int | None


_FILTER_FIELDS: tuple[tuple[str, str], ...] = (
    ("PRICE_FILTER", "tickSize"), ("PRICE_FILTER", "minPrice"), ("PRICE_FILTER", "maxPrice"),
    ("LOT_SIZE", "stepSize"), ("LOT_SIZE", "minQty"), ("LOT_SIZE", "maxQty"),
    ("MARKET_LOT_SIZE", "stepSize"), ("MARKET_LOT_SIZE", "minQty"), ("MARKET_LOT_SIZE", "maxQty"),
    ("MIN_NOTIONAL", "notional"), ("PERCENT_PRICE", "multiplierUp"), ("PERCENT_PRICE", "multiplierDown"),
)


BORROWED_MAX_NOTIONAL = Decimal(1_000_000)
"""A symbol without its own filters may trade up to this notional (USDT) per MARKET order (LOT_SIZE: 10×)."""


def _decimals(x: float) -> int:
    text = repr(float(x))
    return len(text.split(".")[1].rstrip("0")) if "." in text and "e" not in text else 0


def candle_decimals(series: KlineSeries) -> tuple[int, int]:
    """(price, quantity) decimals a symbol's candles show: of their first 2,000 opens and closes, and volumes."""
    prices = np.concatenate([series.open[:2000], series.close[:2000]])
    return (max((_decimals(v) for v in prices), default=0),
            max((_decimals(v) for v in series.volume[:2000]), default=0))


def borrowed_filters(template: Sequence[Mapping[str, Any]], series: KlineSeries) -> list[dict[str, Any]]:
    """Another symbol's exchangeInfo filters (BTCUSDT's) made to fit a symbol the file does not list, from its
    candles (the backtest's and the emulator's one rule): the tick and the quantity step from the decimals they
    show (:func:`candle_decimals`, ``10^-decimals``; min price one tick, min quantity one step), the quantity
    limits from ``BORROWED_MAX_NOTIONAL`` at its median close. The rest (MIN_NOTIONAL, PERCENT_PRICE) stays the
    template's. Kept BTC's quantities (max 120 at a price of 0.70 is $84, under the $100 minimum notional),
    MATICUSDT could never trade in a backtest."""
    price_decimals, qty_decimals = candle_decimals(series)
    price = float(np.median(series.close)) if len(series) else 1.0
    tick = format(Decimal(1).scaleb(-price_decimals), "f")
    step = Decimal(1).scaleb(-qty_decimals)
    market_max = max(step, (BORROWED_MAX_NOTIONAL / Decimal(repr(price)) // step) * step)
    out = [dict(f) for f in template]
    for f in out:
        kind = f.get("filterType")
        if kind == "PRICE_FILTER":
            f["tickSize"] = f["minPrice"] = tick
        elif kind in ("LOT_SIZE", "MARKET_LOT_SIZE"):
            f["stepSize"] = f["minQty"] = format(step, "f")
            f["maxQty"] = format(market_max * (10 if kind == "LOT_SIZE" else 1), "f")
    return out


def parse_filters(raw: Sequence[Mapping[str, Any]]) -> SymbolFilters | None:
    """The filters of one symbol; ``None`` if any of them is missing or not a number."""
    by_type = {f.get("filterType"): f for f in raw if isinstance(f, Mapping)}
    try:
        values = [Decimal(str(by_type[kind][key])) for kind, key in _FILTER_FIELDS]
    except (KeyError, InvalidOperation):
        return None
    return SymbolFilters(*values)


def parse_symbol(raw: Mapping[str, Any]) -> SymbolInfo:
    """One entry of ``symbols``; ``DataRejected`` when its identity fields are missing."""
    try:
        return SymbolInfo(
            symbol=str(raw["symbol"]),
            contract_type=str(raw.get("contractType", "")),
            status=str(raw["status"]),
            base_asset=str(raw.get("baseAsset", "")),
            quote_asset=str(raw["quoteAsset"]),
            filters=parse_filters(raw.get("filters") or ()),
            delivery_date_ms=_int_or_zero(raw.get("deliveryDate")),
        )
    except (KeyError, TypeError) as exc:
        raise DataRejected("exchange_info_malformed", f"symbol entry without {exc}") from None


def _int_or_zero(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def weight_limit(rate_limits: Sequence[Mapping[str, Any]]) -> int | None:
    """The REQUEST_WEIGHT limit per one minute, if listed."""
    for item in rate_limits:
        if (item.get("rateLimitType"), item.get("interval"), item.get("intervalNum")) == (
                "REQUEST_WEIGHT", "MINUTE", 1):
            return int(item["limit"])
    return None


def parse_exchange_info(payload: Mapping[str, Any]) -> ExchangeInfo:
    """The whole payload; ``DataRejected("exchange_info_malformed")`` if it is not exchangeInfo."""
    symbols = payload.get("symbols") if isinstance(payload, Mapping) else None
    if not isinstance(symbols, list):
        raise DataRejected("exchange_info_malformed", "no symbols list")
    rate_limits = payload.get("rateLimits")
    limit = weight_limit(rate_limits) if isinstance(rate_limits, list) else None
    return ExchangeInfo(tuple(parse_symbol(s) for s in symbols), limit)
