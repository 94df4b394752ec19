"""Exchange rules for a backtest: real exchangeInfo filters and leverage brackets, with a stated fallback.

A symbol of the candles that the 2024 exchangeInfo no longer lists (e.g. MATICUSDT, renamed) trades under
BTCUSDT's filters fitted to its candles (``exchange_info.borrowed_filters``: tick and quantity step from the
decimals they show, quantity limits for its price) — the emulator's rule (``smc_quant/exchange/emulator/market.py``)
— and the conservative default bracket of the
service (``shards.trading.DEFAULT_TIER``). Every such substitution is returned as a note for the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smc_quant.datasets import LEVERAGE_TIERS, data_dir, load_exchange_info
from smc_quant.domain.series import KlineSeries
from smc_quant.exchange.brackets import SymbolBrackets, load_brackets
from smc_quant.exchange.exchange_info import BORROWED_MAX_NOTIONAL, SymbolFilters, borrowed_filters, parse_filters

__all__ = ["market_rules"]


def _borrowed(template: Mapping[str, Any], series: KlineSeries) -> SymbolFilters | None:
    return parse_filters(borrowed_filters(template["filters"], series))


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
            tick, step = (f.tick_size, f.market_step_size) if f else ("?", "?")
            notes.append(f"{sym}: not in the 2024 exchangeInfo; BTCUSDT's filters with tick {tick} and quantity step "
                         f"{step} from its candles, up to {BORROWED_MAX_NOTIONAL} USDT per order")
        if f is not None:
            filters[sym] = f
    known = load_brackets(root / LEVERAGE_TIERS)
    brackets = brackets_for(filters, known)
    notes += [f"{s}: no leverage brackets; the service's default tier (20×, 1 % maintenance)"
              for s in filters if s not in known]
    return filters, brackets, notes
