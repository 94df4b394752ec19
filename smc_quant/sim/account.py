"""``SimAccount``: one simulated Binance USDT-M futures account (one-way mode), as a pure matching engine.

Used by the emulator (served over the Binance wire protocol), the paper broker (in process) and the
backtest (directly). Pure: no clock, no I/O — every call takes ``time_ms`` and prices arrive through
:meth:`SimAccount.on_price`, which is also the mark price. Money is Decimal throughout; order, algo
and trade ids are counters, so a run is deterministic. Formulas and simplifications: ``docs/sim.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import Literal, get_args

from smc_quant.domain.trading import ZERO, Fill, OrderSide
from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.orders.broker import (
    AccountEvent,
    AccountUpdate,
    AlgoState,
    AlgoType,
    Balance,
    ExchangePosition,
    IncomeRow,
    OrderState,
)
from smc_quant.orders.fees import BNB, QUOTE
from smc_quant.orders.filters import ceil_to_step, floor_to_step
from smc_quant.sim.book import OrderBook
from smc_quant.sim.income import FUNDING_FEE, IncomeLedger
from smc_quant.sim.ledger import apply_fill, liquidation_price, opening_qty, to_usdt
from smc_quant.sim.records import AlgoRecord, OrderRecord, triggers
from smc_quant.sim.rejections import SimRejected
from smc_quant.sim.validation import (
    check_client_id,
    check_notional,
    check_price,
    check_quantity,
    check_side,
    check_trailing,
    check_trigger,
)

__all__ = ["DUPLICATE_CLIENT_ID", "SimAccount", "SimConfig", "SimRejected"]

CONDITIONAL_TYPES = frozenset(get_args(AlgoType))
TRIGGER_TYPES: frozenset[str] = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX"})
MARGIN_TYPES = frozenset({"CROSSED", "ISOLATED"})
DUPLICATE_CLIENT_ID = -4116
"""Binance's DUPLICATED_CLIENT_ORDER_ID (``reactions.py``: query first); -4015 is a malformed id."""
_BPS = Decimal(10000)
BNB_STEP = Decimal("1e-8")
"""BNB balances and commissions are kept to 8 places."""


@dataclass(frozen=True)
class SimConfig:
    """Account parameters: starting wallet (USDT), fee rates, MARKET slippage, default leverage, margin type."""

    balance: Decimal = Decimal("10000")
    taker_fee: Decimal = Decimal("0.0005")
    maker_fee: Decimal = Decimal("0.0002")
    slippage_bps: Decimal = Decimal("1")
    default_leverage: int = 20
    margin_type: str = "CROSSED"
    bnb_discount: Decimal = Decimal("0.1")
    """With :attr:`SimAccount.fee_burn` on, commissions are charged in BNB at this discount (Binance: 10 %)."""
    trigger_ids: Literal["client_algo_id", "exchange"] = "client_algo_id"
    """The client order id of the MARKET order a trigger places: our ``clientAlgoId``, or one the exchange makes up
    (``exchange``; Binance does not document which, so the client must cope with both: it finds the order by its
    ``actualOrderId``)."""


@dataclass(slots=True)
class _Position:
    amount: Decimal
    entry: Decimal
    time_ms: int


