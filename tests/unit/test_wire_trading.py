"""Trading wire parsers on every real Binance sample in the shared data, plus the doc's examples (§3.3, §3.6)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from smc_quant.errors import DataRejected
from smc_quant.exchange.wire_trading import (
    parse_algo,
    parse_balance,
    parse_event,
    parse_income,
    parse_order,
    parse_position,
)
from smc_quant.orders.broker import (
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
USER = "payloads/binance-futures/user_data_json"
HTTP = "payloads/binance-futures/http_json"
INTEG = "payloads/binance-integration/http_responses"
WS = "payloads/binance-integration/ws_messages"


def _load(root: Path, rel: str) -> Any:
    return json.loads((root / rel).read_text())


# -- REST: orders ---------------------------------------------------------------------------------------


def test_order_response_sample(shared_data: Path) -> None:
    """http_json/order_response.json: a resting LIMIT order."""
    o = parse_order(_load(shared_data, f"{HTTP}/order_response.json"))
    assert o == OrderState("BTCUSDT", "testOrder123", 12345678, "NEW", "BUY", "LIMIT", D("0.001"), D("0.000"),
                           D("0.00"), False, 1625474304765)
    assert not o.final


def test_account_orders_sample(shared_data: Path) -> None:
    """An openOrders row (trailing stop, legacy) still parses as an order."""
    rows = _load(shared_data, f"{INTEG}/http_futures_account_orders.json")
    o = parse_order(rows[0])
    assert (o.symbol, o.client_order_id, o.order_id, o.status, o.side) == ("BTCUSDT", "abc", 1917641, "NEW", "BUY")
    assert (o.type, o.orig_qty, o.executed_qty, o.avg_price) == ("TRAILING_STOP_MARKET", D("0.40"), D(0), D(0))
    assert o.update_time_ms == 1579276756075


def test_order_doc_example() -> None:
    """The §3.3 /fapi/v1/order response example."""
    doc = {"clientOrderId": "testOrder", "cumQty": "0", "cumQuote": "0", "executedQty": "0", "orderId": 22542179,
           "avgPrice": "0.00000", "origQty": "10", "price": "0", "reduceOnly": False, "side": "BUY",
           "positionSide": "SHORT", "status": "NEW", "stopPrice": "0", "closePosition": False, "symbol": "BTCUSDT",
           "timeInForce": "GTD", "type": "LIMIT", "origType": "LIMIT", "updateTime": 1566818724722,
           "workingType": "CONTRACT_PRICE", "priceProtect": False, "priceMatch": "NONE",
           "selfTradePreventionMode": "NONE", "goodTillDate": 1693207680000}
    o = parse_order(doc)
    assert (o.client_order_id, o.order_id, o.orig_qty, o.status, o.update_time_ms) == (
        "testOrder", 22542179, D(10), "NEW", 1566818724722)


def test_filled_market_order_is_final() -> None:
    """A RESULT response of a filled MARKET order: executed quantity and average price, final."""
    o = parse_order({"symbol": "ETHUSDT", "clientOrderId": "smc-x-en-0", "orderId": 7, "status": "FILLED",
                     "side": "SELL", "type": "MARKET", "origQty": "0.5", "executedQty": "0.5",
                     "avgPrice": "2500.10", "reduceOnly": True, "updateTime": 5})
    assert o.final and o.reduce_only and o.avg_price == D("2500.10") and o.executed_qty == D("0.5")


# -- REST: algo orders --------------------------------------------------------------------------------------


def test_open_algo_orders_sample(shared_data: Path) -> None:
    """http_json/open_algo_orders.json names the type ``type`` (not ``orderType``)."""
    a = parse_algo(_load(shared_data, f"{HTTP}/open_algo_orders.json")[0])
    assert a == AlgoState("BTCUSDT", "test-algo-order-1", 123456789, "NEW", "BUY", "STOP_MARKET", D("45000.00"),
                          D("0.001"), False, 1625474304765)


def test_algo_doc_example_shape() -> None:
    """The §3.3 algo response shape (``orderType``, ``closePosition``), as a STOP_MARKET close-all."""
    doc = {"algoId": 2146760, "clientAlgoId": "6B2I9XVcJpCjqPAJ4YoFX7", "algoType": "CONDITIONAL",
           "orderType": "STOP_MARKET", "symbol": "BNBUSDT", "side": "SELL", "positionSide": "BOTH",
           "timeInForce": "GTC", "quantity": "0", "algoStatus": "NEW", "triggerPrice": "750.000", "price": "0",
           "icebergQuantity": None, "workingType": "MARK_PRICE", "closePosition": True, "reduceOnly": False,
           "activatePrice": "", "callbackRate": "", "createTime": 1750485492076, "updateTime": 1750485492076}
    a = parse_algo(doc)
    assert (a.algo_id, a.client_algo_id, a.type, a.trigger_price) == (2146760, "6B2I9XVcJpCjqPAJ4YoFX7",
                                                                      "STOP_MARKET", D("750.000"))
    assert a.close_position and a.quantity is None and not a.final


def test_algo_doc_take_profit_limit_parses_though_we_never_place_one() -> None:
    """The doc's literal example is a TAKE_PROFIT (limit) algo: not a type we place, but a person's must show in the
    symbol's listing (it used to be rejected, and the symbol looked free); an unknown type is rejected."""
    doc = {"algoId": 2146760, "clientAlgoId": "x", "orderType": "TAKE_PROFIT", "symbol": "BNBUSDT", "side": "SELL",
           "quantity": "0.01", "algoStatus": "NEW", "triggerPrice": "750.000"}
    a = parse_algo(doc)
    assert (a.type, a.trigger_price, a.quantity, a.callback_rate) == ("TAKE_PROFIT", D("750.000"), D("0.01"), None)
    with pytest.raises(DataRejected) as info:
        parse_algo({**doc, "orderType": "ICEBERG"})
    assert info.value.reason == "algo_malformed" and "ICEBERG" in str(info.value)


