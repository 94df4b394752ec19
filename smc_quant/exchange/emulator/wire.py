"""Broker dataclasses → Binance USDT-M JSON: REST responses and user-data events, in the exchange's shapes.

The emulator's simulated account speaks in the venue-neutral values of ``smc_quant/orders/broker.py``
(``OrderState``, ``AlgoState``, ``ExchangePosition``, ``Balance``, ``OrderUpdate`` …); the clients speak
Binance. These pure functions are the only place the emulator spells Binance field names for trading.
Shapes follow ``BINANCE-PROTOCOL.md`` §3.3–§3.6 and the real samples in
``payloads/binance-futures/{http_json,user_data_json}``: money is a decimal string (``format(d, "f")``,
never a float), ids and times are integers, flags are JSON booleans; one-way mode (``positionSide``
``BOTH``), cross margin unless told otherwise. Leverage brackets are JSON numbers, as Binance sends them.

The reverse direction (Binance JSON → dataclasses) is the live client's ``smc_quant/exchange/wire_trading.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from smc_quant.domain.trading import ZERO, Fill
from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.orders.broker import (
    AccountEvent,
    AccountModeChanged,
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

__all__ = [
    "EVENT_NAMES", "account_json", "algo_json", "balance_json", "brackets_json", "dec", "event_json", "event_name",
    "income_json", "order_json", "position_json", "trade_json",
]

Json = dict[str, Any]
EVENT_NAMES = ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ALGO_UPDATE", "ACCOUNT_CONFIG_UPDATE", "listenKeyExpired")
QUOTE = "USDT"


def dec(value: Decimal | None) -> str:
    """A Decimal as Binance writes it: plain notation, no exponent (``Decimal("1E+1")`` → ``"10"``)."""
    if value is None:
        return "0"
    if value == 0:
        return "0"
    return format(value, "f")


def _signed_amount(p: ExchangePosition) -> Decimal:
    """Binance's ``positionAmt``: positive long, negative short (one-way mode)."""
    return p.quantity if p.side == "LONG" else -p.quantity


def order_json(o: OrderState, *, price: Decimal | None = None, time_in_force: str = "GTC",
               create_time_ms: int | None = None) -> Json:
    """``POST/GET/DELETE /fapi/v1/order`` and ``openOrders`` entries.

    ``OrderState`` carries no limit price or time in force, so the caller passes what the request said
    (``price`` "0" for MARKET). ``cumQuote = executedQty × avgPrice``.
    """
    cum_quote = o.executed_qty * o.avg_price
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": dec(price if price is not None else ZERO),
        "avgPrice": dec(o.avg_price),
        "origQty": dec(o.orig_qty),
        "executedQty": dec(o.executed_qty),
        "cumQty": dec(o.executed_qty),
        "cumQuote": dec(cum_quote),
        "timeInForce": time_in_force,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": False,
        "side": o.side,
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": o.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
        "time": create_time_ms if create_time_ms is not None else o.update_time_ms,
        "updateTime": o.update_time_ms,
    }


def algo_json(a: AlgoState, *, reduce_only: bool = False, working_type: str = "CONTRACT_PRICE",
              create_time_ms: int | None = None, trigger_time_ms: int = 0) -> Json:
    """``POST/GET/DELETE /fapi/v1/algoOrder`` and ``openAlgoOrders`` entries (``algoType`` CONDITIONAL)."""
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": dec(a.quantity) if a.quantity is not None else "0",
        "algoStatus": a.status,
        "triggerPrice": "" if a.callback_rate is not None or a.trigger_price is None else dec(a.trigger_price),
        "price": "0",
        "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": False,
        "reduceOnly": reduce_only,
        "activatePrice": dec(a.trigger_price) if a.callback_rate is not None and a.trigger_price is not None else "",
        "callbackRate": dec(a.callback_rate) if a.callback_rate is not None else "",
        "createTime": create_time_ms if create_time_ms is not None else a.update_time_ms,
        "updateTime": a.update_time_ms,
        "triggerTime": trigger_time_ms,
        "goodTillDate": 0,
        # once fired: the order it placed in the matching engine (the documented NEW example has no such key)
        **({"actualOrderId": str(a.actual_order_id)} if a.actual_order_id is not None else {}),
    }


