"""exchangeInfo parsing and universe selection on the real 2024-10-02 exchangeInfo payload."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from smc_quant.datasets import load_exchange_info
from smc_quant.errors import DataRejected
from smc_quant.exchange.exchange_info import SymbolFilters, parse_exchange_info
from smc_quant.settings import UniverseSettings
from smc_quant.universe import FALLBACK_SYMBOLS, fallback_universe, select_universe


@pytest.fixture(scope="module")
def payload(shared_data: Path) -> dict[str, Any]:
    """The real exchangeInfo response."""
    return load_exchange_info(shared_data)


def test_real_payload_gives_297_trading_usdt_perpetuals(payload: dict[str, Any]) -> None:
    """Of 347 real symbols, 297 are USDT-quoted PERPETUAL contracts in TRADING status."""
    info = parse_exchange_info(payload)
    universe = select_universe(info, UniverseSettings(), "exchange")
    assert len(info.symbols) == 347
    assert len(universe.symbols) == 297
    assert list(universe.symbols) == sorted(universe.symbols)
    assert universe.weight_limit == 2400
    assert "BTCUSDT" in universe.symbols
    assert not any(s.endswith("USDC") for s in universe.symbols)


def test_btcusdt_filters_are_exact_decimals(payload: dict[str, Any]) -> None:
    """BTCUSDT's filters come through as the exact Decimal strings of the payload."""
    universe = select_universe(parse_exchange_info(payload), UniverseSettings(), "exchange")
    assert universe.filters["BTCUSDT"] == SymbolFilters(
        tick_size=Decimal("0.10"), min_price=Decimal("556.80"), max_price=Decimal("4529764"),
        step_size=Decimal("0.001"), min_qty=Decimal("0.001"), max_qty=Decimal("1000"),
        market_step_size=Decimal("0.001"), market_min_qty=Decimal("0.001"), market_max_qty=Decimal("120"),
        min_notional=Decimal("100"), percent_up=Decimal("1.0500"), percent_down=Decimal("0.9500"))
    assert all(f is not None for f in universe.filters.values())


def test_symbols_left_out_keep_their_rules_aside(payload: dict[str, Any]) -> None:
    """A universe narrowed to BTCUSDT keeps every other listed symbol's rules in ``other_filters`` (an open position
    on ETHUSDT still closes with them); a watched symbol is never among them."""
    info = parse_exchange_info(payload)
    narrowed = select_universe(info, UniverseSettings(symbols=("BTCUSDT",)), "exchange")
    full = select_universe(info, UniverseSettings(), "exchange")
    assert narrowed.symbols == ("BTCUSDT",) and "BTCUSDT" not in narrowed.other_filters
    assert narrowed.other_filters["ETHUSDT"] == full.filters["ETHUSDT"]
    assert set(full.filters) | set(full.other_filters) == {s.symbol for s in info.symbols if s.filters is not None}


def test_settled_quarterly_and_usdc_contracts_are_excluded(payload: dict[str, Any]) -> None:
    """SETTLING, quarterly and other-quote contracts never enter the default universe."""
    info = parse_exchange_info(payload)
    universe = select_universe(info, UniverseSettings(), "exchange")
    excluded = {s.symbol for s in info.symbols
                if s.status != "TRADING" or s.contract_type != "PERPETUAL" or s.quote_asset != "USDT"}
    assert len(excluded) == 50
    assert excluded.isdisjoint(universe.symbols)


def test_explicit_symbols_restrict_and_max_symbols_keeps_majors(payload: dict[str, Any]) -> None:
    """settings.symbols restricts to listed tradable symbols; max_symbols keeps the majors first."""
    info = parse_exchange_info(payload)
    chosen = select_universe(info, UniverseSettings(symbols=("ETHUSDT", "BTCUSDT", "NOPEUSDT")), "exchange")
    capped = select_universe(info, UniverseSettings(max_symbols=3), "exchange")
    assert chosen.symbols == ("BTCUSDT", "ETHUSDT")
    assert capped.symbols == ("BNBUSDT", "BTCUSDT", "ETHUSDT")


def test_fallback_list_is_twenty_real_trading_perpetuals(payload: dict[str, Any]) -> None:
    """Every fallback symbol is a real TRADING USDT perpetual; the fallback has unknown filters."""
    universe = select_universe(parse_exchange_info(payload), UniverseSettings(), "exchange")
    fallback = fallback_universe(UniverseSettings())
    assert len(FALLBACK_SYMBOLS) == 20
    assert set(FALLBACK_SYMBOLS) <= set(universe.symbols)
    assert fallback.source == "fallback"
    assert fallback.symbols == tuple(sorted(FALLBACK_SYMBOLS))
    assert set(fallback.filters.values()) == {None}


def test_missing_filter_leaves_filters_unknown(payload: dict[str, Any]) -> None:
    """A symbol whose MIN_NOTIONAL filter is absent is kept with filters None."""
    btc = next(s for s in payload["symbols"] if s["symbol"] == "BTCUSDT")
    stripped = {**btc, "filters": [f for f in btc["filters"] if f["filterType"] != "MIN_NOTIONAL"]}
    info = parse_exchange_info({"symbols": [stripped], "rateLimits": []})
    assert info.symbols[0].filters is None
    assert info.weight_limit is None


@pytest.mark.parametrize("bad", [{}, {"symbols": "x"}, {"symbols": [{"status": "TRADING"}]}, []])
def test_malformed_payloads_are_rejected(bad: Any) -> None:
    """A payload that is not exchangeInfo raises DataRejected("exchange_info_malformed")."""
    with pytest.raises(DataRejected, match="exchange_info_malformed"):
        parse_exchange_info(bad)