@pytest.mark.parametrize(("activate", "trigger"), [("", None), ("2100.50", D("2100.50"))])
def test_trailing_stop_parses_with_its_callback_and_activation(activate: str, trigger: Decimal | None) -> None:
    """A person's TRAILING_STOP_MARKET: no fixed trigger (``triggerPrice`` empty); ``activatePrice`` is kept as the
    trigger when there is one, and ``callbackRate`` as the callback."""
    doc = {"algoId": 9, "clientAlgoId": "my-trail", "orderType": "TRAILING_STOP_MARKET", "symbol": "ETHUSDT",
           "side": "SELL", "quantity": "0.100", "algoStatus": "NEW", "triggerPrice": "", "activatePrice": activate,
           "callbackRate": "1.5", "closePosition": False, "reduceOnly": True}
    a = parse_algo(doc)
    assert (a.type, a.trigger_price, a.callback_rate, a.quantity) == ("TRAILING_STOP_MARKET", trigger, D("1.5"),
                                                                      D("0.100"))


# -- REST: positions and balance ----------------------------------------------------------------------------


def test_position_risk_sample(shared_data: Path) -> None:
    """http_json/position_risk.json (v2 row with leverage)."""
    p = parse_position(_load(shared_data, f"{HTTP}/position_risk.json")[0])
    assert p == ExchangePosition("BTCUSDT", "LONG", D("0.001"), D("50000.0"), D("51000.0"), D("1.00000000"),
                                 D("45000.0"), 20, 1625474304765)


def test_positions_one_way_zero_is_none(shared_data: Path) -> None:
    """A zero positionAmt row (v3 lists symbols with resting orders only) is not a position."""
    rows = _load(shared_data, f"{INTEG}/http_futures_account_positions_one_way.json")
    assert [parse_position(r) for r in rows] == [None]


def test_positions_hedge_sign_gives_side(shared_data: Path) -> None:
    """Hedge rows: positive amount → LONG, negative → SHORT, quantity absolute."""
    rows = _load(shared_data, f"{INTEG}/http_futures_account_positions_hedge.json")
    long_, short = (parse_position(r) for r in rows)
    assert long_ is not None and short is not None
    assert (long_.side, long_.quantity, long_.entry_price, long_.leverage) == ("LONG", D("20.000"), D("6563.66500"), 10)
    assert (short.side, short.quantity, short.unrealized_pnl, short.liquidation_price) == (
        "SHORT", D("10.000"), D("-1156.46711780"), D("7189.95"))


