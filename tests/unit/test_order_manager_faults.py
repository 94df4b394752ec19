"""SmartOrderManager faults, over the real PaperBroker and SimAccount, real exchangeInfo filters and real
1m candles: timeouts, unknown outcomes (query first, never duplicate), exits that keep failing (backoff,
alarm) and an open() cancelled half-way.

Prices are the real closes of Binance USDT-M perpetuals (2023), fed bar by bar into the paper broker; the
symbols' filters and leverage brackets are the real 2024-10 exchangeInfo and tiers. The only stand-ins are
tiny subclasses of the PaperBroker that reproduce an exchange edge (a timeout after the order executed,
a request lost before the book, an exit path that keeps failing) — the manager's code is never replaced.
The normal paths are in ``test_order_manager.py``; the helpers both files use are in ``order_manager_kit.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from decimal import Decimal

import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.errors import DataRejected, TemporaryError, VenueRejected
from smc_quant.order_manager import OrderConfig, SmartOrderManager
from smc_quant.orders.broker import (
    AlgoRequest,
    AlgoState,
    ExchangePosition,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
)
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.orders.filters import floor_to_step
from smc_quant.paper import PaperBroker
from smc_quant.sim.account import SimAccount
from tests.unit.order_manager_kit import Sleeps, bars, client_ids, decision, make_manager
from tests.unit.test_paper_broker import (
    Clock,
    Venue,
    broker_of,
    make_venue,
    pytestmark,
    real_filters,
)

__all__ = ["pytestmark"]


# -- unknown outcomes: query first, never duplicate --------------------------------------------------


class TimeoutAfterExecuting(PaperBroker):
    """The exchange executes the order, then the answer is lost (our timeout): the first ``n`` placements."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.lose_answers = 0
        self.lose_requests = 0
        self.lose_algo_answers = 0
        self.log: list[tuple[str, str]] = []

    async def place_order(self, request: OrderRequest) -> OrderState:
        self.log.append(("place", request.client_order_id))
        if self.lose_requests > 0:  # lost on the way: the exchange never saw it
            self.lose_requests -= 1
            raise OrderStatusUnknown("timeout before the book", client_id=request.client_order_id)
        state = await super().place_order(request)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            raise OrderStatusUnknown("timeout after execution", client_id=request.client_order_id)
        return state

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        self.log.append(("query", client_order_id))
        return await super().query_order(symbol, client_order_id)

    async def place_algo(self, request: AlgoRequest) -> AlgoState:
        self.log.append(("place_algo", request.client_algo_id))
        state = await super().place_algo(request)
        if self.lose_algo_answers > 0:
            self.lose_algo_answers -= 1
            raise OrderStatusUnknown("timeout after the algo order was accepted", client_id=request.client_algo_id)
        return state

    async def query_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None:
        self.log.append(("query_algo", client_algo_id))
        return await super().query_algo(symbol, client_algo_id)


def lossy(symbol: str, bar: int, *, answers: int = 0, requests: int = 0,
          algo_answers: int = 0) -> tuple[Venue, TimeoutAfterExecuting, Decimal]:
    """A venue priced at real bar ``bar`` of ``symbol`` whose broker loses the answers of its first ``answers``
    placements, its first ``requests`` placements and the answers of its first ``algo_answers`` algo orders."""
    venue = make_venue(TimeoutAfterExecuting)
    broker = broker_of(venue, TimeoutAfterExecuting)
    broker.lose_answers, broker.lose_requests, broker.lose_algo_answers = answers, requests, algo_answers
    return venue, broker, venue.start(symbol, bar)


