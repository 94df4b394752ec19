"""PaperBroker over the real SimAccount: the Broker contract, event delivery through the loop, pass-through refusals.

Real exchangeInfo filters and leverage brackets (2024-10), real 2023 closes. The venue kit here (``Venue``,
``make_venue``) is shared with ``test_order_manager.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import TypeVar

import pytest

from smc_quant.datasets import KLINES_2023_1M, LEVERAGE_TIERS, KlineSeries, data_dir, load_exchange_info, read_klines
from smc_quant.errors import VenueRejected
from smc_quant.exchange.brackets import load_brackets
from smc_quant.exchange.exchange_info import SymbolFilters, parse_exchange_info
from smc_quant.funding import FundingQuote
from smc_quant.orders.broker import (
    AccountEvent,
    AccountUpdate,
    AlgoRequest,
    AlgoUpdate,
    Broker,
    ExchangePosition,
    OrderRequest,
    OrderUpdate,
)
from smc_quant.orders.filters import floor_to_step, round_price
from smc_quant.paper import FundingPayment, PaperBroker
from smc_quant.sim.account import SimAccount, SimConfig

ROOT = data_dir()
pytestmark = pytest.mark.skipif(not (ROOT / KLINES_2023_1M).is_dir(), reason=f"real market data not found at {ROOT}")


# -- real data ----------------------------------------------------------------------------------------


@cache
def real_filters() -> dict[str, SymbolFilters]:
    """Every symbol's filters from the real exchangeInfo (2024-10-02)."""
    info = parse_exchange_info(load_exchange_info(ROOT))
    return {s.symbol: s.filters for s in info.symbols if s.filters is not None}


@cache
def real_series(symbol: str, folder: str = KLINES_2023_1M) -> KlineSeries:
    return read_klines(Path(ROOT) / folder / f"{symbol}.csv.gz")


def price_at(symbol: str, i: int, folder: str = KLINES_2023_1M) -> Decimal:
    """The real close of bar ``i`` on the symbol's tick grid."""
    s = real_series(symbol, folder)
    return round_price(Decimal(repr(float(s.close[i]))), real_filters()[symbol].tick_size, "half_up")


# -- a paper venue driven by real closes ------------------------------------------------------------


@dataclass
class Clock:
    """The venue clock in epoch ms (moved by the market replay)."""

    now: int = 0

    def __call__(self) -> int:
        return self.now


@dataclass
class Venue:
    """A SimAccount behind a PaperBroker, priced bar by bar with real closes."""

    account: SimAccount
    broker: PaperBroker
    clock: Clock
    cursor: dict[str, int] = field(default_factory=dict)
    folder: dict[str, str] = field(default_factory=dict)

    def start(self, symbol: str, i: int, folder: str = KLINES_2023_1M) -> Decimal:
        """Put ``symbol`` at real bar ``i``; returns its close."""
        self.cursor[symbol], self.folder[symbol] = i, folder
        return self._feed(symbol)

    def step(self, symbol: str, bars: int = 1) -> Decimal:
        """Advance ``symbol`` by ``bars`` real bars; returns the last close fed."""
        for _ in range(bars):
            self.cursor[symbol] += 1
            price = self._feed(symbol)
        return price

    def _feed(self, symbol: str) -> Decimal:
        i, folder = self.cursor[symbol], self.folder[symbol]
        self.clock.now = int(real_series(symbol, folder).open_time[i]) + 60_000
        price = price_at(symbol, i, folder)
        self.broker.on_price(symbol, price, self.clock.now)
        return price

    def position(self, symbol: str) -> object | None:
        return next((p for p in self.account.positions() if p.symbol == symbol), None)


B = TypeVar("B", bound=PaperBroker)


def broker_of(venue: Venue, kind: type[B]) -> B:
    """The venue's broker as the test subclass it was built with."""
    assert isinstance(venue.broker, kind)
    return venue.broker