def test_position_v3_row_without_leverage() -> None:
    """A v3 row has no leverage field: leverage 0 (unknown)."""
    p = parse_position({"symbol": "ETHUSDT", "positionSide": "BOTH", "positionAmt": "-0.5", "entryPrice": "2000",
                        "breakEvenPrice": "2001", "markPrice": "1990", "unRealizedProfit": "5",
                        "liquidationPrice": "2500", "updateTime": 9})
    assert p is not None and (p.side, p.quantity, p.leverage, p.update_time_ms) == ("SHORT", D("0.5"), 0, 9)


def test_balance_sample(shared_data: Path) -> None:
    """http_json/balance.json: the USDT row."""
    b = parse_balance(_load(shared_data, f"{HTTP}/balance.json"))
    assert b == Balance(D("122.12345678"), D("0.00000000"), D("122.12345678"))


def test_balance_doc_example() -> None:
    """§3.4's balance row, with other assets around it."""
    rows = [{"asset": "BNB", "balance": "1", "crossUnPnl": "0", "availableBalance": "1"},
            {"accountAlias": "SgsR", "asset": "USDT", "balance": "122607.35137903", "crossWalletBalance": "23.72469206",
             "crossUnPnl": "-1.5", "availableBalance": "23.72469206", "maxWithdrawAmount": "23.72469206",
             "marginAvailable": True, "updateTime": 1617939110373}]
    b = parse_balance(rows)
    assert (b.wallet, b.unrealized_pnl, b.available) == (D("122607.35137903"), D("-1.5"), D("23.72469206"))
    assert b.margin_balance == D("122605.85137903")


def test_income_doc_examples() -> None:
    """``GET /fapi/v1/income`` rows of the doc: the income keeps its sign (negative = paid); a TRANSFER has an
    empty symbol; ``info`` and ``tradeId`` are not kept."""
    funding = parse_income({"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-0.37500000",
                            "asset": "USDT", "info": "FUNDING_FEE", "time": 1570608000000, "tranId": 9689322392,
                            "tradeId": ""})
    assert funding == IncomeRow("BTCUSDT", "FUNDING_FEE", D("-0.375"), "USDT", 1570608000000, 9689322392)
    transfer = parse_income({"symbol": "", "incomeType": "TRANSFER", "income": "12.5", "asset": "USDT",
                             "info": "TRANSFER", "time": 1570608000000, "tranId": 9689322392, "tradeId": ""})
    assert (transfer.symbol, transfer.income_type, transfer.income) == ("", "TRANSFER", D("12.5"))


def test_balance_without_usdt_is_rejected() -> None:
    """No USDT row → DataRejected('balance_no_usdt')."""
    with pytest.raises(DataRejected) as info:
        parse_balance([{"asset": "BNFCR", "balance": "1", "availableBalance": "1"}])
    assert info.value.reason == "balance_no_usdt"


# -- user-data events ---------------------------------------------------------------------------------------


def test_order_update_new_sample(shared_data: Path) -> None:
    """user_data_json/order_update_new.json (the §3.6 official example)."""
    e = parse_event(_load(shared_data, f"{USER}/order_update_new.json"))
    assert isinstance(e, OrderUpdate)
    assert (e.symbol, e.client_order_id, e.order_id, e.side, e.type, e.execution, e.status) == (
        "BTCUSDT", "TEST", 8886774, "BUY", "TRAILING_STOP_MARKET", "NEW", "NEW")
    assert (e.orig_qty, e.last_qty, e.cum_qty, e.commission, e.trade_id) == (D("0.001"), D(0), D(0), D(0), 0)
    assert not e.is_liquidation and not e.is_adl


def test_order_update_trade_samples(shared_data: Path) -> None:
    """A maker fill and a partial fill: last/cum quantities, price, commission, realised PnL."""
    full = parse_event(_load(shared_data, f"{USER}/order_update_trade.json"))
    part = parse_event(_load(shared_data, f"{USER}/order_update_trade_partial.json"))
    assert isinstance(full, OrderUpdate) and isinstance(part, OrderUpdate)
    assert (full.execution, full.last_qty, full.last_price, full.commission, full.realized_pnl) == (
        "TRADE", D("0.001"), D("7100.50"), D("0.01000000"), D("12.34"))
    assert full.is_maker and full.trade_id == 12345678 and full.trade_time_ms == 1568879465651
    assert (part.status, part.orig_qty, part.cum_qty) == ("PARTIALLY_FILLED", D("0.002"), D("0.001"))


