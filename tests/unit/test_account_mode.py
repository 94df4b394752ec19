"""The account settings smc-quant trades on: the parsers (real Binance samples where the shared data has them,
the API documentation's examples otherwise) and the refusal rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smc_quant.errors import ConfigError, DataRejected
from smc_quant.exchange.wire_trading import parse_account_config, parse_event, parse_flag
from smc_quant.orders.account_mode import (
    HEDGE,
    MULTI_ASSETS,
    NO_TRADE,
    AccountModeRefused,
    check,
    multi_assets_halt_reason,
    refusals,
)
from smc_quant.orders.broker import AccountConfig, AccountModeChanged

INTEG = "payloads/binance-integration/http_responses"
HTTP = "payloads/binance-futures/http_json"
DOC_CONFIG = {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True, "dualSidePosition": True,
              "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1}
"""``GET /fapi/v1/accountConfig``, the documentation's response example."""


def test_account_config_of_the_documented_example() -> None:
    assert parse_account_config(DOC_CONFIG) == AccountConfig(dual_side_position=True, multi_assets_margin=False,
                                                             can_trade=True, fee_tier=0)
    # the modes alone (an older or trimmed answer): canTrade and feeTier unknown, not assumed
    assert parse_account_config({"dualSidePosition": False, "multiAssetsMargin": "false"}) == AccountConfig(
        dual_side_position=False, multi_assets_margin=False)


def test_the_older_endpoints_flags_from_real_answers(shared_data: Path) -> None:
    """A real ``GET /fapi/v1/positionSide/dual`` answer (an account in Hedge Mode) and the real v2 account
    information's ``multiAssetsMargin``: the one flag each carries."""
    dual = json.loads((shared_data / INTEG / "http_futures_account_position_side_dual.json").read_text())
    assert parse_flag(dual, "dualSidePosition") is True
    account = json.loads((shared_data / HTTP / "account_info_v2.json").read_text())
    assert parse_flag(account, "multiAssetsMargin") is False


@pytest.mark.parametrize("body", [
    {"multiAssetsMargin": False},  # the position mode missing
    {"dualSidePosition": None, "multiAssetsMargin": False},
    {"dualSidePosition": "yes", "multiAssetsMargin": False},
    {"dualSidePosition": 1, "multiAssetsMargin": False},
    {"dualSidePosition": False, "multiAssetsMargin": False, "canTrade": "maybe"},
    {"dualSidePosition": False, "multiAssetsMargin": False, "feeTier": "gold"},
    [DOC_CONFIG],
    "ok",
])
def test_a_malformed_account_config_is_rejected_by_reason(body: object) -> None:
    with pytest.raises(DataRejected) as err:
        parse_account_config(body)
    assert err.value.reason == "account_config_malformed"


def test_a_flag_must_be_there_and_boolean() -> None:
    for body in ({}, {"dualSidePosition": "1"}, ["dualSidePosition"]):
        with pytest.raises(DataRejected) as err:
            parse_flag(body, "dualSidePosition")
        assert err.value.reason == "account_config_malformed"


def test_account_config_update_events() -> None:
    """The documentation's two ``ACCOUNT_CONFIG_UPDATE`` examples: a leverage change (``ac``) is not an event
    for us; a Multi-Assets Mode change (``ai``) is, with its time; ``ai`` without a boolean ``j`` is malformed."""
    leverage = {"e": "ACCOUNT_CONFIG_UPDATE", "E": 1611646737479, "T": 1611646737476, "ac": {"s": "BTCUSDT", "l": 25}}
    assert parse_event(leverage) is None
    assets = {"e": "ACCOUNT_CONFIG_UPDATE", "E": 1611646737479, "T": 1611646737476, "ai": {"j": True}}
    assert parse_event(assets) == AccountModeChanged(multi_assets_margin=True, event_time_ms=1611646737479)
    assert parse_event({**assets, "ai": {"j": False}}) == AccountModeChanged(False, 1611646737479)
    for bad in ({**assets, "ai": {}}, {**assets, "ai": {"j": "on"}}, {**assets, "ai": [True]}):
        with pytest.raises(DataRejected) as err:
            parse_event(bad)
        assert err.value.reason == "event_malformed"


def test_refusals_name_every_problem_and_nothing_else() -> None:
    ok = AccountConfig(dual_side_position=False, multi_assets_margin=False, can_trade=True)
    assert refusals(ok) == []
    assert refusals(AccountConfig(False, False)) == []  # canTrade unknown (older endpoints): not refused
    assert refusals(AccountConfig(True, False)) == [HEDGE]
    assert refusals(AccountConfig(False, True)) == [MULTI_ASSETS]
    assert refusals(AccountConfig(True, True, can_trade=False)) == [NO_TRADE, HEDGE, MULTI_ASSETS]


def test_check_raises_one_line_naming_the_venue_and_the_fix() -> None:
    check(AccountConfig(False, False, can_trade=True), "https://fapi.binance.com")
    with pytest.raises(AccountModeRefused) as err:
        check(AccountConfig(True, True), "https://fapi.binance.com")
    text = str(err.value)
    assert isinstance(err.value, ConfigError)  # exit 2, one line
    assert "\n" not in text
    assert text.startswith("the Binance account at https://fapi.binance.com cannot be traded as it is set: ")
    assert "switch Position Mode to One-way" in text and "switch Asset Mode to Single-Asset" in text
    assert "smc-quant resume" in multi_assets_halt_reason()
