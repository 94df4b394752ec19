"""Fixtures for the unit tests of the simulated account (``test_sim_account.py`` and
``test_sim_account_triggers_and_properties.py``): the real exchangeInfo filters, the real leverage brackets
and a factory of fresh accounts. No other test in ``tests/`` has a fixture of these names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from smc_quant.datasets import LEVERAGE_TIERS, load_exchange_info
from smc_quant.exchange.brackets import SymbolBrackets, load_brackets
from smc_quant.exchange.exchange_info import SymbolFilters, parse_exchange_info
from smc_quant.sim import SimAccount, SimConfig
from tests.unit.sim_account_kit import T0, D


@pytest.fixture(scope="module")
def filters(shared_data: Path) -> dict[str, SymbolFilters]:
    """Every USDT perpetual of the real exchangeInfo that has complete filters."""
    info = parse_exchange_info(load_exchange_info(shared_data))
    return {s.symbol: s.filters for s in info.symbols
            if s.filters is not None and s.contract_type == "PERPETUAL" and s.quote_asset == "USDT"}


@pytest.fixture(scope="module")
def brackets(shared_data: Path) -> dict[str, SymbolBrackets]:
    """The real leverage brackets (ccxt dump)."""
    return load_brackets(shared_data / LEVERAGE_TIERS)


@pytest.fixture
def make(filters: dict[str, SymbolFilters], brackets: dict[str, SymbolBrackets]) -> Callable[..., SimAccount]:
    """A fresh account with BTCUSDT at 50 000 (and ETHUSDT at 3 000)."""
    def build(config: SimConfig | None = None, **overrides: SymbolFilters) -> SimAccount:
        acc = SimAccount({**filters, **overrides}, brackets, config or SimConfig())
        acc.on_price("BTCUSDT", D("50000"), T0)
        acc.on_price("ETHUSDT", D("3000"), T0)
        return acc
    return build