@pytest.mark.parametrize(("name", "status", "liq", "adl", "pnl"), [
    ("order_update_calculated.json", "FILLED", True, False, "-5.67"),
    ("order_update_calculated_pending.json", "NEW", True, False, "0"),
    ("order_update_adl.json", "FILLED", True, True, "-2.50"),
    ("order_update_insurance.json", "FILLED", True, False, "-8.00"),
    ("order_update_settlement.json", "FILLED", False, False, "-10.00"),
    ("order_update_delivery.json", "FILLED", False, False, "0"),
])
def test_order_update_forced_closes(shared_data: Path, name: str, status: str, liq: bool, adl: bool,
                                    pnl: str) -> None:
    """Liquidation (autoclose-, CALCULATED), ADL, insurance, settlement, delivery: statuses NEW_ADL /
    NEW_INSURANCE map to FILLED when fully executed; the forced-close flags follow the client id."""
    e = parse_event(_load(shared_data, f"{USER}/{name}"))
    assert isinstance(e, OrderUpdate)
    assert (e.status, e.is_liquidation, e.is_adl, e.realized_pnl) == (status, liq, adl, D(pnl))
    assert e.reduce_only


def test_order_update_delivery_has_no_commission(shared_data: Path) -> None:
    """``N``/``n`` absent → commission 0."""
    e = parse_event(_load(shared_data, f"{USER}/order_update_delivery.json"))
    assert isinstance(e, OrderUpdate) and e.commission == 0 and e.symbol == "BTCUSD_240329"


def test_account_update_sample(shared_data: Path) -> None:
    """ACCOUNT_UPDATE: USDT wallet, a flat BOTH row → (symbol, None), hedge LONG/SHORT rows."""
    e = parse_event(_load(shared_data, f"{USER}/account_update.json"))
    assert isinstance(e, AccountUpdate)
    assert (e.reason, e.wallet_balance, e.event_time_ms) == ("ORDER", D("122624.12345678"), 1564745798939)
    flat, long_, short = e.positions
    assert flat == ("BTCUSDT", None)
    assert isinstance(long_, ExchangePosition) and isinstance(short, ExchangePosition)
    assert (long_.side, long_.quantity, long_.entry_price, long_.unrealized_pnl) == (
        "LONG", D(20), D("6563.6"), D("2850.21200"))
    assert (short.side, short.quantity) == ("SHORT", D(10))


def test_account_update_bnfcr_has_no_usdt_wallet(shared_data: Path) -> None:
    """A BNFCR-only balance update carries no USDT wallet (None), and no positions."""
    e = parse_event(_load(shared_data, f"{USER}/account_update_bnfcr.json"))
    assert isinstance(e, AccountUpdate) and e.wallet_balance is None and e.positions == ()


def test_account_update_doc_example() -> None:
    """The §3.6 ACCOUNT_UPDATE example; and a FUNDING_FEE frame with only ``B``."""
    doc = {"e": "ACCOUNT_UPDATE", "E": 1564745798939, "T": 1564745798938, "a": {"m": "ORDER",
           "B": [{"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"}],
           "P": [{"s": "BTCUSDT", "pa": "20", "ep": "6563.66500", "bep": "0", "cr": "0", "up": "2850.21200",
                  "mt": "isolated", "iw": "13200.70726908", "ps": "LONG"}]}}
    e = parse_event(doc)
    assert isinstance(e, AccountUpdate) and len(e.positions) == 1
    funding = parse_event({"e": "ACCOUNT_UPDATE", "E": 5, "a": {"m": "FUNDING_FEE",
                                                               "B": [{"a": "USDT", "wb": "10", "cw": "10"}]}})
    assert isinstance(funding, AccountUpdate) and funding.reason == "FUNDING_FEE" and funding.wallet_balance == 10


@pytest.mark.parametrize("name", ["algo_update_new.json", "algo_update_canceled.json"])
def test_algo_update_samples(shared_data: Path, name: str) -> None:
    """ALGO_UPDATE: ids, status, trigger price, reject reason."""
    e = parse_event(_load(shared_data, f"{USER}/{name}"))
    assert isinstance(e, AlgoUpdate)
    assert (e.symbol, e.client_algo_id, e.algo_id, e.side, e.type, e.trigger_price) == (
        "BNBUSDT", "Q5xaq5EGKgXXa0fD7fs0Ip", 2148719, "SELL", "TAKE_PROFIT", D(750))
    assert e.status == ("NEW" if "new" in name else "CANCELED")
    assert e.reject_reason == "Reduce Only reject" and e.event_time_ms == 1750515742303