async def test_entry_timeout_after_execution_is_queried_and_never_resent() -> None:
    """The entry executed but its answer was lost: the manager queries, finds it FILLED, sends nothing again."""
    venue, broker, price = lossy("BTCUSDT", 800, answers=1)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 800))
    sleeps = Sleeps()
    manager = make_manager(venue, sleeps)

    result = await manager.open(d, price)

    entry_id = client_order_id(d.signal.signal_id, Leg.ENTRY, 0)
    assert broker.log[:2] == [("place", entry_id), ("query", entry_id)]
    assert [e for e in broker.log if e == ("place", entry_id)] == [("place", entry_id)]
    assert result.position is not None and result.entry is not None and result.entry.status == "FILLED"
    assert Counter(client_ids(venue.account))[entry_id] == 1
    assert venue.account.positions()[0].quantity == d.quantity  # executed once, not twice
    assert manager.stats["unknown_queried"] == 1 and manager.stats["resent"] == 0
    assert sleeps.delays[0] == 0.5  # one backoff before the query


async def test_entry_lost_before_the_book_is_resent_with_the_same_id_after_the_query() -> None:
    """The request never reached the exchange: query says absent (-2013), the same id is sent once more."""
    venue, broker, price = lossy("BTCUSDT", 900, requests=1)
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 900))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    entry_id = client_order_id(d.signal.signal_id, Leg.ENTRY, 0)
    assert broker.log[:3] == [("place", entry_id), ("query", entry_id), ("place", entry_id)]
    assert result.position is not None and result.entry is not None
    assert result.entry.client_order_id == entry_id
    assert Counter(client_ids(venue.account))[entry_id] == 1
    assert manager.stats["resent"] == 1


async def test_exit_timeout_after_execution_is_queried_and_not_duplicated() -> None:
    """The exit's answer is lost after it filled: queried, found FILLED; one exit order, position flat."""
    venue, broker, price = lossy("ETHUSDT", 4_000)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", 4_000), stop_pct=3.0, target_pct=6.0)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None
    broker.lose_answers = 1

    closed = await manager.close(result.position, ExitReason.ROTATION, mark=venue.step("ETHUSDT", 2))

    exit_id = client_order_id(d.signal.signal_id, Leg.EXIT, 0)
    assert closed.outcome == "closed" and closed.exit is not None and closed.exit.status == "FILLED"
    tail = broker.log[-2:]
    assert tail == [("place", exit_id), ("query", exit_id)]
    assert Counter(client_ids(venue.account))[exit_id] == 1 and venue.position("ETHUSDT") is None


# -- exits that keep failing ---------------------------------------------------------------------------


class ExitsFail(PaperBroker):
    """Reduce-only orders fail with a temporary error the first ``failures`` times."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.failures = 100

    async def place_order(self, request: OrderRequest) -> OrderState:
        if request.reduce_only and self.failures > 0:
            self.failures -= 1
            raise TemporaryError("HTTP 503 Service Unavailable")
        return await super().place_order(request)


async def test_exit_retries_with_exponential_backoff_until_done() -> None:
    """Three 503s, then the exit goes through with the same id (nothing happened before): one exit order."""
    venue = make_venue(ExitsFail)
    broker = broker_of(venue, ExitsFail)
    price = venue.start("BTCUSDT", 6_000)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 6_000), stop_pct=3.0, target_pct=6.0)
    sleeps = Sleeps()
    manager = make_manager(venue, sleeps)
    result = await manager.open(d, price)
    assert result.position is not None
    broker.failures = 3

    closed = await manager.close(result.position, ExitReason.BREAKER)

    assert closed.outcome == "closed" and closed.attempts == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert closed.exit is not None and closed.exit.client_order_id == client_order_id(d.signal.signal_id, Leg.EXIT, 0)
    assert manager.stats["exit_retries"] == 3 and manager.stats["alarms"] == 0


class HalfExitThenNoAnswer(PaperBroker):
    """The first exit executes for half the position (as when the position is bigger than the exit knew); the
    position read right after it goes unanswered once."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.exit_ids: list[str] = []
        self.armed = False

    async def place_order(self, request: OrderRequest) -> OrderState:
        if request.reduce_only:
            self.exit_ids.append(request.client_order_id)
            if len(self.exit_ids) == 1:
                step = real_filters()[request.symbol].market_step_size
                request = replace(request, quantity=floor_to_step(request.quantity / 2, step))
                self.armed = True
        return await super().place_order(request)

    async def positions(self) -> list[ExchangePosition]:
        if self.armed:
            self.armed = False
            raise TemporaryError("GET /fapi/v3/positionRisk: no answer")
        return await super().positions()


