"""Scheduled delistings: read from the real exchangeInfo's ``deliveryDate``, refused by the risk manager, and an
open position closed before the delisting."""

from __future__ import annotations

import copy
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from smc_quant.datasets import LEVERAGE_TIERS, load_exchange_info
from smc_quant.domain.trading import AccountSnapshot, ExitReason, Position, Signal
from smc_quant.exchange.brackets import load_brackets
from smc_quant.exchange.exchange_info import parse_exchange_info, parse_symbol
from smc_quant.risk import RiskConfig, RiskManager
from smc_quant.settings import UniverseSettings
from smc_quant.universe import NO_DELIVERY_MS, select_universe

T0 = 1_727_827_200_000  # 2024-10-02 00:00 UTC, the day of the exchangeInfo capture
DELIST_MS = 1_728_003_600_000  # 2024-10-04 01:00 UTC


@pytest.fixture(scope="module")
def payload(shared_data: Path) -> dict[str, Any]:
    return load_exchange_info(shared_data)


def scheduled(payload: dict[str, Any], symbol: str, at_ms: int) -> dict[str, Any]:
    """The real document with one symbol's delisting scheduled, as Binance announces it."""
    out = copy.deepcopy(payload)
    [entry] = [s for s in out["symbols"] if s["symbol"] == symbol]
    entry["deliveryDate"] = at_ms
    return out


def test_the_real_exchange_info_has_no_delisting_among_trading_perpetuals(payload: dict[str, Any]) -> None:
    """Every trading perpetual's deliveryDate is in 2100 (one an hour later, FETUSDT): none counts. The 18
    already delisted (SETTLING, with their real delisting times) are not watched at all."""
    info = parse_exchange_info(payload)
    trading = [s for s in info.symbols if s.contract_type == "PERPETUAL" and s.status == "TRADING"]
    assert len(trading) == 324 and all(s.delivery_date_ms >= NO_DELIVERY_MS for s in trading)
    assert {s.delivery_date_ms for s in trading} == {4_133_404_800_000, 4_133_408_400_000}
    settled = [s for s in info.symbols if s.status == "SETTLING"]
    assert len(settled) == 18 and all(0 < s.delivery_date_ms < NO_DELIVERY_MS for s in settled)
    universe = select_universe(info, UniverseSettings(), "exchange")
    assert universe.delistings == {} and not set(universe.symbols) & {s.symbol for s in settled}


def test_a_scheduled_delisting_is_read_from_delivery_date(payload: dict[str, Any]) -> None:
    info = parse_exchange_info(scheduled(payload, "ETHUSDT", DELIST_MS))
    universe = select_universe(info, UniverseSettings(), "exchange")
    assert dict(universe.delistings) == {"ETHUSDT": DELIST_MS}
    assert "ETHUSDT" in universe.symbols  # still trading until then: watched, exits go on
    # quarterly contracts have real delivery dates: they are not delistings (and not in a perpetual universe)
    quarterly = select_universe(info, UniverseSettings(contract_types=("PERPETUAL", "CURRENT_QUARTER")), "exchange")
    assert dict(quarterly.delistings) == {"ETHUSDT": DELIST_MS}


@pytest.mark.parametrize(("raw", "ms"), [(DELIST_MS, DELIST_MS), (str(DELIST_MS), DELIST_MS), (None, 0), ("soon", 0),
                                         (True, 0), (12.5, 0)])
def test_delivery_date_parsing_never_rejects_the_symbol(raw: object, ms: int) -> None:
    entry = {"symbol": "XUSDT", "status": "TRADING", "quoteAsset": "USDT", "contractType": "PERPETUAL"}
    if raw is not None:
        entry["deliveryDate"] = raw  # type: ignore[assignment]
    assert parse_symbol(entry).delivery_date_ms == ms


def test_the_risk_manager_refuses_entries_on_a_delisting_symbol(shared_data: Path, payload: dict[str, Any]) -> None:
    info = parse_exchange_info(payload)
    brackets = load_brackets(shared_data / LEVERAGE_TIERS)
    filters = {s.symbol: s.filters for s in info.symbols if s.filters is not None and s.symbol in brackets}
    rm = RiskManager(RiskConfig(), filters, brackets)
    account = AccountSnapshot(D(10_000), D(0), D(10_000), {})

    def signal(symbol: str, price: str) -> Signal:
        return Signal(f"{symbol}:LONG:{T0}", symbol, "LONG", T0, D(price), 0.75, 2.0, 3.0, "sweep>bos>fvg@0")

    assert rm.evaluate(signal("ETHUSDT", "2400.00"), account, D("2400.00"), T0).action == "open"
    rm.delistings = {"ETHUSDT": DELIST_MS}
    assert rm.evaluate(signal("ETHUSDT", "2400.00"), account, D("2400.00"), T0).reason == "delisting"
    assert rm.evaluate(signal("BTCUSDT", "60000.0"), account, D("60000.0"), T0).action == "open"
    # refused whenever the delisting is due, even long after the signal (a dying market)
    assert rm.evaluate(signal("ETHUSDT", "2400.00"), account, D("2400.00"), DELIST_MS + 1).reason == "delisting"


def test_an_open_position_is_closed_before_the_delisting(shared_data: Path) -> None:
    """Due ``delisting_exit_ms`` (30 min) before the delisting, not a millisecond earlier, with its own reason, and
    before the 2-hour limit would close it; other symbols are untouched."""
    rm = RiskManager(RiskConfig(), {}, load_brackets(shared_data / LEVERAGE_TIERS))
    eth = Position("ETHUSDT", "LONG", D("1.000"), D("2400.00"), DELIST_MS - 45 * 60_000, 5, "s-eth", 0.7,
                   D("2352.00"), D("2472.00"))
    btc = replace(eth, symbol="BTCUSDT", signal_id="s-btc")
    rm.delistings = {"ETHUSDT": DELIST_MS}
    due_at = DELIST_MS - 30 * 60_000
    assert rm.due_exits([eth, btc], due_at - 1) == []
    assert rm.due_exits([eth, btc], due_at) == [(eth, ExitReason.DELISTING)]
    # a delisting announced after the deadline (or already past) closes the position at once
    assert rm.due_exits([eth], DELIST_MS + 60_000) == [(eth, ExitReason.DELISTING)]
    # with no lead the exit waits for the delisting time itself; the 2-hour limit still applies on its own
    late = RiskManager(RiskConfig(delisting_exit_ms=0), {}, {})
    late.delistings = {"ETHUSDT": DELIST_MS}
    assert late.due_exits([eth], due_at) == []
    assert late.due_exits([eth], DELIST_MS) == [(eth, ExitReason.DELISTING)]
    assert late.due_exits([btc], eth.entry_time_ms + 2 * 3_600_000) == [(btc, ExitReason.TIME)]
    with pytest.raises(ValueError, match="delisting_exit_ms"):
        RiskConfig(delisting_exit_ms=-1)