@pytest.mark.parametrize(("name", "status"), [
    ("ws_futures_algo_update_triggering.json", "TRIGGERING"),
    ("ws_futures_algo_update_triggered.json", "TRIGGERED"),
    ("ws_futures_algo_update_finished.json", "FINISHED"),
    ("ws_futures_algo_update_finished_canceled.json", "FINISHED"),
])
def test_algo_update_ws_samples(shared_data: Path, name: str, status: str) -> None:
    """Real DOGEUSDT STOP_MARKET lifecycle frames wrapped in a stream envelope."""
    e = parse_event(_load(shared_data, f"{WS}/{name}"))
    assert isinstance(e, AlgoUpdate)
    assert (e.status, e.type, e.trigger_price, e.symbol, e.reject_reason) == (
        status, "STOP_MARKET", D("0.13855"), "DOGEUSDT", "")
    assert e.algo_id in (1000000033225453, 1000000033225454)


@pytest.mark.parametrize(("name", "executed", "unexecuted"), [
    ("ws_futures_algo_update_triggering.json", None, False),  # no ``aq`` at all
    ("ws_futures_algo_update_triggered.json", D(0), False),
    ("ws_futures_algo_update_finished.json", D(38), False),
    ("ws_futures_algo_update_finished_canceled.json", D(0), True),  # fired, executed nothing
])
def test_algo_update_executed_quantity(shared_data: Path, name: str, executed: Decimal | None,
                                       unexecuted: bool) -> None:
    """``aq`` → ``executed_qty`` (``None`` when absent); FINISHED with ``aq == 0`` ended without executing."""
    e = parse_event(_load(shared_data, f"{WS}/{name}"))
    assert isinstance(e, AlgoUpdate)
    assert (e.executed_qty, e.ended_unexecuted) == (executed, unexecuted)


@pytest.mark.parametrize(("name", "actual"), [
    ("ws_futures_algo_update_triggering.json", None),  # not in the matching engine yet
    ("ws_futures_algo_update_triggered.json", 88937381063),  # "ai": "88937381063"
    ("ws_futures_algo_update_finished.json", 88937381063),
])
def test_algo_update_names_the_order_its_trigger_placed(shared_data: Path, name: str, actual: int | None) -> None:
    """``ai`` → ``actual_order_id``: the stop's fill is told apart by it when its client id is not ours."""
    e = parse_event(_load(shared_data, f"{WS}/{name}"))
    assert isinstance(e, AlgoUpdate) and e.actual_order_id == actual


@pytest.mark.parametrize(("value", "actual"), [("", None), (None, None), (0, None), ("88937381063", 88937381063),
                                               (88937381063, 88937381063), ("n/a", None), (True, None)])
def test_algo_actual_order_id_is_an_enrichment_never_a_rejection(value: object, actual: int | None) -> None:
    """``actualOrderId`` in a queried algo order: read when it is an id, ``None`` otherwise (the row still counts)."""
    doc = {"algoId": 7, "clientAlgoId": "sl-x", "orderType": "STOP_MARKET", "symbol": "BNBUSDT", "side": "SELL",
           "quantity": "0.01", "algoStatus": "FINISHED", "triggerPrice": "750.000", "actualOrderId": value}
    assert parse_algo(doc).actual_order_id == actual
    del doc["actualOrderId"]
    assert parse_algo(doc).actual_order_id is None


def test_algo_update_ended_unexecuted_by_status(shared_data: Path) -> None:
    """REJECTED, EXPIRED and CANCELED ended without executing; NEW and TRIGGERED have not ended."""
    e = parse_event(_load(shared_data, f"{USER}/algo_update_canceled.json"))
    assert isinstance(e, AlgoUpdate) and e.status == "CANCELED" and e.ended_unexecuted and e.executed_qty == 0
    for status, ended in (("REJECTED", True), ("EXPIRED", True), ("NEW", False), ("TRIGGERED", False)):
        assert replace(e, status=status).ended_unexecuted is ended


