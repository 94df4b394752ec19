"""Commissions in another asset than USDT (BNB Fee Discount): read from the real ``ORDER_TRADE_UPDATE`` sample,
counted in USDT by :func:`smc_quant.orders.fees.fee_in_quote`, and charged in BNB by the simulated account the
emulator serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from smc_quant.errors import DataRejected
from smc_quant.exchange.wire_trading import parse_commission_rate, parse_event
from smc_quant.orders.broker import OrderUpdate
from smc_quant.orders.fees import fee_in_quote
from smc_quant.sim import SimAccount
from tests.unit.sim_account_kit import T0, D, market

TAKER = D("0.0005")
SAMPLE = "payloads/binance-futures/user_data_json/order_update_trade.json"


def _sample(shared_data: Path) -> dict[str, Any]:
    payload: dict[str, Any] = orjson.loads((shared_data / SAMPLE).read_bytes())
    return payload


def test_the_commission_asset_is_read_from_the_real_sample_and_a_bnb_variant(shared_data: Path) -> None:
    usdt = parse_event(_sample(shared_data))
    assert isinstance(usdt, OrderUpdate) and (usdt.commission, usdt.commission_asset) == (D("0.01"), "USDT")
    bnb = _sample(shared_data)
    bnb["o"].update({"N": "BNB", "n": "0.00001488"})
    parsed = parse_event(bnb)
    assert isinstance(parsed, OrderUpdate) and (parsed.commission, parsed.commission_asset) == (D("0.00001488"), "BNB")
    del bnb["o"]["N"], bnb["o"]["n"]  # "may be absent": no commission, in USDT
    absent = parse_event(bnb)
    assert isinstance(absent, OrderUpdate) and (absent.commission, absent.commission_asset) == (D(0), "USDT")


@pytest.mark.parametrize(("commission", "asset", "prices", "expected"), [
    ("0.0355", "USDT", {}, ("0.0355", "reported")),
    ("0.0355", "", {"BNBUSDT": "600"}, ("0.0355", "reported")),
    ("0", "BNB", {}, ("0", "reported")),
    ("0.00005325", "BNB", {"BNBUSDT": "600.00"}, ("0.031950000", "converted")),
    ("0.00005325", "BNB", {}, ("0.03550000", "estimated")),  # the taker rate of 0.001 × 71 000
    ("0.00005325", "BNB", {"BNBUSDT": "0"}, ("0.03550000", "estimated")),
    ("0.00005325", "BNB", {"BNBUSDT": "NaN"}, ("0.03550000", "estimated")),
])
def test_fee_in_quote(commission: str, asset: str, prices: dict[str, str], expected: tuple[str, str]) -> None:
    fee, source = fee_in_quote(D(commission), asset, D("0.001"), D("71000.00"),
                               {k: D(v) for k, v in prices.items()}, TAKER)
    assert (fee, source) == (D(expected[0]), expected[1])


def test_the_simulated_account_charges_bnb_while_fee_burn_is_on_and_the_balance_covers_it(
        make: Callable[..., SimAccount]) -> None:
    """Taker fee 0.05 % of 0.01 × 50 005.0 = 0.250025 USDT; in BNB at 600: × 0.9 / 600 = 0.00037504 (8 places,
    rounded up), and the USDT wallet pays no fee. Off, unpriced or not covered: charged in USDT as before."""
    acc = make()
    acc.fee_burn, acc.bnb_balance = True, D("0.0005")
    trade = market(acc, "BUY", "0.01", cid="no-price")[1]  # BNBUSDT has no price yet
    assert isinstance(trade, OrderUpdate) and (trade.commission, trade.commission_asset) == (D("0.250025"), "USDT")
    acc.on_price("BNBUSDT", D("600"), T0)
    wallet = acc.balance().wallet
    trade = market(acc, "BUY", "0.01", cid="in-bnb")[1]
    assert isinstance(trade, OrderUpdate) and (trade.commission, trade.commission_asset) == (D("0.00037504"), "BNB")
    assert acc.bnb_balance == D("0.00012496") and acc.balance().wallet == wallet
    assert acc.fills[-1].fee == D("0.00037504") * 600  # the record's fee is the USDT value paid
    trade = market(acc, "BUY", "0.01", cid="not-covered")[1]
    assert isinstance(trade, OrderUpdate) and trade.commission_asset == "USDT" and acc.bnb_balance == D("0.00012496")
    acc.fee_burn = False
    trade = market(acc, "SELL", "0.03", cid="off", reduce_only=True)[1]
    assert isinstance(trade, OrderUpdate) and trade.commission_asset == "USDT"


def test_the_commission_rate_answer_is_read_and_a_malformed_one_refused() -> None:
    """Binance's documented example; missing, non-decimal or impossible rates are ``account_config_malformed``."""
    body = {"symbol": "BTCUSDT", "makerCommissionRate": "0.0002", "takerCommissionRate": "0.0004"}
    assert parse_commission_rate(body) == (D("0.0002"), D("0.0004"))
    for bad in ({"symbol": "BTCUSDT", "makerCommissionRate": "0.0002"}, {**body, "takerCommissionRate": "n/a"},
                {**body, "takerCommissionRate": "1.5"}, {**body, "makerCommissionRate": "-0.0001"}, [], "503"):
        with pytest.raises(DataRejected) as err:
            parse_commission_rate(bad)
        assert err.value.reason == "account_config_malformed"