def make_venue(broker_type: type[PaperBroker] = PaperBroker, balance: str = "10000") -> Venue:
    clock = Clock()
    account = SimAccount(real_filters(), load_brackets(ROOT / LEVERAGE_TIERS),
                         SimConfig(balance=Decimal(balance), taker_fee=Decimal("0.0005"), maker_fee=Decimal("0.0002"),
                                   slippage_bps=Decimal("1"), default_leverage=20, margin_type="CROSSED"))
    return Venue(account, broker_type(account, clock), clock)



# -- tests ----------------------------------------------------------------------------------------------


class Collector:
    """An event sink that records what it got and lets a test wait until ``count`` events arrived."""

    def __init__(self) -> None:
        self.events: list[AccountEvent] = []
        self._wanted = 0
        self._arrived = asyncio.Event()

    def __call__(self, event: AccountEvent) -> None:
        self.events.append(event)
        if len(self.events) >= self._wanted:
            self._arrived.set()

    async def wait_for(self, count: int) -> list[AccountEvent]:
        self._wanted = count
        if len(self.events) < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout=5)
        return self.events


def kinds(events: list[AccountEvent]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, OrderUpdate):
            out.append(f"order:{e.execution}:{e.status}")
        elif isinstance(e, AlgoUpdate):
            out.append(f"algo:{e.status}")
        elif isinstance(e, AccountUpdate):
            out.append(f"account:{e.reason}")
        else:
            out.append(type(e).__name__)
    return out


def qty_for(symbol: str, price: Decimal, notional: str = "1000") -> Decimal:
    return floor_to_step(Decimal(notional) / price, real_filters()[symbol].market_step_size)


async def test_events_arrive_through_the_loop_in_exchange_order_never_inside_the_call() -> None:
    """A MARKET order's NEW, TRADE and ACCOUNT_UPDATE reach the sink after place_order returned, in order."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 1_000)
    sink = Collector()
    venue.broker.subscribe(sink)
    qty = qty_for("BTCUSDT", price)

    state = await venue.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty, "t-entry-1"))

    assert state.status == "FILLED" and state.executed_qty == qty
    assert sink.events == []  # not delivered re-entrantly inside the caller's await
    events = await sink.wait_for(3)
    assert kinds(events) == ["order:NEW:NEW", "order:TRADE:FILLED", "account:ORDER"]
    update = events[2]
    assert isinstance(update, AccountUpdate)
    held = update.positions[0]
    assert isinstance(held, ExchangePosition) and (held.symbol, held.side, held.quantity) == ("BTCUSDT", "LONG", qty)


async def test_a_triggered_stop_reports_triggered_fill_and_finished_in_order() -> None:
    """A closePosition stop under a LONG, real closes fed until it fires: the algo's whole story, in order."""
    venue = make_venue()
    s = real_series("ETHUSDT")
    i = 2_000
    price = venue.start("ETHUSDT", i)
    stop = round_price(price * Decimal("0.997"), real_filters()["ETHUSDT"].tick_size, "down")
    hit = next(j for j in range(i + 1, len(s)) if Decimal(repr(float(s.close[j]))) <= stop)
    await venue.broker.place_order(OrderRequest("ETHUSDT", "BUY", "MARKET", qty_for("ETHUSDT", price), "t-en"))
    algo = await venue.broker.place_algo(AlgoRequest("ETHUSDT", "SELL", "STOP_MARKET", stop, "t-sl",
                                                     close_position=True))
    assert algo.status == "NEW" and algo.close_position
    sink = Collector()
    venue.broker.subscribe(sink)

    venue.step("ETHUSDT", hit - i)

    events = await sink.wait_for(5)
    assert kinds(events) == ["algo:TRIGGERED", "order:NEW:NEW", "order:TRADE:FILLED", "account:ORDER",
                             "algo:FINISHED"]
    assert await venue.broker.positions() == []
    final = await venue.broker.query_algo("ETHUSDT", "t-sl")
    assert final is not None and final.status == "FINISHED"


