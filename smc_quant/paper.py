"""PaperBroker: the :class:`~smc_quant.orders.broker.Broker` contract over an in-process simulated account.

Paper mode is "the same fill model without keys, on live (or emulated) market data": the service feeds
every closed candle's close (and anything finer it has, e.g. mark prices) into :meth:`PaperBroker.on_price`;
the simulated account (``smc_quant.sim.account.SimAccount``, the same model the emulator serves over the
wire) fills MARKET orders at the last price with slippage, rests LIMIT orders, triggers the conditional
(algo) orders and keeps balance and positions. The SmartOrderManager cannot tell this broker from the live one.
Funding: :meth:`PaperBroker.note_funding` takes the streamed quotes and each position pays at the funding time
(:class:`FundingPayment`, handed to ``on_funding`` to be stored), as the exchange charges a live one.

Two details keep it honest to the exchange:

- Account events (``OrderUpdate``/``AccountUpdate``/``AlgoUpdate``) are delivered to subscribers **through
  the event loop** (``loop.call_soon``), in the order the account produced them, never re-entrantly inside
  the caller's ``await`` — like a user-data stream, they arrive after the REST answer.
- A refusal of the simulated account (``SimRejected``, a ``VenueRejected`` with the Binance ``code``) passes
  through unchanged, except the answers the Broker contract turns into values: ``-2013`` (no such order) on
  a query and ``-2011``/``-2013`` on a cancel give ``None``, ``-4046`` (margin type unchanged) is a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from smc_quant.domain.candles import MINUTE_MS
from smc_quant.errors import VenueRejected
from smc_quant.funding import FundingQuote
from smc_quant.orders.broker import (
    AccountEvent,
    AlgoRequest,
    AlgoState,
    Balance,
    EventSink,
    ExchangePosition,
    ExchangeTrade,
    OrderRequest,
    OrderState,
)

PricePath = Literal["ohlc", "close"]


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """What a paper position paid at a funding time (``amount`` > 0: paid, < 0: received), in USDT."""

    symbol: str
    time_ms: int
    rate: Decimal
    amount: Decimal


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


if TYPE_CHECKING:
    from smc_quant.sim.account import SimAccount

__all__ = ["FundingPayment", "PaperBroker"]

NO_SUCH_ORDER = -2013
CANCEL_REJECTED = -2011
MARGIN_TYPE_UNCHANGED = -4046


class PaperBroker:
    """A :class:`Broker` over a :class:`SimAccount`, priced by :meth:`on_price`; ``server_time()`` is ``clock()``.

    ``clock`` returns epoch milliseconds (in replay, the replay clock); every request is stamped with it.
    """

    def __init__(self, account: SimAccount, clock: Callable[[], int],
                 on_funding: Callable[[FundingPayment], None] | None = None,
                 funding: Callable[[str], FundingQuote | None] | None = None) -> None:
        """``funding``: the symbol's current funding quote (``smc_quant.funding.FundingBook.quote``), read before
        each bar — as the exchange charges a live account, whichever feed prices this one; ``None``: only the
        quotes given to :meth:`note_funding` (the backtest's history)."""
        self._account = account
        self._funding = funding
        self._clock = clock
        self._sinks: list[EventSink] = []
        self.events_delivered = 0
        self._funding_due: dict[str, dict[int, Decimal]] = {}
        """Per symbol, each funding time quoted and not yet settled → the latest rate quoted for it."""
        self._funding_settled: dict[str, int] = {}
        self._on_funding = on_funding
        self.funding_payments: list[FundingPayment] = []
        """Every funding payment of this run (also handed to ``on_funding``, which stores it)."""

    @property
    def account(self) -> SimAccount:
        """The simulated account (order log, fills) — for reports and tests."""
        return self._account

    # -- market data -------------------------------------------------------------------------------

    def on_price(self, symbol: str, price: Decimal, time_ms: int) -> None:
        """A new last price of ``symbol``: fills resting orders, triggers algo orders, marks positions.

        Must be called on the event loop thread; the resulting events reach subscribers on a later turn.
        """
        self._emit(self._account.on_price(symbol, price, time_ms))

    def on_bar(self, symbol: str, o: float, h: float, low: float, c: float, open_time: int,
               path: PricePath = "ohlc") -> int:
        """Feed one closed 1m bar; returns how many account events it produced (delivered on later turns).

        ``path="ohlc"`` follows docs/sim.md: the open (``gap=True``: a stop the bar opens beyond fills at the
        open), the extreme nearer the open (equally near: the one against the position held — low for a long,
        high otherwise), the other extreme, then the close, at ``open``, ``+20 s``,
        ``+40 s`` and ``+59.999 s`` — so a stop inside the bar fills at its trigger, as on the exchange.
        ``path="close"`` feeds the close only. The service and the backtest both use this.
        """
        acc = self._account
        if self._funding is not None and (quote := self._funding(symbol)) is not None:
            self.note_funding(symbol, quote)  # before the bar: the bar ending at the funding time settles it
        events: list[AccountEvent] = []
        if path == "ohlc":
            near, far = (h, low) if abs(h - o) < abs(o - low) else (low, h)
            if abs(h - o) == abs(o - low) and not self._holds_long(symbol):
                near, far = h, low  # equally far: the held position's adverse side first (a long's low)
            events.extend(acc.on_price(symbol, _dec(o), open_time, gap=True))
            events.extend(acc.on_price(symbol, _dec(near), open_time + 20_000))
            events.extend(acc.on_price(symbol, _dec(far), open_time + 40_000))
        events.extend(acc.on_price(symbol, _dec(c), open_time + 59_999))
        events.extend(self._funding_at_bar_end(symbol, open_time))
        self._emit(events)
        return len(events)

    def _holds_long(self, symbol: str) -> bool:
        return any(p.symbol == symbol and p.side == "LONG" for p in self._account.positions())

    # -- funding -----------------------------------------------------------------------------------

    def note_funding(self, symbol: str, quote: FundingQuote) -> None:
        """The symbol's latest funding quote: ``quote.rate`` for the funding at ``quote.next_ms`` (the latest
        quote for a time wins). Nothing is settled here: the bar that ends at the funding time settles it, with
        the position that bar leaves — a quote pushed after that time may arrive before that bar, when a stop
        inside it may still close the position."""
        if quote.next_ms > self._funding_settled.get(symbol, 0):
            self._funding_due.setdefault(symbol, {})[quote.next_ms] = quote.rate

    def _funding_at_bar_end(self, symbol: str, open_time: int) -> list[AccountEvent]:
        """Settle the funding due at the end of the bar opening at ``open_time`` (its close is the mark), once.
        A funding time this symbol's bars went past unseen is dropped: nothing was held then (the backtest feeds
        a symbol only while something is at stake), and charging it to a position opened later was wrong."""
        dues = self._funding_due.get(symbol)
        if not dues:
            return []
        events: list[AccountEvent] = []
        for at in sorted(t for t in dues if t <= open_time + MINUTE_MS):
            rate = dues.pop(at)
            if at > open_time:
                events.extend(self._settle(symbol, at, rate))
        if not dues:
            del self._funding_due[symbol]
        return events

    def _settle(self, symbol: str, at: int, rate: Decimal) -> list[AccountEvent]:
        self._funding_settled[symbol] = at
        if self._account.last_price(symbol) is None:
            return []
        paid, events = self._account.settle_funding(symbol, rate, at)
        if events:
            payment = FundingPayment(symbol, at, rate, paid)
            self.funding_payments.append(payment)
            if self._on_funding is not None:
                self._on_funding(payment)
        return events

    # -- events ------------------------------------------------------------------------------------

    def subscribe(self, sink: EventSink) -> None:
        """Deliver every account event to ``sink`` (on the event loop, in the account's order)."""
        self._sinks.append(sink)

    def _emit(self, events: Iterable[AccountEvent]) -> None:
        batch = list(events)
        if not batch or not self._sinks:
            return
        loop = asyncio.get_running_loop()
        for event in batch:
            loop.call_soon(self._deliver, event)

    def _deliver(self, event: AccountEvent) -> None:
        self.events_delivered += 1
        for sink in tuple(self._sinks):
            sink(event)

    # -- Broker ------------------------------------------------------------------------------------

    async def server_time(self) -> int:
        """The paper clock (epoch ms)."""
        return self._clock()

    async def place_order(self, request: OrderRequest) -> OrderState:
        """``POST /fapi/v1/order`` on the simulated account; ``SimRejected`` passes through."""
        state, events = self._account.new_order(
            symbol=request.symbol, side=request.side, type=request.type, quantity=request.quantity,
            time_ms=self._clock(), client_order_id=request.client_order_id, price=request.price,
            reduce_only=request.reduce_only, time_in_force=request.time_in_force)
        self._emit(events)
        return state

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """The order by our client id, ``None`` when the account does not know it (-2013)."""
        try:
            return self._account.query_order(symbol, client_order_id=client_order_id)
        except VenueRejected as exc:
            if exc.code == NO_SUCH_ORDER:
                return None
            raise

    async def query_order_id(self, symbol: str, order_id: int) -> OrderState | None:
        """The order by the account's id, ``None`` when the account does not know it (-2013)."""
        try:
            return self._account.query_order(symbol, order_id=order_id)
        except VenueRejected as exc:
            if exc.code == NO_SUCH_ORDER:
                return None
            raise

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """Cancel by client id; ``None`` when already gone (-2011 / -2013)."""
        try:
            state, events = self._account.cancel_order(symbol, client_order_id=client_order_id,
                                                       time_ms=self._clock())
        except VenueRejected as exc:
            if exc.code in (CANCEL_REJECTED, NO_SUCH_ORDER):
                return None
            raise
        self._emit(events)
        return state

    async def place_algo(self, request: AlgoRequest) -> AlgoState:
        """``POST /fapi/v1/algoOrder`` (CONDITIONAL) on the simulated account."""
        state, events = self._account.new_algo(
            symbol=request.symbol, side=request.side, type=request.type, trigger_price=request.trigger_price,
            time_ms=self._clock(), client_algo_id=request.client_algo_id, quantity=request.quantity,
            close_position=request.close_position, reduce_only=request.reduce_only,
            working_type=request.working_type)
        self._emit(events)
        return state

    async def query_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None:
        """The algo order by our client id, ``None`` when unknown."""
        try:
            return self._account.query_algo(client_algo_id=client_algo_id)
        except VenueRejected as exc:
            if exc.code == NO_SUCH_ORDER:
                return None
            raise

    async def cancel_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None:
        """Cancel an algo order by client id; ``None`` when already gone (triggered, cancelled, unknown)."""
        try:
            state, events = self._account.cancel_algo(symbol=symbol, client_algo_id=client_algo_id,
                                                      time_ms=self._clock())
        except VenueRejected as exc:
            if exc.code in (CANCEL_REJECTED, NO_SUCH_ORDER):
                return None
            raise
        self._emit(events)
        return state

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return list(self._account.open_orders(symbol))

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoState]:
        return list(self._account.open_algo_orders(symbol))

    async def positions(self) -> list[ExchangePosition]:
        return list(self._account.positions())

    async def balance(self) -> Balance:
        return self._account.balance()

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        self._account.set_leverage(symbol, leverage)

    async def user_trades(self, symbol: str, since_ms: int) -> list[ExchangeTrade]:
        """The simulated account's executions on ``symbol`` since ``since_ms`` (commissions in USDT)."""
        return [ExchangeTrade(f.symbol, f.trade_id, f.order_id, f.side, f.quantity, f.price, f.fee, "USDT",
                              f.realized_pnl, f.time_ms, f.is_maker)
                for f in self._account.fills if f.symbol == symbol and f.time_ms >= since_ms]

    async def set_margin_type(self, symbol: str, margin_type: Literal["ISOLATED", "CROSSED"]) -> None:
        """Set the margin type; already set (-4046) is a no-op, as the contract says."""
        try:
            self._account.set_margin_type(symbol, margin_type)
        except VenueRejected as exc:
            if exc.code != MARGIN_TYPE_UNCHANGED:
                raise