@pytest.mark.parametrize(("name", "fill"), [
    ("ws_futures_order_update_liquidation.json", True),  # x=CALCULATED, l=0.100: the liquidation's fill
    ("ws_futures_order_update_adl.json", True),  # x=CALCULATED, l=1.000
    ("ws_futures_order_update_adl_filled.json", True),  # x=TRADE, the same trade id as the one above
    ("ws_futures_order_update_liquidation_zero_qty.json", False),  # l=0
    ("ws_futures_order_update_new_price_match.json", False),
])
def test_forced_close_frames_carry_their_fill(shared_data: Path, name: str, fill: bool) -> None:
    """A liquidation's or ADL's fill is on its CALCULATED event (``has_fill``), not only on TRADE ones."""
    e = parse_event(_load(shared_data, f"{WS}/{name}"))
    assert isinstance(e, OrderUpdate) and e.has_fill is fill


@pytest.mark.parametrize(("name", "status", "execution", "liq", "adl", "reduce"), [
    ("ws_futures_order_update_adl.json", "FILLED", "CALCULATED", True, True, False),
    ("ws_futures_order_update_adl_filled.json", "FILLED", "TRADE", False, True, False),
    ("ws_futures_order_update_liquidation.json", "FILLED", "CALCULATED", True, False, False),
    ("ws_futures_order_update_liquidation_zero_qty.json", "FILLED", "CALCULATED", True, False, False),
    ("ws_futures_order_update_new_limit_if_touched_price_match.json", "NEW", "NEW", False, False, False),
    ("ws_futures_order_update_new_price_match.json", "NEW", "NEW", False, False, False),
    ("ws_futures_order_update_new_reduce_only_qty.json", "NEW", "NEW", False, False, True),
    ("ws_futures_order_update_new_stop_limit_price_match.json", "NEW", "NEW", False, False, False),
    ("ws_futures_order_update_settlement.json", "FILLED", "CALCULATED", True, False, False),
    ("ws_futures_order_update_trade_reduce_only_qty.json", "FILLED", "TRADE", False, False, True),
])
def test_order_update_ws_samples(shared_data: Path, name: str, status: str, execution: str, liq: bool, adl: bool,
                                 reduce: bool) -> None:
    """Every ws_futures_order_update_* frame (nulls in ``sp``/``N``/``n``/``AP``/``V`` are tolerated)."""
    raw = _load(shared_data, f"{WS}/{name}")
    e = parse_event(raw)
    assert isinstance(e, OrderUpdate)
    o = raw["data"]["o"]
    assert (e.status, e.execution, e.is_liquidation, e.is_adl, e.reduce_only) == (status, execution, liq, adl, reduce)
    assert (e.order_id, e.client_order_id, e.cum_qty, e.last_price) == (o["i"], o["c"], D(o["z"]), D(o["L"]))
    assert e.commission == (D(o["n"]) if o["n"] is not None else 0)