async def test_unknown_ids_are_none_not_errors() -> None:
    """-2013 on a query and -2011 on a cancel are the contract's ``None`` (absent / already gone)."""
    venue = make_venue()
    venue.start("BTCUSDT", 1_000)
    broker = venue.broker
    assert await broker.query_order("BTCUSDT", "never-sent") is None
    assert await broker.cancel_order("BTCUSDT", "never-sent") is None
    assert await broker.query_algo("BTCUSDT", "never-sent") is None
    assert await broker.cancel_algo("BTCUSDT", "never-sent") is None


async def test_a_filled_order_cannot_be_cancelled_and_a_resting_one_can() -> None:
    venue = make_venue()
    price = venue.start("BTCUSDT", 1_000)
    tick = real_filters()["BTCUSDT"].tick_size
    qty = qty_for("BTCUSDT", price)
    await venue.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty, "t-m"))
    assert await venue.broker.cancel_order("BTCUSDT", "t-m") is None
    rest = await venue.broker.place_order(OrderRequest("BTCUSDT", "SELL", "LIMIT", qty, "t-l", price=price + 50 * tick))
    assert rest.status == "NEW" and [o.client_order_id for o in await venue.broker.open_orders("BTCUSDT")] == ["t-l"]
    cancelled = await venue.broker.cancel_order("BTCUSDT", "t-l")
    assert cancelled is not None and cancelled.status == "CANCELED"
    assert await venue.broker.open_orders() == []


@pytest.mark.parametrize(("name", "code"), [("min_notional", -4164), ("reduce_only_flat", -2022),
                                            ("close_position_flat", -2022), ("would_trigger", -2021),
                                            ("bad_leverage", -4028)])
async def test_refusals_pass_through_as_venue_rejected_with_the_binance_code(name: str, code: int) -> None:
    venue = make_venue()
    price = venue.start("ETHUSDT", 1_000)
    broker = venue.broker
    qty = qty_for("ETHUSDT", price)
    if name == "would_trigger":  # a LONG exists; its stop placed above the last price would fire at once
        await broker.place_order(OrderRequest("ETHUSDT", "BUY", "MARKET", qty, "t-en"))
    requests: dict[str, Callable[[], Awaitable[object]]] = {
        "min_notional": lambda: broker.place_order(OrderRequest("ETHUSDT", "BUY", "MARKET", Decimal("0.001"), "t-s")),
        "reduce_only_flat": lambda: broker.place_order(OrderRequest("ETHUSDT", "SELL", "MARKET", qty, "t-ro",
                                                                    reduce_only=True)),
        "close_position_flat": lambda: broker.place_algo(AlgoRequest("ETHUSDT", "SELL", "STOP_MARKET",
                                                                     price - 100, "t-cp",
                                                                     close_position=True)),
        "would_trigger": lambda: broker.place_algo(AlgoRequest("ETHUSDT", "SELL", "STOP_MARKET", price + 100, "t-sl",
                                                               close_position=True)),
        "bad_leverage": lambda: broker.set_leverage("ETHUSDT", 500),
    }
    with pytest.raises(VenueRejected) as info:
        await requests[name]()
    assert info.value.code == code


async def test_margin_type_unchanged_is_a_no_op_and_leverage_shows_on_the_position() -> None:
    venue = make_venue()
    price = venue.start("SOLUSDT", 1_000)
    broker = venue.broker
    await broker.set_margin_type("SOLUSDT", "CROSSED")  # the account default: -4046 swallowed
    await broker.set_margin_type("SOLUSDT", "ISOLATED")
    await broker.set_margin_type("SOLUSDT", "ISOLATED")
    assert venue.account.margin_type("SOLUSDT") == "ISOLATED"
    await broker.set_leverage("SOLUSDT", 7)
    await broker.place_order(OrderRequest("SOLUSDT", "SELL", "MARKET", qty_for("SOLUSDT", price), "t-s"))
    held = await broker.positions()
    assert [(p.symbol, p.side, p.leverage) for p in held] == [("SOLUSDT", "SHORT", 7)]
    with pytest.raises(VenueRejected) as info:  # a position is open: the venue refuses to switch (-4048)
        await broker.set_margin_type("SOLUSDT", "CROSSED")
    assert info.value.code == -4048


