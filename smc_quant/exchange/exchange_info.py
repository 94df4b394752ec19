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

from smc_quant.errors import DataRejected

__all__ = ["ExchangeInfo", "SymbolFilters", "SymbolInfo", "parse_exchange_info"]


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