async def test_an_exit_that_filled_is_never_sent_again_with_its_id_when_the_next_read_fails() -> None:
    """ex-0 fills (half), the read of what is left fails: the next pass sends the rest as ex-1. It once re-sent
    ex-0 — Binance takes a filled order's id again, and a lost answer would then be "resolved" by the old fill."""
    venue = make_venue(HalfExitThenNoAnswer)
    broker = broker_of(venue, HalfExitThenNoAnswer)
    price = venue.start("BTCUSDT", 6_100)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 6_100), stop_pct=3.0, target_pct=6.0)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None

    closed = await manager.close(result.position, ExitReason.TIME)

    assert closed.outcome == "closed" and venue.account.positions() == []
    sid = d.signal.signal_id
    assert broker.exit_ids == [client_order_id(sid, Leg.EXIT, 0), client_order_id(sid, Leg.EXIT, 1)]


async def test_exit_that_never_goes_through_raises_an_alarm_after_max_attempts() -> None:
    """exit_max_attempts temporary failures: alarm (stats), backoff capped, the position is reported not closed."""
    venue = make_venue(ExitsFail)
    price = venue.start("BTCUSDT", 7_000)
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 7_000), stop_pct=3.0, target_pct=6.0)
    sleeps = Sleeps()
    manager = make_manager(venue, sleeps, exit_max_attempts=6, exit_retry_max_s=4.0)
    result = await manager.open(d, price)
    assert result.position is not None

    closed = await manager.close(result.position, ExitReason.SHUTDOWN)

    assert (closed.closed, closed.outcome, closed.attempts) == (False, "alarm", 6)
    assert "503" in closed.detail
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert manager.stats["alarms"] == 1
    assert venue.position("BTCUSDT") is not None  # honest: still open, the caller knows


# -- unknown outcomes: a query-first code, a lost algo-order answer -----------------------------------


class RefusesWithTimeoutCode(PaperBroker):
    """The venue executes the first order, then answers -1007 (TIMEOUT: execution status unknown)."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.armed = True

    async def place_order(self, request: OrderRequest) -> OrderState:
        state = await super().place_order(request)
        if self.armed:
            self.armed = False
            raise VenueRejected("Timeout waiting for response from backend server.", status=408, code=-1007)
        return state


async def test_a_query_first_code_is_treated_as_unknown_not_as_a_refusal() -> None:
    """-1007 after execution: queried and used; one entry at the exchange, position protected."""
    venue = make_venue(RefusesWithTimeoutCode)
    price = venue.start("ETHUSDT", 9_500)
    d = decision("ETHUSDT", "SHORT", price, bars("ETHUSDT", 9_500))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    assert result.position is not None and result.sl is not None
    assert venue.account.order_log.count(client_order_id(d.signal.signal_id, Leg.ENTRY, 0)) == 1
    assert manager.stats["unknown_queried"] == 1 and manager.stats["rejected"] == 0


async def test_a_stop_accepted_but_unanswered_is_queried_and_not_placed_twice() -> None:
    """The stop's answer is lost after the venue accepted it: queried, found NEW, no second stop."""
    venue, broker, price = lossy("BTCUSDT", 10_000, algo_answers=1)
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 10_000))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    sl_id = client_order_id(d.signal.signal_id, Leg.STOP_LOSS, 0)
    assert result.sl is not None and result.sl.client_algo_id == sl_id and result.sl.status == "NEW"
    algo_calls = [e for e in broker.log if e[0] in ("place_algo", "query_algo")]
    assert algo_calls[:3] == [("place_algo", sl_id), ("query_algo", sl_id),
                              ("place_algo", client_order_id(d.signal.signal_id, Leg.TAKE_PROFIT, 0))]
    assert venue.account.order_log.count(sl_id) == 1 and len(venue.account.open_algo_orders("BTCUSDT")) == 2


# -- reads that fail say nothing: never taken for an answer -----------------------------------------------