async def test_server_time_is_the_paper_clock_and_balance_moves_with_fees() -> None:
    venue = make_venue()
    price = venue.start("BTCUSDT", 1_000)
    broker: Broker = venue.broker  # the PaperBroker satisfies the Broker protocol (checked by mypy)
    assert await broker.server_time() == venue.clock.now == int(real_series("BTCUSDT").open_time[1_000]) + 60_000
    qty = qty_for("BTCUSDT", price)
    await broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty, "t-b"))
    bal = await broker.balance()
    fill = venue.account.fills[0]
    assert fill.fee == Decimal("0.0005") * qty * fill.price
    assert bal.wallet == Decimal("10000") - fill.fee


def _bar(symbol: str, i: int) -> tuple[float, float, float, float, int]:
    s = real_series(symbol)
    return float(s.open[i]), float(s.high[i]), float(s.low[i]), float(s.close[i]), int(s.open_time[i])


def funding_venue() -> tuple[Venue, list[FundingPayment]]:
    """A venue whose paper broker records every funding payment it settles (in the list returned)."""
    venue = make_venue()
    paid: list[FundingPayment] = []
    venue.broker = PaperBroker(venue.account, venue.clock, on_funding=paid.append)
    return venue, paid


async def test_funding_is_settled_once_at_the_bar_ending_at_the_funding_time() -> None:
    """A paper long on real BTCUSDT bars, funding 0.05 % due at the close of bar i+2: the bar ending there pays
    amount × close × rate (wallet and a FUNDING_FEE update, recorded once); a short later receives."""
    venue, paid = funding_venue()
    i = 1_000
    price = venue.start("BTCUSDT", i)
    sink = Collector()
    venue.broker.subscribe(sink)
    qty = qty_for("BTCUSDT", price)
    await venue.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty, "t-long"))
    await sink.wait_for(3)
    wallet = (await venue.broker.balance()).wallet
    o, h, low, c, t = _bar("BTCUSDT", i + 1)
    due = t + 2 * 60_000  # the close of bar i + 2
    venue.broker.note_funding("BTCUSDT", FundingQuote(Decimal("0.0005"), due, Decimal(repr(c)), t))
    assert venue.broker.on_bar("BTCUSDT", o, h, low, c, t) == 0 and paid == []  # not yet
    o, h, low, c, t = _bar("BTCUSDT", i + 2)
    venue.broker.on_bar("BTCUSDT", o, h, low, c, t)
    expected = (qty * Decimal(repr(c)) * Decimal("0.0005")).quantize(Decimal("0.00000001"), ROUND_HALF_UP)
    assert [(p.symbol, p.time_ms, p.rate, p.amount) for p in paid] == [("BTCUSDT", due, Decimal("0.0005"), expected)]
    events = await sink.wait_for(4)
    assert kinds(events)[-1] == "account:FUNDING_FEE"
    assert (await venue.broker.balance()).wallet == wallet - expected
    # a late quote still naming the settled time, and later bars, change nothing
    venue.broker.note_funding("BTCUSDT", FundingQuote(Decimal("0.0005"), due, Decimal(repr(c)), t))
    o, h, low, c, t = _bar("BTCUSDT", i + 3)
    venue.broker.on_bar("BTCUSDT", o, h, low, c, t)
    assert len(paid) == 1


