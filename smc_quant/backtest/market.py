"""Exchange rules for a backtest: real exchangeInfo filters and leverage brackets, with a stated fallback.

A symbol of the candles that the 2024 exchangeInfo no longer lists (e.g. MATICUSDT, renamed) trades under
BTCUSDT's filters with the PRICE_FILTER tick replaced by the price precision seen in its candles — the
emulator's rule (``smc_quant/exchange/emulator/market.py``) — and the conservative default bracket of the
service (``shards.trading.DEFAULT_TIER``). Every such substitution is returned as a note for the report.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smc_quant.datasets import LEVERAGE_TIERS, data_dir, load_exchange_info
from smc_quant.domain.series import KlineSeries
from smc_quant.exchange.brackets import SymbolBrackets, load_brackets
from smc_quant.exchange.exchange_info import SymbolFilters, parse_filters

__all__ = ["market_rules"]


def _decimals(x: float) -> int:
    text = repr(float(x))
    return len(text.split(".")[1].rstrip("0")) if "." in text and "e" not in text else 0


def _borrowed(template: Mapping[str, Any], series: KlineSeries) -> SymbolFilters | None:
    entry = copy.deepcopy(dict(template))
    sample = np.concatenate([series.open[:2000], series.close[:2000]])
    prec = max((_decimals(v) for v in sample), default=0)
    for flt in entry["filters"]:
        if flt["filterType"] == "PRICE_FILTER":
            flt["tickSize"] = format(10.0**-prec, f".{prec}f")
            flt["minPrice"] = flt["tickSize"]
    return parse_filters(entry["filters"])


def market_rules(series: Mapping[str, KlineSeries], root: Path | None = None
                 ) -> tuple[dict[str, SymbolFilters], dict[str, SymbolBrackets], list[str]]:
    """(filters, brackets, notes) for every symbol of ``series`` from the real files of the data folder."""
    from smc_quant.exchange.brackets import brackets_for

    root = root or data_dir()
    info = load_exchange_info(root)
    entries = {e["symbol"]: e for e in info["symbols"]}
    notes: list[str] = []
    filters: dict[str, SymbolFilters] = {}
    for sym, s in series.items():
        f = parse_filters(entries[sym]["filters"]) if sym in entries else None
        if f is None:
            f = _borrowed(entries["BTCUSDT"], s)
            tick = f.tick_size if f else "?"
            notes.append(f"{sym}: not in the 2024 exchangeInfo; BTCUSDT's filters with tick {tick}")
        if f is not None:
            filters[sym] = f
    known = load_brackets(root / LEVERAGE_TIERS)
    brackets = brackets_for(filters, known)
    notes += [f"{s}: no leverage brackets; the service's default tier (20×, 1 % maintenance)"
              for s in filters if s not in known]
    return filters, brackets, notes