def position_json(p: ExchangePosition, *, version: int = 3, margin_type: str = "CROSSED",
                  max_notional: Decimal = ZERO, time_ms: int | None = None) -> Json:
    """One ``positionRisk`` row. v3 has no leverage/marginType (§3.4); v2 adds them.

    ``notional = positionAmt × markPrice`` (signed), ``breakEvenPrice`` is the entry price (fees are not
    folded in), cross margin: ``isolatedMargin``/``isolatedWallet`` are 0.
    """
    amt = _signed_amount(p)
    mark = p.mark_price if p.mark_price else p.entry_price
    initial = abs(amt) * mark / p.leverage if p.leverage else ZERO
    row: Json = {
        "symbol": p.symbol,
        "positionSide": "BOTH",
        "positionAmt": dec(amt),
        "entryPrice": dec(p.entry_price),
        "breakEvenPrice": dec(p.entry_price),
        "markPrice": dec(mark),
        "unRealizedProfit": dec(p.unrealized_pnl),
        "liquidationPrice": dec(p.liquidation_price),
        "isolatedMargin": "0",
        "notional": dec(amt * mark),
        "marginAsset": QUOTE,
        "isolatedWallet": "0",
        "initialMargin": dec(initial),
        "maintMargin": "0",
        "positionInitialMargin": dec(initial),
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": p.update_time_ms if time_ms is None else time_ms,
    }
    if version == 2:
        row.update(
            leverage=str(p.leverage),
            maxNotionalValue=dec(max_notional),
            marginType="isolated" if margin_type == "ISOLATED" else "cross",
            isAutoAddMargin="false",
        )
    return row


def balance_json(b: Balance, *, time_ms: int, alias: str = "emulator") -> list[Json]:
    """``GET /fapi/v2|v3/balance``: one USDT row (``balance`` = wallet, ``crossUnPnl`` = unrealised)."""
    return [
        {
            "accountAlias": alias,
            "asset": QUOTE,
            "balance": dec(b.wallet),
            "crossWalletBalance": dec(b.wallet),
            "crossUnPnl": dec(b.unrealized_pnl),
            "availableBalance": dec(b.available),
            "maxWithdrawAmount": dec(b.available),
            "marginAvailable": True,
            "updateTime": time_ms,
        }
    ]


def account_json(b: Balance, positions: Iterable[ExchangePosition], *, time_ms: int) -> Json:
    """``GET /fapi/v2|v3/account``: totals, the USDT asset row and the non-zero positions.

    ``totalMarginBalance = wallet + unrealised``; ``totalInitialMargin = margin − available`` (what is tied up).
    """
    rows = list(positions)
    initial = b.margin_balance - b.available
    used = dec(initial if initial > 0 else ZERO)
    asset = {
        "asset": QUOTE,
        "walletBalance": dec(b.wallet),
        "unrealizedProfit": dec(b.unrealized_pnl),
        "marginBalance": dec(b.margin_balance),
        "maintMargin": "0",
        "initialMargin": used,
        "positionInitialMargin": used,
        "openOrderInitialMargin": "0",
        "crossWalletBalance": dec(b.wallet),
        "crossUnPnl": dec(b.unrealized_pnl),
        "availableBalance": dec(b.available),
        "maxWithdrawAmount": dec(b.available),
        "marginAvailable": True,
        "updateTime": time_ms,
    }
    return {
        "totalInitialMargin": used,
        "totalMaintMargin": "0",
        "totalWalletBalance": dec(b.wallet),
        "totalUnrealizedProfit": dec(b.unrealized_pnl),
        "totalMarginBalance": dec(b.margin_balance),
        "totalPositionInitialMargin": used,
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": dec(b.wallet),
        "totalCrossUnPnl": dec(b.unrealized_pnl),
        "availableBalance": dec(b.available),
        "maxWithdrawAmount": dec(b.available),
        "assets": [asset],
        "positions": [
            {
                "symbol": p.symbol,
                "positionSide": "BOTH",
                "positionAmt": dec(_signed_amount(p)),
                "unrealizedProfit": dec(p.unrealized_pnl),
                "isolatedMargin": "0",
                "notional": dec(_signed_amount(p) * (p.mark_price or p.entry_price)),
                "isolatedWallet": "0",
                "initialMargin": "0",
                "maintMargin": "0",
                "updateTime": p.update_time_ms,
            }
            for p in rows
        ],
    }