class SimAccount:
    """A simulated USDT-M account: orders, conditional orders, one-way positions, cross margin, liquidation.

    Every mutating call returns the account events it produced, in exchange order (``OrderUpdate``,
    ``AccountUpdate`` with reason ``ORDER`` after each fill, ``AlgoUpdate``); refusals raise
    :class:`SimRejected` with Binance's code and change nothing.
    """

    def __init__(self, filters: Mapping[str, SymbolFilters], brackets: Mapping[str, SymbolBrackets],
                 config: SimConfig = SimConfig()) -> None:
        self._filters = dict(filters)
        self._brackets = dict(brackets)
        self._config = config
        self._wallet = config.balance
        self._prices: dict[str, Decimal] = {}
        self._positions: dict[str, _Position] = {}
        self._leverage: dict[str, int] = {}
        self._margin_type: dict[str, str] = {}
        self._book = OrderBook()
        self._next_trade_id = 1
        self._order_log: list[str] = []
        self._fills: list[Fill] = []
        self._income = IncomeLedger()
        self.fee_burn = False
        """BNB Fee Discount: commissions are charged in BNB (priced by ``BNBUSDT``) while the BNB balance lasts."""
        self.bnb_balance = ZERO

    # -- prices -------------------------------------------------------------------------------------

    def on_price(self, symbol: str, price: Decimal, time_ms: int, *, gap: bool = False) -> list[AccountEvent]:
        """A new last price of ``symbol`` (also its mark price); returns the events it caused, in order.

        First the symbol's algo orders whose condition holds trigger (a MARKET order at the trigger
        price, or at ``price`` when ``gap`` says the price jumped there without trading in between),
        then resting LIMIT orders the price reached fill at their limit, then — if the symbol has a
        position — the account is checked for liquidation. Cost: O(orders on the symbol), plus
        O(positions) for the liquidation check.
        """
        if not price.is_finite() or price <= 0:
            raise ValueError(f"{symbol}: price {price} is not a positive number")
        self._prices[symbol] = price
        events: list[AccountEvent] = []
        for algo in self._book.open_algos(symbol):
            if algo.triggers_at(price):
                events += self._trigger(algo, price, time_ms, gap=gap)
        for order in self._book.resting(symbol):
            assert order.price is not None
            if (price <= order.price) if order.side == "BUY" else (price >= order.price):
                events += self._fill_resting(order, time_ms)
        if symbol in self._positions:
            events += self._check_liquidation(time_ms)
        return events

    def set_filters(self, filters: Mapping[str, SymbolFilters]) -> None:
        """New or changed trading filters for these symbols (exchangeInfo changed: a listing, a new tick or step
        size); the others keep theirs. A new symbol without brackets gets none here: :meth:`set_brackets`."""
        self._filters.update(filters)

    def set_brackets(self, brackets: Mapping[str, SymbolBrackets]) -> None:
        """New leverage brackets for these symbols (the exchange changed them); the others keep theirs."""
        self._brackets.update(brackets)

    def last_price(self, symbol: str) -> Decimal | None:
        """The last price seen for ``symbol``, if any."""
        return self._prices.get(symbol)

    def settle_funding(self, symbol: str, rate: Decimal, time_ms: int) -> tuple[Decimal, list[AccountEvent]]:
        """Funding at ``time_ms``: the position pays ``amount × mark × rate`` (signed amount: a long pays a
        positive rate, a short receives it), rounded to USDT places; the wallet moves by minus that. Returns
        (payment, events): an ``AccountUpdate`` with reason ``FUNDING_FEE``, the wallet and its change ``bc``
        and no position (as Binance sends it for cross margin), then any liquidation the payment caused. No
        position: (0, []). A non-zero payment is booked in the income history (:meth:`funding_income`) as
        ``−payment`` at ``time_ms``."""
        if not rate.is_finite():
            raise ValueError(f"{symbol}: funding rate {rate} is not a number")
        held = self._positions.get(symbol)
        if held is None:
            return ZERO, []
        payment = to_usdt(held.amount * self._mark(symbol) * rate)
        self._wallet -= payment
        if payment != 0:
            self._income.record(symbol, FUNDING_FEE, -payment, time_ms)
        events: list[AccountEvent] = [AccountUpdate("FUNDING_FEE", self._wallet, (), time_ms, -payment)]
        return payment, events + self._check_liquidation(time_ms)

    # -- orders -------------------------------------------------------------------------------------

    def new_order(self, *, symbol: str, side: str, type: str, quantity: Decimal | None, time_ms: int,
                  client_order_id: str | None = None, price: Decimal | None = None, reduce_only: bool = False,
                  time_in_force: str = "GTC") -> tuple[OrderState, list[AccountEvent]]:
        """Place a MARKET or LIMIT order (``POST /fapi/v1/order``); the state returned is after matching.

        MARKET fills at once at ``last × (1 ± slippage)`` on the tick away from the taker, taker fee.
        LIMIT that crosses the last price fills at once as taker (at the better of limit and slipped
        price; GTX is refused with -5022); otherwise GTC/GTX rest, IOC/FOK expire.
        """
        f = self._symbol_filters(symbol)
        order_side = check_side(side)
        if type in CONDITIONAL_TYPES:
            raise SimRejected(-4120, f"type {type}")
        if type not in ("MARKET", "LIMIT"):
            raise SimRejected(-1116, f"type {type!r}")
        if client_order_id is not None:
            check_client_id(client_order_id)
            if self._book.open_order(symbol, client_order_id) is not None:
                raise SimRejected(DUPLICATE_CLIENT_ID, f"{client_order_id} is already open on {symbol}")
        mark = self._mark(symbol)
        sign = 1 if order_side == "BUY" else -1
        if type == "MARKET":
            if price is not None:
                raise SimRejected(-1106, "price sent with a MARKET order")
            qty = check_quantity(quantity, f.market_step_size, f.market_min_qty, f.market_max_qty)
            fill_price = self._slipped(symbol, mark, order_side)
            if not mark * f.percent_down <= fill_price <= mark * f.percent_up:
                raise SimRejected(-4131, f"fill {fill_price} outside the band around mark {mark}")
            ref = mark
        else:
            if time_in_force not in TIME_IN_FORCE:
                raise SimRejected(-1115, f"timeInForce {time_in_force!r}")
            qty = check_quantity(quantity, f.step_size, f.min_qty, f.max_qty)
            limit = check_price(price, f, mark)
            ref = limit
            crosses = (mark <= limit) if sign > 0 else (mark >= limit)
            if crosses and time_in_force == "GTX":
                raise SimRejected(-5022, f"limit {limit} crosses last {mark}")
            slipped = self._slipped(symbol, mark, order_side)
            fill_price = min(limit, slipped) if sign > 0 else max(limit, slipped)
        check_notional(qty, ref, f, reduce_only=reduce_only)
        amount = self._amount(symbol)
        if reduce_only and (amount == 0 or (amount > 0) == (sign > 0)):
            raise SimRejected(-2022, f"{side} reduce-only against position {amount}")
        opening = ZERO if reduce_only else opening_qty(amount, sign * qty)
        self._check_margin(symbol, amount, sign * qty, opening, fill_price if type == "MARKET" else ref)
        order = self._book.add_order(symbol, client_order_id, order_side, type, qty, price, reduce_only,
                                     time_in_force, time_ms)
        self._order_log.append(order.client_order_id)
        events: list[AccountEvent] = [order.update("NEW", time_ms)]
        if type == "MARKET" or crosses:
            fill_qty = min(qty, abs(amount)) if reduce_only else qty
            events += self._fill(order, fill_price, is_maker=False, time_ms=time_ms, quantity=fill_qty)
        elif time_in_force in ("IOC", "FOK"):
            order.status = "EXPIRED"
            events.append(order.update("EXPIRED", time_ms))
        else:
            order.margin = opening * ref / self.leverage(symbol)
            self._book.rest(order)
        return order.state(), events

    def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None,
                     time_ms: int) -> tuple[OrderState, list[AccountEvent]]:
        """Cancel an open order (``DELETE /fapi/v1/order``); unknown or no longer open → -2011."""
        order = self._find_order(symbol, client_order_id, order_id, missing=-2011)
        if not self._book.is_resting(order):
            raise SimRejected(-2011, f"order {order.order_id} is {order.status}")
        self._book.unrest(order, "CANCELED", time_ms)
        return order.state(), [order.update("CANCELED", time_ms)]

    def query_order(self, symbol: str, *, client_order_id: str | None = None,
                    order_id: int | None = None) -> OrderState:
        """The order by id or client id (the latest order that carried it); unknown → -2013."""
        return self._find_order(symbol, client_order_id, order_id, missing=-2013).state()

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Resting orders of ``symbol`` (or of every symbol), oldest first."""
        return [o.state() for o in self._book.resting(symbol)]

    # -- algo orders --------------------------------------------------------------------------------

    def new_algo(self, *, symbol: str, side: str, type: str, trigger_price: Decimal | None, time_ms: int,
                 client_algo_id: str | None = None, quantity: Decimal | None = None, close_position: bool = False,
                 reduce_only: bool = False, working_type: str = "CONTRACT_PRICE",
                 callback_rate: Decimal | None = None) -> tuple[AlgoState, list[AccountEvent]]:
        """Place a STOP_MARKET / TAKE_PROFIT_MARKET or a TRAILING_STOP_MARKET (``POST /fapi/v1/algoOrder``).

        Refused with -2021 when it would trigger at the current price. ``close_position`` needs an
        open position (-2022) and takes no quantity nor reduce-only (-1106). Both working types watch
        the last price (the simulator's mark price is the last price).

        A trailing stop takes a ``callback_rate`` of 0.1–10 (percent, -1130 outside) and a quantity (never
        ``close_position``); its ``trigger_price`` is the optional activation price, which must lie beyond the
        last price in the direction of the order's reference (above it for a SELL), else -2021. It fills at the
        price that fired it.
        """
        f = self._symbol_filters(symbol)
        algo_side = check_side(side)
        trailing = type == "TRAILING_STOP_MARKET"
        if type not in TRIGGER_TYPES and not trailing:
            raise SimRejected(-1116, f"algo type {type!r} (simulated: STOP_MARKET, TAKE_PROFIT_MARKET, "
                                     "TRAILING_STOP_MARKET)")
        kind: AlgoType = "STOP_MARKET" if type == "STOP_MARKET" else (
            "TRAILING_STOP_MARKET" if trailing else "TAKE_PROFIT_MARKET")
        if working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise SimRejected(-1102, f"workingType {working_type!r}")
        if client_algo_id is not None:
            check_client_id(client_algo_id)
            if self._book.open_algo(client_algo_id) is not None:
                raise SimRejected(DUPLICATE_CLIENT_ID, f"algo {client_algo_id} is already open")
        trigger = check_trailing(callback_rate, trigger_price, f, close_position) if trailing else (
            check_trigger(trigger_price, f))
        if close_position:
            if quantity is not None or reduce_only:
                raise SimRejected(-1106, "quantity / reduceOnly sent with closePosition")
            if self._amount(symbol) == 0:
                raise SimRejected(-2022, f"closePosition without a position on {symbol}")
        else:
            qty = check_quantity(quantity, f.market_step_size, f.market_min_qty, f.market_max_qty)
            check_notional(qty, self._mark(symbol) if trigger is None else trigger, f, reduce_only=reduce_only)
        # a trailing SELL activates when the price rises to its activation price: one at or below the price is -2021
        watched = "TAKE_PROFIT_MARKET" if trailing else kind
        if trigger is not None and triggers(watched, algo_side, trigger, self._mark(symbol)):
            raise SimRejected(-2021, f"{side} {type} trigger {trigger} vs last {self._prices[symbol]}")
        algo = self._book.add_algo(symbol, client_algo_id, algo_side, kind, trigger, quantity, close_position,
                                   reduce_only, working_type, time_ms, callback_rate if trailing else None)
        if trailing and trigger is None:
            algo.extreme = self._mark(symbol)  # no activation price: it follows the price from now
        self._order_log.append(algo.client_algo_id)
        return algo.state(), [algo.move("NEW", time_ms)]

    def cancel_algo(self, *, symbol: str | None = None, client_algo_id: str | None = None,
                    algo_id: int | None = None, time_ms: int) -> tuple[AlgoState, list[AccountEvent]]:
        """Cancel an open algo order; unknown, on another symbol, or no longer open → -2011."""
        algo = self._find_algo(client_algo_id, algo_id, missing=-2011)
        if (symbol is not None and algo.symbol != symbol) or not self._book.is_open_algo(algo):
            raise SimRejected(-2011, f"algo {algo.algo_id} is {algo.status} on {algo.symbol}")
        self._book.close_algo(algo)
        event = algo.move("CANCELED", time_ms)
        return algo.state(), [event]

    def query_algo(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> AlgoState:
        """The algo order by id or client id (the latest that carried it); unknown → -2013."""
        return self._find_algo(client_algo_id, algo_id, missing=-2013).state()

    def open_algo_orders(self, symbol: str | None = None) -> list[AlgoState]:
        """Untriggered algo orders of ``symbol`` (or of every symbol), oldest first."""
        return [a.state() for a in self._book.open_algos(symbol)]

    # -- account ------------------------------------------------------------------------------------

    def set_leverage(self, symbol: str, leverage: int) -> tuple[int, Decimal]:
        """Set the symbol's leverage; returns ``(leverage, maxNotionalValue)``.

        -4028 outside ``1..max bracket leverage``; -2027 when the open position is above the new cap.
        """
        brackets = self._symbol_brackets(symbol)
        top = max(b.max_leverage for b in brackets.tiers)
        if isinstance(leverage, bool) or not isinstance(leverage, int) or not 1 <= leverage <= top:
            raise SimRejected(-4028, f"leverage {leverage!r} outside 1..{top} for {symbol}")
        cap = brackets.max_notional(leverage)
        position = self._positions.get(symbol)
        if position is not None and abs(position.amount) * self._prices[symbol] > cap:
            raise SimRejected(-2027, f"position notional above {cap} at leverage {leverage}")
        self._leverage[symbol] = leverage
        return leverage, cap

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """Record CROSSED / ISOLATED (-4044 other, -4046 unchanged, -4048 with a position or open orders).

        The simulator computes margin as cross for both (``docs/sim.md``).
        """
        self._symbol_filters(symbol)
        if margin_type not in MARGIN_TYPES:
            raise SimRejected(-4044, f"margin type {margin_type!r}")
        if margin_type == self._margin_type.get(symbol, self._config.margin_type):
            raise SimRejected(-4046, f"{symbol} is already {margin_type}")
        if symbol in self._positions or self._book.has_resting(symbol):
            raise SimRejected(-4048, f"{symbol} has a position or open orders")
        self._margin_type[symbol] = margin_type

    def margin_type(self, symbol: str) -> str:
        """The symbol's margin type (the config default until changed)."""
        return self._margin_type.get(symbol, self._config.margin_type)

    def leverage(self, symbol: str) -> int:
        """The symbol's leverage: as set, else ``min(default_leverage, highest bracket leverage)``."""
        if symbol in self._leverage:
            return self._leverage[symbol]
        top = max(b.max_leverage for b in self._symbol_brackets(symbol).tiers)
        return min(self._config.default_leverage, top)

    def restore(self, wallet: Decimal, positions: Mapping[str, tuple[Decimal, Decimal, int, int]]) -> None:
        """Start from a known state instead of the configured balance: ``wallet`` and, by symbol, open positions
        ``(signed amount, entry price, leverage, open time ms)``; no open orders. For a paper account rebuilt
        from the database after a restart (the caller re-places the protection). A position's mark is the
        symbol's last price if one arrived, else its entry. Only on an account that has not traded."""
        if self._positions or self._fills or self.open_algo_orders() or self.open_orders():
            raise ValueError("restore needs an account that has not traded yet")
        if not wallet.is_finite():
            raise ValueError(f"wallet {wallet} is not a number")
        for symbol, (amount, entry, leverage, _) in positions.items():
            if symbol not in self._filters or symbol not in self._brackets:
                raise ValueError(f"{symbol}: unknown symbol")
            if amount == 0 or not entry.is_finite() or entry <= 0 or leverage < 1:
                raise ValueError(f"{symbol}: bad position {amount} @ {entry} x{leverage}")
        for symbol, (amount, entry, leverage, time_ms) in positions.items():
            self._positions[symbol] = _Position(amount, entry, time_ms)
            self._leverage[symbol] = leverage
            self._prices.setdefault(symbol, entry)
        self._wallet = wallet

    def positions(self) -> list[ExchangePosition]:
        """Non-zero positions by symbol, with mark, unrealised PnL, liquidation price and leverage."""
        maint = {s: self._maintenance(s, p) for s, p in self._positions.items()}
        unreal = {s: self._unrealized(s, p) for s, p in self._positions.items()}
        total_mm, total_up = sum(maint.values(), ZERO), sum(unreal.values(), ZERO)
        out = []
        for symbol in sorted(self._positions):
            p = self._positions[symbol]
            lp = liquidation_price(p.amount, p.entry, self._brackets[symbol], wallet=self._wallet,
                                   other_maintenance=total_mm - maint[symbol],
                                   other_unrealized=total_up - unreal[symbol], mark=self._prices[symbol])
            out.append(self._exchange_position(symbol, p, liquidation=lp))
        return out

    def balance(self) -> Balance:
        """Wallet, unrealised PnL and available balance (cross: wallet + unrealised − IM − open-order margin)."""
        return Balance(self._wallet, self._total_unrealized(), self._available())

    @property
    def order_log(self) -> list[str]:
        """Client ids of every accepted order and algo order, in acceptance order (triggers not included)."""
        return list(self._order_log)

    @property
    def fills(self) -> list[Fill]:
        """Every fill, in order (including triggered and liquidation orders)."""
        return list(self._fills)

    def funding_income(self, symbol: str | None = None, *, start_ms: int | None = None, end_ms: int | None = None,
                       limit: int | None = None) -> list[IncomeRow]:
        """The ``FUNDING_FEE`` income rows (``GET /fapi/v1/income``) of ``symbol`` (``None``: all) with
        ``start_ms ≤ time ≤ end_ms``, oldest first, at most ``limit`` (the oldest): ``income`` is minus the
        payment (positive = received), ``tran_id`` a counter from 1. A copy: the ledger cannot be changed."""
        return self._income.rows(income_type=FUNDING_FEE, symbol=symbol, start_ms=start_ms, end_ms=end_ms,
                                 limit=limit)

    # -- matching -----------------------------------------------------------------------------------

    def _fill(self, order: OrderRecord, price: Decimal, *, is_maker: bool, time_ms: int,
              quantity: Decimal | None = None, execution: str = "TRADE") -> list[AccountEvent]:
        """Execute ``quantity`` (default: the whole order) at ``price``: position, wallet, fill, events (the fill on
        an ``execution`` event: TRADE, or CALCULATED for a liquidation)."""
        qty = order.quantity if quantity is None else quantity
        symbol = order.symbol
        held = self._positions.get(symbol)
        effect = apply_fill(held.amount if held else ZERO, held.entry if held else ZERO, order.sign * qty, price)
        fee = to_usdt((self._config.maker_fee if is_maker else self._config.taker_fee) * qty * price)
        in_bnb = self._charge_bnb(fee)
        realized = to_usdt(effect.realized_pnl)
        self._wallet += realized - (fee if in_bnb is None else ZERO)
        if effect.amount == 0:
            self._positions.pop(symbol, None)
        else:
            self._positions[symbol] = _Position(effect.amount, effect.entry_price, time_ms)
        order.executed, order.avg_price, order.status, order.time_ms = qty, price, "FILLED", time_ms
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        paid = fee if in_bnb is None else in_bnb * self._prices[BNB + QUOTE]  # the record's fee is in USDT
        self._fills.append(Fill(symbol, order.client_order_id, order.side, qty, price, paid, time_ms,
                                realized, trade_id, order.order_id, is_maker))
        position = self._positions.get(symbol)
        changed = self._exchange_position(symbol, position) if position else (symbol, None)
        commission = (fee, QUOTE) if in_bnb is None else (in_bnb, BNB)
        return [order.update(execution, time_ms, last_qty=qty, last_price=price, commission=commission,
                             realized_pnl=realized, is_maker=is_maker, trade_id=trade_id),
                AccountUpdate("ORDER", self._wallet, (changed,), time_ms)]

    def _charge_bnb(self, fee: Decimal) -> Decimal | None:
        """With :attr:`fee_burn` on and ``BNBUSDT`` priced: ``fee`` less the discount, in BNB (8 places, rounded
        up), taken from the BNB balance; ``None`` (the fee is charged in USDT) when off, unpriced or not covered."""
        price = self._prices.get(BNB + QUOTE)
        if not self.fee_burn or price is None or fee <= 0:
            return None
        amount = (fee * (1 - self._config.bnb_discount) / price).quantize(BNB_STEP, ROUND_UP)
        if amount > self.bnb_balance:
            return None
        self.bnb_balance -= amount
        return amount

    def _fill_resting(self, order: OrderRecord, time_ms: int) -> list[AccountEvent]:
        """A resting LIMIT the price reached: fill at its limit as maker (reduce-only: up to the position)."""
        assert order.price is not None
        qty = order.quantity
        if order.reduce_only:
            amount = self._amount(order.symbol)
            if amount == 0 or (amount > 0) == (order.sign > 0):
                self._book.unrest(order, "EXPIRED", time_ms)
                return [order.update("EXPIRED", time_ms)]
            qty = min(qty, abs(amount))
        self._book.unrest(order, None, time_ms)
        return self._fill(order, order.price, is_maker=True, time_ms=time_ms, quantity=qty)

    def _trigger(self, algo: AlgoRecord, price: Decimal, time_ms: int, *, gap: bool) -> list[AccountEvent]:
        """Fire one algo order: TRIGGERED, then its MARKET order fills and FINISHED — or REJECTED."""
        self._book.close_algo(algo)
        amount = self._amount(algo.symbol)
        sign = 1 if algo.side == "BUY" else -1
        reducing = algo.close_position or algo.reduce_only
        if reducing and (amount == 0 or (amount > 0) == (sign > 0)):
            return [algo.move("TRIGGERED", time_ms), algo.move("REJECTED", time_ms, "Reduce Only reject")]
        base = price if gap or algo.trigger_price is None or algo.callback_rate is not None else algo.trigger_price
        fill_price = self._slipped(algo.symbol, base, algo.side)
        if algo.close_position:
            qty = abs(amount)
        else:
            assert algo.quantity is not None
            qty = min(algo.quantity, abs(amount)) if reducing else algo.quantity
        if not reducing:
            try:
                self._check_margin(algo.symbol, amount, sign * qty, opening_qty(amount, sign * qty), fill_price)
            except SimRejected as exc:
                return [algo.move("TRIGGERED", time_ms), algo.move("REJECTED", time_ms, str(exc))]
        cid = (algo.client_algo_id if self._config.trigger_ids == "client_algo_id"
               else f"algo{algo.algo_id}-{self._book.next_order_id}")
        order = self._book.add_order(algo.symbol, cid, algo.side, "MARKET", qty, None, reducing, "GTC", time_ms)
        algo.actual_order_id = order.order_id  # in the matching engine: TRIGGERED names it (``ai``)
        events: list[AccountEvent] = [algo.move("TRIGGERED", time_ms), order.update("NEW", time_ms)]
        events += self._fill(order, fill_price, is_maker=False, time_ms=time_ms)
        events.append(algo.move("FINISHED", time_ms, executed=qty))
        return events

    def _check_liquidation(self, time_ms: int) -> list[AccountEvent]:
        """Cross liquidation: when margin balance ≤ total maintenance margin, cancel resting orders and
        close every position at its last price with an ``autoclose-`` order. As on Binance, the fill is carried by
        the CALCULATED event itself (``l`` > 0, status FILLED): no TRADE event follows."""
        margin_balance = self._wallet + self._total_unrealized()
        maintenance = sum((self._maintenance(s, p) for s, p in self._positions.items()), ZERO)
        if margin_balance > maintenance:
            return []
        events: list[AccountEvent] = []
        for order in self._book.resting():
            self._book.unrest(order, "CANCELED", time_ms)
            events.append(order.update("CANCELED", time_ms))
        for symbol in sorted(self._positions):
            amount = self._positions[symbol].amount
            side: OrderSide = "SELL" if amount > 0 else "BUY"
            cid = f"autoclose-{time_ms}-{self._book.next_order_id}"
            order = self._book.add_order(symbol, cid, side, "LIMIT", abs(amount), self._prices[symbol], True, "IOC",
                                         time_ms)
            events += self._fill(order, self._prices[symbol], is_maker=False, time_ms=time_ms, execution="CALCULATED")
        return events

    # -- bookkeeping --------------------------------------------------------------------------------

    def _find_order(self, symbol: str, cid: str | None, order_id: int | None, *, missing: int) -> OrderRecord:
        self._symbol_filters(symbol)
        if cid is None and order_id is None:
            raise SimRejected(-1102, "orderId or origClientOrderId is mandatory")
        order = self._book.find_order(symbol, cid, order_id)
        if order is None:
            raise SimRejected(missing, f"order {order_id if order_id is not None else cid} on {symbol}")
        return order

    def _find_algo(self, cid: str | None, algo_id: int | None, *, missing: int) -> AlgoRecord:
        if cid is None and algo_id is None:
            raise SimRejected(-1102, "algoId or clientAlgoId is mandatory")
        algo = self._book.find_algo(cid, algo_id)
        if algo is None:
            raise SimRejected(missing, f"algo {algo_id if algo_id is not None else cid}")
        return algo

    def _symbol_filters(self, symbol: str) -> SymbolFilters:
        if symbol not in self._filters or symbol not in self._brackets:
            raise SimRejected(-1121, f"symbol {symbol!r}")
        return self._filters[symbol]

    def _symbol_brackets(self, symbol: str) -> SymbolBrackets:
        self._symbol_filters(symbol)
        return self._brackets[symbol]

    def _mark(self, symbol: str) -> Decimal:
        price = self._prices.get(symbol)
        if price is None:
            raise SimRejected(-1000, f"no price yet for {symbol} in the simulator")
        return price

    def _amount(self, symbol: str) -> Decimal:
        position = self._positions.get(symbol)
        return position.amount if position else ZERO

    def _slipped(self, symbol: str, price: Decimal, side: str) -> Decimal:
        """``price × (1 ± bps/10000)`` on the tick away from the taker (BUY up, SELL down, ≥ one tick)."""
        tick = self._filters[symbol].tick_size
        if side == "BUY":
            return ceil_to_step(price * (1 + self._config.slippage_bps / _BPS), tick)
        return max(tick, floor_to_step(price * (1 - self._config.slippage_bps / _BPS), tick))

    def _unrealized(self, symbol: str, p: _Position) -> Decimal:
        return (self._prices[symbol] - p.entry) * p.amount

    def _total_unrealized(self) -> Decimal:
        return sum((self._unrealized(s, p) for s, p in self._positions.items()), ZERO)

    def _maintenance(self, symbol: str, p: _Position) -> Decimal:
        return self._brackets[symbol].maintenance_margin(abs(p.amount) * self._prices[symbol])

    def _available(self) -> Decimal:
        """Cross: wallet + unrealised − Σ position IM (at mark) − Σ margin held by resting orders."""
        initial = sum((abs(p.amount) * self._prices[s] / self.leverage(s) for s, p in self._positions.items()), ZERO)
        return self._wallet + self._total_unrealized() - initial - self._book.held_margin()

    def _check_margin(self, symbol: str, amount: Decimal, signed_qty: Decimal, opening: Decimal,
                      price: Decimal) -> None:
        """-2027 when the resulting position is above the bracket cap; -2019 when its new margin is not there."""
        if opening == 0:
            return
        leverage = self.leverage(symbol)
        cap = self._brackets[symbol].max_notional(leverage)
        if abs(amount + signed_qty) * price > cap:
            raise SimRejected(-2027, f"position notional {abs(amount + signed_qty) * price} above {cap} at x{leverage}")
        need = opening * price / leverage
        if need > self._available():
            raise SimRejected(-2019, f"initial margin {need} above available {self._available()}")

    def _exchange_position(self, symbol: str, p: _Position, *, liquidation: Decimal = ZERO) -> ExchangePosition:
        return ExchangePosition(symbol, "LONG" if p.amount > 0 else "SHORT", abs(p.amount), p.entry,
                                self._prices[symbol], self._unrealized(symbol, p), liquidation,
                                self.leverage(symbol), p.time_ms)
