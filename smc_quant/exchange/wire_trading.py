"""Binance USDT-M trading JSON → the venue-neutral broker values of ``smc_quant/orders/broker.py``.

Pure functions, no I/O (``BINANCE-PROTOCOL.md`` §3.3–3.6). Every number arrives as a string and
becomes a ``Decimal``; a missing or malformed field raises :class:`~smc_quant.errors.DataRejected`
with a short ``reason`` (``order_malformed``, ``algo_malformed``, ``position_malformed``,
``balance_malformed``, ``income_malformed``, ``account_config_malformed``, ``event_malformed``) that the caller
counts — a bad payload never crashes the stream or the broker.

Decisions worth knowing:

- ``parse_position`` returns ``None`` for ``positionAmt == 0`` (v3 lists symbols that only have a
  resting order); the sign of ``positionAmt`` gives LONG/SHORT, ``quantity`` is the absolute size.
- Liquidation statuses ``NEW_INSURANCE`` / ``NEW_ADL`` (``x == CALCULATED``) are not in our
  ``OrderStatus``: they map to ``FILLED`` when the cumulative quantity reaches the original
  quantity, else ``PARTIALLY_FILLED`` (the fill itself is what matters to the account).
- A liquidation's or an ADL's fill is on its ``x == CALCULATED`` event (``l > 0``; ``OrderUpdate.has_fill``); the
  same fill may come again as ``TRADE`` with the same trade id (the consumer counts it once).
- ``ALGO_UPDATE``'s ``aq`` (executed quantity) → ``AlgoUpdate.executed_qty``, ``None`` when absent (TRIGGERING):
  FINISHED with ``aq == 0`` means the order fired and executed nothing.
- A combined-stream envelope ``{"stream": …, "data": {…}}`` is unwrapped by ``parse_event``.
- ``TRADE_LITE``, ``MARGIN_CALL``, a leverage ``ACCOUNT_CONFIG_UPDATE`` (``ac``) and unknown event types →
  ``None`` (``TRADE_LITE`` duplicates ORDER_TRADE_UPDATE fills; counting it would double-count them). An
  ``ACCOUNT_CONFIG_UPDATE`` with ``ai`` (Multi-Assets Mode switched) → :class:`AccountModeChanged`.
- ``parse_balance`` reads the ``USDT`` row; a missing row is a ``DataRejected`` (``balance_no_usdt``).
- ``parse_income`` keeps the sign of ``income`` as Binance sends it (negative = paid) and every income type;
  the caller picks the types it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, cast, get_args

from smc_quant.domain.trading import ZERO, OrderSide, PositionSide
from smc_quant.errors import DataRejected
from smc_quant.orders.broker import (
    AccountConfig,
    AccountEvent,
    AccountModeChanged,
    AccountUpdate,
    AlgoState,
    AlgoStatus,
    AlgoType,
    AlgoUpdate,
    Balance,
    ExchangePosition,
    ExchangeTrade,
    IncomeRow,
    OrderState,
    OrderStatus,
    OrderUpdate,
    StreamExpired,
)

__all__ = [
    "IGNORED_EVENTS", "parse_account_config", "parse_algo", "parse_balance", "parse_commission_rate", "parse_event",
    "parse_flag", "parse_income", "parse_order", "parse_position", "parse_user_trade",
]

ORDER_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH",
                            "REJECTED"})
LIQUIDATION_STATUSES = frozenset({"NEW_INSURANCE", "NEW_ADL"})
ALGO_STATUSES = frozenset({"NEW", "CANCELED", "TRIGGERING", "TRIGGERED", "FINISHED", "REJECTED", "EXPIRED"})
ALGO_TYPES = frozenset(get_args(AlgoType))
SIDES = frozenset({"BUY", "SELL"})
IGNORED_EVENTS = frozenset({"TRADE_LITE", "MARGIN_CALL", "ACCOUNT_CONFIG_UPDATE", "STRATEGY_UPDATE",
                            "GRID_UPDATE", "CONDITIONAL_ORDER_TRIGGER_REJECT"})
"""Event types we know and deliberately drop (``parse_event`` → ``None``)."""


class _Fields:
    """Typed access to one JSON object; every failure is a ``DataRejected(reason, detail)``."""

    __slots__ = ("_obj", "_reason")

    def __init__(self, obj: object, reason: str) -> None:
        if not isinstance(obj, Mapping):
            raise DataRejected(reason, f"expected an object, got {type(obj).__name__}")
        self._obj: Mapping[str, Any] = obj
        self._reason = reason

    def raw(self, key: str) -> Any:
        if key not in self._obj:
            raise DataRejected(self._reason, f"missing {key!r}")
        return self._obj[key]

    def has(self, key: str) -> bool:
        return self._obj.get(key) is not None

    def str_(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise DataRejected(self._reason, f"{key!r} is not a string: {value!r}"[:200])
        return value

    def opt_str(self, key: str, default: str = "") -> str:
        value = self._obj.get(key)
        return value if isinstance(value, str) else default

    def dec(self, key: str) -> Decimal:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DataRejected(self._reason, f"{key!r} is not a decimal string: {value!r}"[:200])
        try:
            out = Decimal(value)
        except InvalidOperation:
            raise DataRejected(self._reason, f"{key!r} is not a decimal: {value!r}"[:200]) from None
        if not out.is_finite():
            raise DataRejected(self._reason, f"{key!r} is not finite: {value!r}"[:200])
        return out

    def opt_dec(self, key: str, default: Decimal = ZERO) -> Decimal:
        """A decimal that may be absent, null or empty (``"N"``/``"n"`` commission, ``"activatePrice": ""``)."""
        value = self._obj.get(key)
        if value is None or value == "":
            return default
        return self.dec(key)

    def int_(self, key: str) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.lstrip("-").isdigit():
                return int(value)
            raise DataRejected(self._reason, f"{key!r} is not an integer: {value!r}"[:200])
        return value

    def opt_int(self, key: str, default: int = 0) -> int:
        return default if self._obj.get(key) is None else self.int_(key)

    def bool_(self, key: str, default: bool | None = False) -> bool:
        """``true``/``false`` (or their strings); absent or null → ``default``, or rejected when that is ``None``."""
        value = self._obj.get(key)
        if value is None:
            if default is None:
                raise DataRejected(self._reason, f"missing {key!r}")
            return default
        if isinstance(value, bool):
            return value
        if value == "true" or value == "false":
            return bool(value == "true")
        raise DataRejected(self._reason, f"{key!r} is not a boolean: {value!r}"[:200])

    def side(self, key: str) -> OrderSide:
        value = self.str_(key)
        if value not in SIDES:
            raise DataRejected(self._reason, f"{key!r} is not BUY/SELL: {value!r}"[:200])
        return cast(OrderSide, value)


def _order_status(raw: str, cum: Decimal, orig: Decimal, reason: str) -> OrderStatus:
    if raw in ORDER_STATUSES:
        return cast(OrderStatus, raw)
    if raw in LIQUIDATION_STATUSES:
        return "FILLED" if cum >= orig else "PARTIALLY_FILLED"
    raise DataRejected(reason, f"unknown order status {raw!r}"[:200])


def _algo_status(raw: str, reason: str) -> AlgoStatus:
    if raw not in ALGO_STATUSES:
        raise DataRejected(reason, f"unknown algo status {raw!r}"[:200])
    return cast(AlgoStatus, raw)


def parse_order(payload: object) -> OrderState:
    """One order from ``POST/GET/DELETE /fapi/v1/order`` or an ``openOrders`` row (§3.3)."""
    f = _Fields(payload, "order_malformed")
    orig, executed = f.dec("origQty"), f.dec("executedQty")
    return OrderState(
        symbol=f.str_("symbol"),
        client_order_id=f.str_("clientOrderId"),
        order_id=f.int_("orderId"),
        status=_order_status(f.str_("status"), executed, orig, "order_malformed"),
        side=f.side("side"),
        type=f.str_("type"),
        orig_qty=orig,
        executed_qty=executed,
        avg_price=f.opt_dec("avgPrice"),
        reduce_only=f.bool_("reduceOnly"),
        update_time_ms=f.opt_int("updateTime"),
    )


def _algo_type(value: str, reason: str) -> AlgoType:
    if value not in ALGO_TYPES:
        raise DataRejected(reason, f"not a conditional order type: {value!r}"[:200])
    return cast(AlgoType, value)


def parse_algo(payload: object) -> AlgoState:
    """One conditional order from ``/fapi/v1/algoOrder`` or ``openAlgoOrders`` (§3.3).

    The type is ``orderType`` in the order responses and ``type`` in some listings; both are read.
    We place STOP_MARKET / TAKE_PROFIT_MARKET only, but every conditional type parses: a listing of the
    symbol's open algo orders must show a person's STOP, TAKE_PROFIT or trailing stop too. A trailing stop
    carries its ``callbackRate``, and its ``activatePrice`` as the trigger (``None`` without one); every other
    type needs its ``triggerPrice``. ``quantity`` is ``None`` with ``closePosition`` (or when absent/zero).
    """
    f = _Fields(payload, "algo_malformed")
    kind = _algo_type(f.str_("orderType") if f.has("orderType") else f.str_("type"), "algo_malformed")
    close = f.bool_("closePosition")
    qty = f.opt_dec("quantity")
    trailing = kind == "TRAILING_STOP_MARKET"
    trigger = (f.opt_dec("triggerPrice") or f.opt_dec("activatePrice") or None) if trailing else f.dec("triggerPrice")
    return AlgoState(
        symbol=f.str_("symbol"),
        client_algo_id=f.str_("clientAlgoId"),
        algo_id=f.int_("algoId"),
        status=_algo_status(f.str_("algoStatus"), "algo_malformed"),
        side=f.side("side"),
        type=kind,
        trigger_price=trigger,
        quantity=None if close or qty == 0 else qty,
        close_position=close,
        update_time_ms=f.opt_int("updateTime"),
        actual_order_id=_actual_order_id(f, "actualOrderId"),
        callback_rate=(f.opt_dec("callbackRate") or None) if trailing else None,
    )


def _actual_order_id(f: _Fields, key: str) -> int | None:
    """``actualOrderId`` / ``ai``: a positive id once the trigger placed its order; absent, null, ``""``, 0 — or
    anything not an id — before (an enrichment only: a value we cannot read never costs the row or the event)."""
    value = f.raw(key) if f.has(key) else None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_position(payload: object) -> ExchangePosition | None:
    """One ``GET /fapi/v2|v3/positionRisk`` row; ``None`` when flat (``positionAmt == 0``).

    v2 carries ``leverage`` (as a string); v3 does not (0 then). Hedge-mode rows parse too: the side
    comes from the sign of ``positionAmt``, which agrees with ``positionSide`` there.
    """
    f = _Fields(payload, "position_malformed")
    amount = f.dec("positionAmt")
    symbol = f.str_("symbol")
    if amount == 0:
        return None
    side: PositionSide = "LONG" if amount > 0 else "SHORT"
    leverage = f.opt_dec("leverage")
    return ExchangePosition(
        symbol=symbol,
        side=side,
        quantity=abs(amount),
        entry_price=f.dec("entryPrice"),
        mark_price=f.opt_dec("markPrice"),
        unrealized_pnl=f.opt_dec("unRealizedProfit"),
        liquidation_price=f.opt_dec("liquidationPrice"),
        leverage=int(leverage),
        update_time_ms=f.opt_int("updateTime"),
    )


def parse_balance(payload: object, asset: str = "USDT") -> Balance:
    """The ``asset`` row of ``GET /fapi/v2|v3/balance``: ``balance``, ``crossUnPnl``, ``availableBalance``."""
    if not isinstance(payload, Sequence) or isinstance(payload, str | bytes):
        raise DataRejected("balance_malformed", f"expected a list, got {type(payload).__name__}")
    for row in payload:
        f = _Fields(row, "balance_malformed")
        if f.opt_str("asset") == asset:
            return Balance(wallet=f.dec("balance"), unrealized_pnl=f.opt_dec("crossUnPnl"),
                           available=f.dec("availableBalance"))
    raise DataRejected("balance_no_usdt", f"no {asset} row among {len(payload)}")


def parse_income(payload: object) -> IncomeRow:
    """One ``GET /fapi/v1/income`` row: ``incomeType``, signed ``income`` (positive = received), ``asset``,
    ``time``, ``tranId``; ``symbol`` may be empty (a TRANSFER). ``info`` and ``tradeId`` are not kept."""
    f = _Fields(payload, "income_malformed")
    return IncomeRow(
        symbol=f.opt_str("symbol"),
        income_type=f.str_("incomeType"),
        income=f.dec("income"),
        asset=f.str_("asset"),
        time_ms=f.int_("time"),
        tran_id=f.int_("tranId"),
    )


def parse_user_trade(payload: object) -> ExchangeTrade:
    """One ``GET /fapi/v1/userTrades`` row: ``id``, ``orderId``, ``side``, ``qty``, ``price``, ``commission`` (paid,
    positive) in ``commissionAsset``, ``realizedPnl``, ``time``, ``maker``."""
    f = _Fields(payload, "trade_malformed")
    return ExchangeTrade(
        symbol=f.str_("symbol"),
        trade_id=f.int_("id"),
        order_id=f.int_("orderId"),
        side=f.side("side"),
        quantity=f.dec("qty"),
        price=f.dec("price"),
        commission=f.dec("commission"),
        commission_asset=f.str_("commissionAsset"),
        realized_pnl=f.dec("realizedPnl"),
        time_ms=f.int_("time"),
        is_maker=f.bool_("maker"),
    )


def _order_update(f: _Fields, o: _Fields) -> OrderUpdate:
    orig, cum = o.dec("q"), o.dec("z")
    return OrderUpdate(
        symbol=o.str_("s"),
        client_order_id=o.str_("c"),
        order_id=o.int_("i"),
        side=o.side("S"),
        type=o.str_("o"),
        execution=o.str_("x"),
        status=_order_status(o.str_("X"), cum, orig, "event_malformed"),
        orig_qty=orig,
        last_qty=o.dec("l"),
        last_price=o.opt_dec("L"),
        cum_qty=cum,
        avg_price=o.opt_dec("ap"),
        commission=o.opt_dec("n"),
        commission_asset=o.opt_str("N", "USDT"),
        realized_pnl=o.opt_dec("rp"),
        reduce_only=o.bool_("R"),
        is_maker=o.bool_("m"),
        trade_id=o.opt_int("t"),
        event_time_ms=f.int_("E"),
        trade_time_ms=o.opt_int("T"),
    )


def _account_position(p: _Fields) -> ExchangePosition | tuple[str, None]:
    symbol, amount = p.str_("s"), p.dec("pa")
    if amount == 0:
        return (symbol, None)
    return ExchangePosition(
        symbol=symbol,
        side="LONG" if amount > 0 else "SHORT",
        quantity=abs(amount),
        entry_price=p.dec("ep"),
        unrealized_pnl=p.opt_dec("up"),
    )


def _account_update(f: _Fields, asset: str) -> AccountUpdate:
    a = _Fields(f.raw("a"), "event_malformed")
    balances = a.raw("B") if a.has("B") else []
    positions = a.raw("P") if a.has("P") else []
    if not isinstance(balances, list) or not isinstance(positions, list):
        raise DataRejected("event_malformed", "ACCOUNT_UPDATE B/P are not lists")
    wallet: Decimal | None = None
    change: Decimal | None = None
    for row in balances:
        b = _Fields(row, "event_malformed")
        if b.str_("a") == asset:
            wallet, change = b.dec("wb"), (b.dec("bc") if b.has("bc") else None)
    return AccountUpdate(
        reason=a.str_("m"),
        wallet_balance=wallet,
        positions=tuple(_account_position(_Fields(row, "event_malformed")) for row in positions),
        event_time_ms=f.int_("E"),
        balance_change=change,
    )


def _algo_update(f: _Fields, o: _Fields) -> AlgoUpdate:
    return AlgoUpdate(
        symbol=o.str_("s"),
        client_algo_id=o.str_("caid"),
        algo_id=o.int_("aid"),
        status=_algo_status(o.str_("X"), "event_malformed"),
        side=o.side("S"),
        type=o.str_("o"),
        trigger_price=o.dec("tp"),
        event_time_ms=f.int_("E"),
        reject_reason=o.opt_str("rm"),
        executed_qty=o.opt_dec("aq") if o.has("aq") else None,
        actual_order_id=_actual_order_id(o, "ai"),
    )


def parse_account_config(body: object) -> AccountConfig:
    """``GET /fapi/v1/accountConfig`` → :class:`AccountConfig`: both modes are required, ``canTrade`` and
    ``feeTier`` optional (``account_config_malformed``)."""
    f = _Fields(body, "account_config_malformed")
    return AccountConfig(
        dual_side_position=f.bool_("dualSidePosition", None),
        multi_assets_margin=f.bool_("multiAssetsMargin", None),
        can_trade=f.bool_("canTrade", None) if f.has("canTrade") else None,
        fee_tier=f.int_("feeTier") if f.has("feeTier") else None,
    )


def parse_flag(body: object, key: str) -> bool:
    """The one boolean of ``GET /fapi/v1/positionSide/dual`` (``dualSidePosition``), ``GET
    /fapi/v1/multiAssetsMargin`` (``multiAssetsMargin``) or ``GET /fapi/v1/feeBurn`` (``feeBurn``)
    (``account_config_malformed``)."""
    return _Fields(body, "account_config_malformed").bool_(key, None)


def parse_commission_rate(body: object) -> tuple[Decimal, Decimal]:
    """``GET /fapi/v1/commissionRate``: the account's (maker, taker) rates, fractions of the notional
    (``account_config_malformed``; a rate outside [0, 1) is refused the same way)."""
    f = _Fields(body, "account_config_malformed")
    maker, taker = f.dec("makerCommissionRate"), f.dec("takerCommissionRate")
    if not (0 <= maker < 1 and 0 <= taker < 1):
        raise DataRejected("account_config_malformed", f"commission rates out of range: {maker}, {taker}")
    return maker, taker


def _account_config_update(f: _Fields) -> AccountModeChanged | None:
    if not f.has("ai"):
        return None  # ``ac``: a symbol's leverage changed (we set it ourselves before each entry)
    return AccountModeChanged(multi_assets_margin=_Fields(f.raw("ai"), "event_malformed").bool_("j", None),
                              event_time_ms=f.int_("E"))


def parse_event(payload: object, asset: str = "USDT") -> AccountEvent | None:
    """One user-data frame (§3.6) → an account event, or ``None`` for event types we do not use.

    ORDER_TRADE_UPDATE → :class:`OrderUpdate`, ACCOUNT_UPDATE → :class:`AccountUpdate` (the
    ``asset`` wallet balance, or ``None`` when the frame has no such row, e.g. a BNFCR-only update),
    ALGO_UPDATE → :class:`AlgoUpdate`, listenKeyExpired → :class:`StreamExpired`, ACCOUNT_CONFIG_UPDATE with
    ``ai`` → :class:`AccountModeChanged` (with ``ac``: ``None``). ``ALGO_UPDATE`` keeps
    every order type (TAKE_PROFIT included) so a foreign algo order is still visible to reconciliation.
    """
    if isinstance(payload, Mapping) and "e" not in payload and isinstance(payload.get("data"), Mapping):
        payload = payload["data"]
    f = _Fields(payload, "event_malformed")
    kind = f.str_("e")
    if kind == "ORDER_TRADE_UPDATE":
        return _order_update(f, _Fields(f.raw("o"), "event_malformed"))
    if kind == "ACCOUNT_UPDATE":
        return _account_update(f, asset)
    if kind == "ALGO_UPDATE":
        return _algo_update(f, _Fields(f.raw("o"), "event_malformed"))
    if kind == "listenKeyExpired":
        return StreamExpired(event_time_ms=f.int_("E"))
    if kind == "ACCOUNT_CONFIG_UPDATE":
        return _account_config_update(f)
    return None