async def test_a_quote_after_the_funding_time_waits_for_the_bar_ending_there() -> None:
    """The push after the funding time can arrive before the bar that ends there. It settles nothing (that bar
    may still close the position); the bar settles at the rate quoted for that time, not the newer one."""
    venue, paid = funding_venue()
    i = 2_000
    price = venue.start("ETHUSDT", i)
    qty = qty_for("ETHUSDT", price)
    await venue.broker.place_order(OrderRequest("ETHUSDT", "SELL", "MARKET", qty, "t-short"))
    o, h, low, c, t = _bar("ETHUSDT", i + 1)
    due = t + 60_000  # the end of bar i + 1
    venue.broker.note_funding("ETHUSDT", FundingQuote(Decimal("0.0010"), due, price, t))
    venue.broker.note_funding("ETHUSDT", FundingQuote(Decimal("-0.0300"), due + 8 * 3_600_000, price, due + 1_000))
    assert paid == []
    venue.broker.on_bar("ETHUSDT", o, h, low, c, t)
    assert [(p.time_ms, p.rate) for p in paid] == [(due, Decimal("0.0010"))]
    expected = (-qty * Decimal(repr(c)) * Decimal("0.0010")).quantize(Decimal("0.00000001"), ROUND_HALF_UP)
    assert paid[0].amount == expected < 0  # a short receives a positive rate


async def test_a_position_stopped_out_inside_the_funding_bar_pays_no_funding() -> None:
    """A long whose stop fills inside the bar that ends at the funding time held nothing then: no payment — even
    though the push after the funding time came first (it used to settle at once, with the position as it stood
    before that bar)."""
    venue, paid = funding_venue()
    i = 3_000
    price = venue.start("BTCUSDT", i)
    o, h, low, c, t = _bar("BTCUSDT", i + 1)
    assert low < min(o, float(price)), "precondition: the next bar trades below its open and the entry"
    await venue.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty_for("BTCUSDT", price), "t-long"))
    stop = round_price(Decimal(repr((low + min(o, float(price))) / 2)), real_filters()["BTCUSDT"].tick_size, "down")
    await venue.broker.place_algo(AlgoRequest("BTCUSDT", "SELL", "STOP_MARKET", stop, "t-sl", close_position=True))
    due = t + 60_000
    venue.broker.note_funding("BTCUSDT", FundingQuote(Decimal("0.0005"), due, price, t))
    venue.broker.note_funding("BTCUSDT", FundingQuote(Decimal("0.0005"), due + 8 * 3_600_000, price, due + 500))
    venue.broker.on_bar("BTCUSDT", o, h, low, c, t)
    assert venue.position("BTCUSDT") is None and paid == []


async def test_a_funding_time_passed_with_nothing_held_is_never_charged_to_a_later_position() -> None:
    """The backtest feeds a symbol only while something is at stake. A long held two hours before a funding
    time, closed, then a new long long after it: the funding time the bars went past unseen charges nothing (it
    was charged to the new position at its first bar)."""
    venue, paid = funding_venue()
    i = 4_000
    price = venue.start("BTCUSDT", i)
    qty = qty_for("BTCUSDT", price)
    await venue.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty, "t-long-1"))
    o, h, low, c, t = _bar("BTCUSDT", i + 1)
    due = t + 120 * 60_000
    venue.broker.note_funding("BTCUSDT", FundingQuote(Decimal("0.0001"), due, price, t))
    venue.broker.on_bar("BTCUSDT", o, h, low, c, t)
    await venue.broker.place_order(OrderRequest("BTCUSDT", "SELL", "MARKET", qty, "t-close-1", reduce_only=True))
    assert venue.position("BTCUSDT") is None
    later = i + 300  # three hours after the funding time: a new long, its first bar
    price = venue.start("BTCUSDT", later)
    await venue.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", qty, "t-long-2"))
    o, h, low, c, t = _bar("BTCUSDT", later + 1)
    venue.broker.note_funding("BTCUSDT", FundingQuote(Decimal("0.0001"), due + 8 * 3_600_000, price, t))
    venue.broker.on_bar("BTCUSDT", o, h, low, c, t)
    assert paid == [] and venue.broker.funding_payments == []
