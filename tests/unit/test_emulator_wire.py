"""The emulator's Binance serializers: shapes against the real samples, round trips through the live parsers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from smc_quant.domain.trading import Fill
from smc_quant.exchange.brackets import load_brackets
from smc_quant.exchange.emulator.wire import (
    account_json,
    algo_json,
    balance_json,
    brackets_json,
    dec,
    event_json,
    event_name,
    income_json,
    order_json,
    position_json,
    trade_json,
)
from smc_quant.exchange.wire_trading import (
    parse_algo,
    parse_balance,
    parse_event,
    parse_income,
    parse_order,
    parse_position,
)
from smc_quant.orders.broker import (
    AccountEvent,
    AccountUpdate,
    AlgoState,
    AlgoUpdate,
    Balance,
    ExchangePosition,
    IncomeRow,
    OrderState,
    OrderUpdate,
    StreamExpired,
)

D = Decimal
ORDER = OrderState("BTCUSDT", "sig-1-entry-0", 4242, "FILLED", "BUY", "MARKET", D("0.010"), D("0.010"),
                   D("29301.40"), reduce_only=False, update_time_ms=1_688_342_460_123)
ALGO = AlgoState("BTCUSDT", "sig-1-stop-0", 77, "NEW", "SELL", "STOP_MARKET", D("29000.0"), D("0.010"),
                 update_time_ms=1_688_342_460_200)
POSITION = ExchangePosition("ETHUSDT", "SHORT", D("0.5"), D("1950.25"), mark_price=D("1949.00"),
                            unrealized_pnl=D("0.625"), liquidation_price=D("21000.5"), leverage=20,
                            update_time_ms=1_688_342_460_300)
BALANCE = Balance(wallet=D("9985.31"), unrealized_pnl=D("-1.25"), available=D("9500.06"))


def _sample(shared_data: Path, folder: str, name: str) -> Any:
    return json.loads((shared_data / "payloads/binance-futures" / folder / name).read_text())


def test_dec_writes_plain_decimal_strings() -> None:
    """No exponent ever reaches the wire, zero is "0", trailing zeros (the tick's precision) are kept."""
    assert dec(D("1E+1")) == "10"
    assert dec(D("1E-7")) == "0.0000001"
    assert dec(D("0E-8")) == "0"
    assert dec(D("29301.40")) == "29301.40"
    assert dec(None) == "0"


def test_order_json_has_the_real_response_shape(shared_data: Path) -> None:
    """Every key of the real order response is present with the same JSON type; money is a string."""
    sample = _sample(shared_data, "http_json", "order_response.json")
    ours = order_json(ORDER, price=D("0"))
    assert set(sample) <= set(ours)
    for key, value in sample.items():
        assert type(ours[key]) is type(value), key
    assert ours["cumQuote"] == "293.01400"  # executedQty × avgPrice
    assert (ours["avgPrice"], ours["executedQty"], ours["status"]) == ("29301.40", "0.010", "FILLED")


def test_algo_json_has_the_documented_shape() -> None:
    """The keys of the documented algoOrder response (BINANCE-PROTOCOL.md §3.3), in its types."""
    doc = {"algoId": 2146760, "clientAlgoId": "6B2I9XVcJpCjqPAJ4YoFX7", "algoType": "CONDITIONAL",
           "orderType": "TAKE_PROFIT", "symbol": "BNBUSDT", "side": "SELL", "positionSide": "BOTH",
           "timeInForce": "GTC", "quantity": "0.01", "algoStatus": "NEW", "triggerPrice": "750.000",
           "price": "750.000", "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
           "workingType": "CONTRACT_PRICE", "priceMatch": "NONE", "closePosition": False, "priceProtect": False,
           "reduceOnly": False, "activatePrice": "", "callbackRate": "", "createTime": 1750485492076,
           "updateTime": 1750485492076, "triggerTime": 0, "goodTillDate": 0}
    ours = algo_json(ALGO, reduce_only=True)
    assert list(ours) == list(doc)
    for key, value in doc.items():
        assert type(ours[key]) is type(value), key
    assert (ours["triggerPrice"], ours["quantity"], ours["reduceOnly"]) == ("29000.0", "0.010", True)


def test_position_balance_account_shapes(shared_data: Path) -> None:
    """positionRisk v2 ⊇ the real sample's keys (v3 drops leverage/marginType); balance rows match exactly."""
    sample = _sample(shared_data, "http_json", "position_risk.json")[0]
    v2 = position_json(POSITION, version=2, max_notional=D("250000"))
    assert set(sample) <= set(v2)
    assert (v2["positionAmt"], v2["marginType"], v2["leverage"]) == ("-0.5", "cross", "20")
    assert v2["notional"] == "-974.500"  # signed amount × mark
    v3 = position_json(POSITION)
    assert not {"leverage", "marginType", "maxNotionalValue", "isAutoAddMargin"} & set(v3)
    balance = _sample(shared_data, "http_json", "balance.json")
    assert [list(r) for r in balance_json(BALANCE, time_ms=1)] == [list(r) for r in balance]
    account = _sample(shared_data, "http_json", "account_info_v2.json")
    ours = account_json(BALANCE, [POSITION], time_ms=5)
    totals = {k for k in account if k.startswith("total")} | {"availableBalance", "maxWithdrawAmount"}
    assert totals <= set(ours)
    assert set(ours["assets"][0]) == set(account["assets"][0])
    assert ours["totalMarginBalance"] == "9984.06"


def test_events_have_the_real_shapes(shared_data: Path) -> None:
    """ORDER_TRADE_UPDATE, ACCOUNT_UPDATE and ALGO_UPDATE carry the real samples' keys, E and T."""
    trade = _sample(shared_data, "user_data_json", "order_update_trade.json")
    update = OrderUpdate("BTCUSDT", "c1", 9, "BUY", "LIMIT", "TRADE", "PARTIALLY_FILLED", D("0.002"), D("0.001"),
                         D("7100.50"), D("0.001"), D("7100.50"), D("0.00355"), D("0"), False, True, 5, 1000, 999)
    ours = event_json(update, price=D("7100.50"))
    # AP/cr (activation price, callback rate) belong to trailing stops only: the real prod frame of a LIMIT
    # order (BINANCE-PROTOCOL.md §3.6, 2026-05-21) has neither, and exactly our keys.
    assert set(trade) == set(ours) and set(trade["o"]) - {"AP", "cr"} <= set(ours["o"])
    prod = {"s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "l", "z", "L", "n", "N", "T", "t", "b",
            "a", "m", "R", "wt", "ot", "ps", "cp", "rp", "pP", "si", "ss", "V", "pm", "gtd", "er"}
    assert set(ours["o"]) == prod
    assert (ours["E"], ours["T"], ours["o"]["T"], ours["o"]["p"], ours["o"]["x"]) == (1000, 999, 999, "7100.50",
                                                                                     "TRADE")
    account = _sample(shared_data, "user_data_json", "account_update.json")
    acc = event_json(AccountUpdate("ORDER", D("100"), (POSITION, ("BTCUSDT", None)), 2000))
    assert set(acc) == set(account) and set(acc["a"]) == set(account["a"])
    assert set(acc["a"]["B"][0]) == set(account["a"]["B"][0])
    assert [set(p) for p in acc["a"]["P"]] == [set(account["a"]["P"][0])] * 2
    assert acc["a"]["P"][1]["pa"] == "0"
    algo = _sample(shared_data, "user_data_json", "algo_update_new.json")
    au = event_json(AlgoUpdate("BTCUSDT", "a1", 3, "TRIGGERED", "SELL", "STOP_MARKET", D("29000"), 3000),
                    quantity=D("0.010"))
    assert set(au) == set(algo) and list(au["o"]) == list(algo["o"])
    assert event_json(StreamExpired(4000), listen_key="k") == {"e": "listenKeyExpired", "E": 4000, "listenKey": "k"}
    assert [event_name(e) for e in (update, AccountUpdate("ORDER", None, (), 1), StreamExpired(1))] == [
        "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "listenKeyExpired"]


def test_trades_and_brackets(shared_data: Path) -> None:
    """userTrades rows carry quoteQty = price × qty; brackets come back as the wire's numbers."""
    fill = Fill("BTCUSDT", "c1", "SELL", D("0.002"), D("7819.01"), D("0.0078"), 5, D("-0.9"), 698759, 25851813)
    row = trade_json(fill)
    assert (row["quoteQty"], row["buyer"], row["commission"], row["id"]) == ("15.63802", False, "0.0078", 698759)
    brackets = load_brackets(shared_data / "exchange/binance-leverage-tiers-2024-10.ccxt.json")
    wire = brackets_json(brackets["BTCUSDT"])
    assert wire["brackets"][0]["bracket"] == 1
    assert wire["brackets"][0]["initialLeverage"] == brackets["BTCUSDT"].tiers[0].max_leverage
    assert isinstance(wire["brackets"][0]["maintMarginRatio"], float)


# -- round trips: our serializer → the live client's parser → the same value ---------------------

@pytest.mark.parametrize("state", [
    ORDER,
    OrderState("ETHUSDT", "x-2", 1, "NEW", "SELL", "LIMIT", D("1.5"), D("0"), D("0"), True, 7),
    OrderState("ETHUSDT", "x-3", 2, "CANCELED", "BUY", "LIMIT", D("1.5"), D("0.5"), D("1900.1"), False, 8),
])
def test_order_round_trip(state: OrderState) -> None:
    assert parse_order(json.loads(json.dumps(order_json(state, price=D("1900.1"))))) == state


@pytest.mark.parametrize("state", [
    ALGO,
    AlgoState("ETHUSDT", "tp-1", 8, "FINISHED", "BUY", "TAKE_PROFIT_MARKET", D("1800.5"), None, True, 11),
])
def test_algo_round_trip(state: AlgoState) -> None:
    assert parse_algo(json.loads(json.dumps(algo_json(state)))) == state


def test_position_and_balance_round_trip() -> None:
    assert parse_position(position_json(POSITION, version=2)) == POSITION
    assert parse_position(position_json(POSITION, version=3)) == ExchangePosition(
        "ETHUSDT", "SHORT", D("0.5"), D("1950.25"), D("1949.00"), D("0.625"), D("21000.5"), 0, 1_688_342_460_300)
    flat = ExchangePosition("BTCUSDT", "LONG", D("0"), D("0"), leverage=20)
    assert parse_position(position_json(flat, version=3)) is None
    assert parse_balance(balance_json(BALANCE, time_ms=1)) == BALANCE


def test_income_row_shape_and_round_trip() -> None:
    """A funding row as Binance lists it (8-place signed string, ``info`` = the type, empty ``tradeId``), and back."""
    row = IncomeRow("BTCUSDT", "FUNDING_FEE", D("-0.37500000"), "USDT", 1570608000000, 7)
    assert income_json(row) == {"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-0.37500000",
                                "asset": "USDT", "info": "FUNDING_FEE", "time": 1570608000000, "tranId": 7,
                                "tradeId": ""}
    assert parse_income(json.loads(json.dumps(income_json(row)))) == row


def test_event_round_trip() -> None:
    """Every event type survives serializer → parser unchanged (positions with the fields events carry)."""
    order = OrderUpdate("BTCUSDT", "c1", 9, "SELL", "MARKET", "TRADE", "FILLED", D("0.010"), D("0.010"),
                        D("29301.4"), D("0.010"), D("29301.4"), D("0.14650700"), D("-1.5"), True, False, 17,
                        1000, 999)
    event_pos = ExchangePosition("ETHUSDT", "SHORT", D("0.5"), D("1950.25"), unrealized_pnl=D("0.625"))
    events: list[AccountEvent] = [
        order,
        AccountUpdate("ORDER", D("9985.31"), (event_pos, ("BTCUSDT", None)), 2000, D("0")),
        AccountUpdate("FUNDING_FEE", None, (), 2001),
        AccountUpdate("FUNDING_FEE", D("9984.93"), (), 2002, D("-0.38")),  # bc: what the funding took
        AlgoUpdate("BTCUSDT", "a1", 3, "REJECTED", "SELL", "STOP_MARKET", D("29000"), 3000, "Reduce Only reject",
                   D("0")),
        AlgoUpdate("BTCUSDT", "a2", 4, "FINISHED", "SELL", "STOP_MARKET", D("29000"), 3001, "", D("0.010")),
        StreamExpired(4000),
    ]
    for event in events:
        assert parse_event(json.loads(json.dumps(event_json(event, listen_key="k")))) == event