FAILED_READS = [
    VenueRejected("Timestamp for this request is outside of the recvWindow.", status=400, code=-1021),
    VenueRejected("403 Forbidden", status=403),
    DataRejected("malformed", "not JSON"),
]


class ReadsFail(TimeoutAfterExecuting):
    """Besides losing answers, its reads fail first with the queued errors: order queries, the list of open algo
    orders, cancels."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.query_errors: list[Exception] = []
        self.list_errors: list[Exception] = []
        self.cancel_errors: list[Exception] = []

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        if self.query_errors:
            raise self.query_errors.pop(0)
        return await super().query_order(symbol, client_order_id)

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoState]:
        if self.list_errors:
            raise self.list_errors.pop(0)
        return await super().open_algo_orders(symbol)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        return await super().cancel_order(symbol, client_order_id)


def failing_reads(symbol: str, bar: int) -> tuple[Venue, ReadsFail, Decimal]:
    venue = make_venue(ReadsFail)
    return venue, broker_of(venue, ReadsFail), venue.start(symbol, bar)


@pytest.mark.parametrize("failure", FAILED_READS, ids=["second_1021", "waf_403", "unreadable"])
async def test_a_failed_query_after_a_lost_entry_answer_is_asked_again_never_taken_for_a_refusal(
        failure: Exception) -> None:
    """The entry executed, its answer was lost, and the first query itself fails: that failure is not the entry's
    refusal (it was once, and -1021 then re-sent the entry as ``en-1``: twice the position); the query is asked
    again and finds the fill. One entry at the exchange, protected."""
    venue, broker, price = failing_reads("BTCUSDT", 800)
    broker.lose_answers, broker.query_errors = 1, [failure]
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 800))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    assert result.position is not None and result.sl is not None and result.entry is not None
    assert client_ids(venue.account).count(client_order_id(d.signal.signal_id, Leg.ENTRY, 0)) == 1
    assert client_order_id(d.signal.signal_id, Leg.ENTRY, 1) not in client_ids(venue.account)
    assert venue.account.positions()[0].quantity == d.quantity
    assert manager.stats["rejected"] == 0 and manager.stats["dropped"] == 0


async def test_an_entry_whose_queries_all_fail_is_reported_unknown_and_never_resent() -> None:
    venue, broker, price = failing_reads("BTCUSDT", 820)
    broker.lose_answers = 1
    broker.query_errors = [VenueRejected("403 Forbidden", status=403)] * OrderConfig().query_max_attempts
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 820))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    assert result.position is None and result.reason == "entry_unknown" and manager.stats["alarms"] == 1
    assert [e for e in broker.log if e[0] == "place"] == [("place", client_order_id(d.signal.signal_id, Leg.ENTRY, 0))]
    assert venue.account.positions()[0].quantity == d.quantity  # one entry: reconciliation adopts and protects it


@pytest.mark.parametrize("failures", [1, 6], ids=["once", "every_try"])
async def test_a_failed_read_of_the_protection_never_closes_a_protected_position(failures: int) -> None:
    """The reconciliation's check of a protected position meets a refused read of the open algo orders (a WAF
    403, a second -1021): asked again, or left as it is when it keeps failing — never closed at market."""
    venue, broker, price = failing_reads("ETHUSDT", 9_700)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", 9_700))
    manager = make_manager(venue)
    opened = await manager.open(d, price)
    assert opened.position is not None and opened.sl is not None
    broker.list_errors = [FAILED_READS[i % 3] for i in range(failures)]

    sl, tp = await manager.ensure_protection(opened.position, price)

    assert venue.account.positions()[0].quantity == d.quantity
    assert {a.type for a in venue.account.open_algo_orders("ETHUSDT")} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
    assert manager.stats["alarms"] == 0 and manager.stats["exits"] == 0
    if failures == 1:  # read on the next try: the live orders, not new ones
        assert sl is not None and sl.client_algo_id == opened.sl.client_algo_id
        assert tp is not None and opened.tp is not None and tp.client_algo_id == opened.tp.client_algo_id
    else:  # every try of both legs failed: nothing known, nothing changed (the next reconciliation asks again)
        assert (sl, tp) == (None, None)


@pytest.mark.parametrize("failures", [2, 3], ids=["then_cancelled", "never_cancelled"])
async def test_a_resting_limit_entry_whose_cancel_fails_is_cancelled_again_or_raises_the_alarm(failures: int) -> None:
    """A LIMIT entry that did not fill in time: its cancel is tried again after a failure; when it never
    succeeds the entry is reported unknown with an alarm — not dropped as "not filled" while it still rests."""
    venue, broker, price = failing_reads("BTCUSDT", 12_500)
    broker.cancel_errors = [TemporaryError("DELETE /fapi/v1/order: no answer")] * failures
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 12_500), stop_pct=3.0, target_pct=6.0)
    manager = make_manager(venue, entry_type="LIMIT")

    result = await manager.open(d, price)

    assert result.position is None
    if failures < manager.config.protection_max_attempts:
        assert result.reason.startswith("not_filled") and venue.account.open_orders() == []
    else:
        assert result.reason == "entry_unknown" and manager.stats["alarms"] == 1
        assert len(venue.account.open_orders("BTCUSDT")) == 1


# -- open() cancelled half-way ------------------------------------------------------------------------


class SlowAlgos(PaperBroker):
    """Algo placements wait for ``release``; ``placed`` is set once two of them went through."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.in_flight = asyncio.Event()
        self.release = asyncio.Event()
        self.placed = asyncio.Event()
        self.count = 0

    async def place_algo(self, request: AlgoRequest) -> AlgoState:
        self.in_flight.set()
        await self.release.wait()
        state = await super().place_algo(request)
        self.count += 1
        if self.count == 2:
            self.placed.set()
        return state