def test_real_prod_frame_from_doc() -> None:
    """The §3.6 real prod frame (2026-05-21)."""
    doc = {"e": "ORDER_TRADE_UPDATE", "T": 1779367929401, "E": 1779367929402, "o": {
        "s": "SOLUSDT", "c": "bot-e0536484551311f1b0c42676a180379c", "S": "BUY", "o": "LIMIT", "f": "GTC",
        "q": "21.26", "p": "85.67", "ap": "0", "sp": "0", "x": "NEW", "X": "NEW", "i": 215456450616, "l": "0",
        "z": "0", "L": "0", "n": "0", "N": "USDT", "T": 1779367929401, "t": 0, "b": "2520.672", "a": "0", "m": False,
        "R": True, "wt": "CONTRACT_PRICE", "ot": "LIMIT", "ps": "SHORT", "cp": False, "rp": "0", "pP": False,
        "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0, "er": "0"}}
    e = parse_event(doc)
    assert isinstance(e, OrderUpdate)
    assert (e.order_id, e.orig_qty, e.event_time_ms, e.trade_time_ms, e.reduce_only) == (
        215456450616, D("21.26"), 1779367929402, 1779367929401, True)


def test_listen_key_expired_doc_example() -> None:
    """listenKeyExpired → StreamExpired with the event time."""
    e = parse_event({"e": "listenKeyExpired", "E": 1736996475556,
                     "listenKey": "WsCMN0a4KHUPTQuX6IUnqEZfB1inxmv1qR4kbf1LuEjur5VdbzqvyxqG9TSjVVxv"})
    assert e == StreamExpired(1736996475556)


@pytest.mark.parametrize("rel", [f"{USER}/trade_lite.json", f"{WS}/ws_futures_trade_lite.json"])
def test_trade_lite_is_ignored(shared_data: Path, rel: str) -> None:
    """TRADE_LITE duplicates ORDER_TRADE_UPDATE fills: ignored (None)."""
    assert parse_event(_load(shared_data, rel)) is None


def test_margin_call_and_config_update_are_ignored() -> None:
    """§3.6 MARGIN_CALL example and ACCOUNT_CONFIG_UPDATE → None."""
    assert parse_event({"e": "MARGIN_CALL", "E": 1587727187525, "cw": "3.16812045", "p": []}) is None
    assert parse_event({"e": "ACCOUNT_CONFIG_UPDATE", "E": 1, "ac": {"s": "BTCUSDT", "l": 25}}) is None


# -- malformed input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    None, [], "x", {"e": 5}, {"e": "ORDER_TRADE_UPDATE", "E": 1},
    {"e": "ORDER_TRADE_UPDATE", "E": 1, "o": {"s": "BTCUSDT"}},
    {"e": "ALGO_UPDATE", "E": 1, "o": {"caid": "a", "aid": 1, "s": "X", "S": "BUY", "o": "STOP_MARKET",
                                       "X": "WEIRD", "tp": "1"}},
    {"e": "ACCOUNT_UPDATE", "E": 1, "a": {"m": "ORDER", "B": "nope"}},
    {"e": "listenKeyExpired", "E": "soon"},
])
def test_malformed_events_raise_data_rejected(bad: Any) -> None:
    """Malformed frames raise DataRejected('event_malformed'), never another exception."""
    with pytest.raises(DataRejected) as info:
        parse_event(bad)
    assert info.value.reason == "event_malformed"


@pytest.mark.parametrize(("func", "bad", "reason"), [
    (parse_order, {"symbol": "X"}, "order_malformed"),
    (parse_order, {"symbol": "X", "clientOrderId": "c", "orderId": 1, "status": "NEW", "side": "BUY",
                   "type": "LIMIT", "origQty": "NaN", "executedQty": "0"}, "order_malformed"),
    (parse_order, {"symbol": "X", "clientOrderId": "c", "orderId": 1, "status": "NEW", "side": "BUY",
                   "type": "LIMIT", "origQty": 1.5, "executedQty": "0"}, "order_malformed"),
    (parse_order, {"symbol": "X", "clientOrderId": "c", "orderId": 1, "status": "NEW", "side": "UP",
                   "type": "LIMIT", "origQty": "1", "executedQty": "0"}, "order_malformed"),
    (parse_algo, [], "algo_malformed"),
    (parse_position, {"symbol": "X", "positionAmt": "abc"}, "position_malformed"),
    (parse_balance, {"asset": "USDT"}, "balance_malformed"),
    (parse_balance, [{"asset": "USDT", "balance": "1e", "availableBalance": "1"}], "balance_malformed"),
    (parse_income, "x", "income_malformed"),
    (parse_income, {"symbol": "X", "incomeType": "FUNDING_FEE", "income": "-0.1", "asset": "USDT",
                    "time": 1}, "income_malformed"),
    (parse_income, {"symbol": "X", "incomeType": "FUNDING_FEE", "income": -0.1, "asset": "USDT", "time": 1,
                    "tranId": 1}, "income_malformed"),
    (parse_income, {"symbol": "X", "incomeType": "FUNDING_FEE", "income": "abc", "asset": "USDT", "time": 1,
                    "tranId": 1}, "income_malformed"),
    (parse_income, {"symbol": "X", "incomeType": "FUNDING_FEE", "income": "-0.1", "asset": "USDT",
                    "time": "soon", "tranId": 1}, "income_malformed"),
])
def test_malformed_rest_payloads(func: Any, bad: Any, reason: str) -> None:
    """Bad REST rows → DataRejected with a reason naming the payload kind; floats are refused (Decimal only)."""
    with pytest.raises(DataRejected) as info:
        func(bad)
    assert info.value.reason == reason