def trade_json(f: Fill, *, position_side: str = "BOTH") -> Json:
    """One ``GET /fapi/v1/userTrades`` row (``commission`` positive = paid, in USDT)."""
    return {
        "buyer": f.side == "BUY",
        "commission": dec(f.fee),
        "commissionAsset": QUOTE,
        "id": f.trade_id,
        "maker": f.is_maker,
        "orderId": f.order_id,
        "price": dec(f.price),
        "qty": dec(f.quantity),
        "quoteQty": dec(f.price * f.quantity),
        "realizedPnl": dec(f.realized_pnl),
        "side": f.side,
        "positionSide": position_side,
        "symbol": f.symbol,
        "time": f.time_ms,
    }


def income_json(row: IncomeRow) -> Json:
    """One ``GET /fapi/v1/income`` row (``income`` signed: positive = received; ``info`` repeats the type)."""
    return {
        "symbol": row.symbol,
        "incomeType": row.income_type,
        "income": dec(row.income),
        "asset": row.asset,
        "info": row.income_type,
        "time": row.time_ms,
        "tranId": row.tran_id,
        "tradeId": "",
    }


def _number(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() else float(d)


def brackets_json(b: SymbolBrackets) -> Json:
    """One ``GET /fapi/v1/leverageBracket`` entry (numbers are JSON numbers here, as on Binance)."""
    return {
        "symbol": b.symbol,
        "notionalCoef": 1.0,
        "brackets": [
            {
                "bracket": i,
                "initialLeverage": t.max_leverage,
                "notionalCap": _number(t.cap),
                "notionalFloor": _number(t.floor),
                "maintMarginRatio": float(t.maint_margin_ratio),
                "cum": float(t.cum),
            }
            for i, t in enumerate(b.tiers, start=1)
        ],
    }


# -- user-data events ----------------------------------------------------------------------------


def event_name(event: AccountEvent) -> str:
    """The ``e`` of ``event`` on the wire (what the ``events=`` allow-list names)."""
    if isinstance(event, OrderUpdate):
        return "ORDER_TRADE_UPDATE"
    if isinstance(event, AccountUpdate):
        return "ACCOUNT_UPDATE"
    if isinstance(event, AlgoUpdate):
        return "ALGO_UPDATE"
    if isinstance(event, AccountModeChanged):
        return "ACCOUNT_CONFIG_UPDATE"
    return "listenKeyExpired"


def _order_event(u: OrderUpdate, price: Decimal | None, time_in_force: str) -> Json:
    return {
        "e": "ORDER_TRADE_UPDATE",
        "T": u.trade_time_ms,
        "E": u.event_time_ms,
        "o": {
            "s": u.symbol,
            "c": u.client_order_id,
            "S": u.side,
            "o": u.type,
            "f": time_in_force,
            "q": dec(u.orig_qty),
            "p": dec(price),
            "ap": dec(u.avg_price),
            "sp": "0",
            "x": u.execution,
            "X": u.status,
            "i": u.order_id,
            "l": dec(u.last_qty),
            "z": dec(u.cum_qty),
            "L": dec(u.last_price),
            "N": u.commission_asset,
            "n": dec(u.commission),
            "T": u.trade_time_ms,
            "t": u.trade_id,
            "b": "0",
            "a": "0",
            "m": u.is_maker,
            "R": u.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": u.type,
            "ps": "BOTH",
            "cp": False,
            "rp": dec(u.realized_pnl),
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
            "er": "0",
        },
    }


def _account_event(u: AccountUpdate, margin_type: str) -> Json:
    mt = "isolated" if margin_type == "ISOLATED" else "cross"
    rows: list[Json] = []
    for p in u.positions:
        if isinstance(p, ExchangePosition):
            rows.append({"s": p.symbol, "pa": dec(_signed_amount(p)), "ep": dec(p.entry_price),
                         "bep": dec(p.entry_price), "cr": "0", "up": dec(p.unrealized_pnl), "mt": mt,
                         "iw": "0", "ps": "BOTH"})
        else:
            rows.append({"s": p[0], "pa": "0", "ep": "0", "bep": "0", "cr": "0", "up": "0", "mt": mt,
                         "iw": "0", "ps": "BOTH"})
    balances = (
        [{"a": QUOTE, "wb": dec(u.wallet_balance), "cw": dec(u.wallet_balance),
          "bc": "0" if u.balance_change is None else dec(u.balance_change)}]
        if u.wallet_balance is not None
        else []
    )
    return {"e": "ACCOUNT_UPDATE", "T": u.event_time_ms, "E": u.event_time_ms,
            "a": {"m": u.reason, "B": balances, "P": rows}}


def _algo_event(u: AlgoUpdate, quantity: Decimal | None, close_position: bool, reduce_only: bool) -> Json:
    """``aq``: what the triggered order executed (``"0"`` until it did, as Binance writes it)."""
    return {
        "e": "ALGO_UPDATE",
        "T": u.event_time_ms,
        "E": u.event_time_ms,
        "o": {
            "caid": u.client_algo_id,
            "aid": u.algo_id,
            "at": "CONDITIONAL",
            "o": u.type,
            "s": u.symbol,
            "S": u.side,
            "ps": "BOTH",
            "f": "GTC",
            "q": dec(quantity),
            "X": u.status,
            "ai": str(u.actual_order_id) if u.actual_order_id is not None else "",
            "ap": "0",
            "aq": dec(u.executed_qty),
            "act": "0",
            "tp": dec(u.trigger_price),
            "p": "0",
            "V": "EXPIRE_MAKER",
            "wt": "CONTRACT_PRICE",
            "pm": "NONE",
            "cp": close_position,
            "pP": False,
            "R": reduce_only,
            "tt": 0,
            "gtd": 0,
            "rm": u.reject_reason,
        },
    }


def event_json(event: AccountEvent, *, listen_key: str = "", price: Decimal | None = None,
               time_in_force: str = "GTC", quantity: Decimal | None = None, close_position: bool = False,
               reduce_only: bool = False, margin_type: str = "CROSSED") -> Json:
    """One user-data event in Binance's shape (§3.6), ``E`` = event time, ``T`` = transaction time.

    The keyword arguments carry what the event dataclasses leave out and the order request said (limit
    price and TIF of an order; quantity and flags of an algo; the account's margin type); ``listen_key``
    is echoed by ``listenKeyExpired``.
    """
    if isinstance(event, OrderUpdate):
        return _order_event(event, price, time_in_force)
    if isinstance(event, AccountUpdate):
        return _account_event(event, margin_type)
    if isinstance(event, AlgoUpdate):
        return _algo_event(event, quantity, close_position, reduce_only)
    if isinstance(event, AccountModeChanged):
        return {"e": "ACCOUNT_CONFIG_UPDATE", "E": event.event_time_ms, "T": event.event_time_ms,
                "ai": {"j": event.multi_assets_margin}}
    assert isinstance(event, StreamExpired)
    return {"e": "listenKeyExpired", "E": event.event_time_ms, "listenKey": listen_key}