async def test_cancelling_open_after_the_fill_still_protects_the_position() -> None:
    """open() is cancelled while the stop is in flight: CancelledError propagates, the protection completes."""
    venue = make_venue(SlowAlgos)
    broker = broker_of(venue, SlowAlgos)
    price = venue.start("ETHUSDT", 11_000)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", 11_000))
    manager = make_manager(venue)

    task = asyncio.create_task(manager.open(d, price))
    await asyncio.wait_for(broker.in_flight.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    broker.release.set()
    await asyncio.wait_for(broker.placed.wait(), timeout=5)

    live = {a.type: a for a in venue.account.open_algo_orders("ETHUSDT")}
    assert live["STOP_MARKET"].trigger_price == d.stop_price and live["STOP_MARKET"].close_position
    assert live["TAKE_PROFIT_MARKET"].trigger_price == d.target_price
    assert venue.position("ETHUSDT") is not None


class CancelWitness(PaperBroker):
    """Signals when an order is cancelled (the manager's background clean-up after a cancelled open)."""

    def __init__(self, account: SimAccount, clock: Clock) -> None:
        super().__init__(account, clock)
        self.cancelled = asyncio.Event()

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        state = await super().cancel_order(symbol, client_order_id)
        self.cancelled.set()
        return state


async def test_cancelling_open_while_a_limit_entry_rests_takes_it_off_the_book() -> None:
    venue = make_venue(CancelWitness)
    broker = broker_of(venue, CancelWitness)
    price = venue.start("BTCUSDT", 12_500)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 12_500), stop_pct=3.0, target_pct=6.0)
    waiting, forever = asyncio.Event(), asyncio.Event()

    async def hanging_sleep(_: float) -> None:  # the fill wait never ends by itself
        waiting.set()
        await forever.wait()

    manager = SmartOrderManager(venue.broker, real_filters(), config=OrderConfig(entry_type="LIMIT"),
                                clock=venue.clock, sleep=hanging_sleep)
    task = asyncio.create_task(manager.open(d, price))
    await asyncio.wait_for(waiting.wait(), timeout=5)
    assert len(venue.account.open_orders("BTCUSDT")) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(broker.cancelled.wait(), timeout=5)
    assert venue.account.open_orders() == [] and venue.account.positions() == []
