"""SmartOrderManager over the real PaperBroker and SimAccount, real exchangeInfo filters and real 1m candles.

Prices are the real closes of Binance USDT-M perpetuals (2023), fed bar by bar into the paper broker; the
symbols' filters and leverage brackets are the real 2024-10 exchangeInfo and tiers. The only stand-ins are
tiny subclasses of the PaperBroker that reproduce an exchange edge (a timeout after the order executed,
a request lost before the book, an exit path that keeps failing) — the manager's code is never replaced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Literal

import pytest

from smc_quant.domain.trading import ExitReason, Position, PositionSide, Signal
from smc_quant.errors import TemporaryError, VenueRejected
from smc_quant.order_manager import OrderConfig, SmartOrderManager
from smc_quant.orders.broker import AlgoRequest, AlgoState, OrderRequest, OrderState, OrderStatusUnknown
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.orders.filters import floor_to_step, round_price
from smc_quant.paper import PaperBroker
from smc_quant.risk import Decision
from smc_quant.sim.account import SimAccount
from tests.unit.test_paper_broker import (
    Clock,
    Venue,
    broker_of,
    make_venue,
    pytestmark,
    real_filters,
    real_series,
)

__all__ = ["pytestmark"]


class Sleeps:
    """The manager's sleep, recorded: backoff delays without waiting (the venue does not need wall time)."""

    def __init__(self, on_sleep: object = None) -> None:
        self.delays: list[float] = []
        self.on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if callable(self.on_sleep):
            self.on_sleep()


def make_manager(venue: Venue, sleeps: Sleeps | None = None, **config: object) -> SmartOrderManager:
    return SmartOrderManager(venue.broker, real_filters(), config=OrderConfig(**config),  # type: ignore[arg-type]
                             clock=venue.clock, sleep=sleeps or Sleeps())


def decision(symbol: str, side: PositionSide, price: Decimal, open_time: int, *, notional: str = "2000",
             stop_pct: float = 0.5, target_pct: float = 1.0, leverage: int = 10,
             quantity: Decimal | None = None) -> Decision:
    """An "open" decision as the risk manager makes it: quantity floored to the MARKET step, exits on the tick."""
    f = real_filters()[symbol]
    sign = 1 if side == "LONG" else -1
    stop = round_price(price * (1 - sign * Decimal(str(stop_pct)) / 100), f.tick_size, "half_up")
    target = round_price(price * (1 + sign * Decimal(str(target_pct)) / 100), f.tick_size, "half_up")
    qty = quantity if quantity is not None else floor_to_step(Decimal(notional) / price, f.market_step_size)
    signal = Signal(signal_id=f"{symbol}:{side}:{open_time}", symbol=symbol, side=side, open_time=open_time,
                    price=price, confidence=0.7, stop_pct=stop_pct, target_pct=target_pct, setup="test")
    return Decision(action="open", reason="test", signal=signal, quantity=qty, leverage=leverage, stop_price=stop,
                    target_price=target, close_symbol=None, notional=qty * price, margin=qty * price / leverage,
                    risk_amount=qty * price * Decimal(str(stop_pct)) / 100)


def first_exit(symbol: str, side: PositionSide, stop_pct: float, target_pct: float, *, want: str,
               start: int = 100, horizon: int = 720) -> tuple[int, int]:
    """The first real bar ``i ≥ start`` from which the closes reach ``want`` (stop/target) first, and that bar."""
    s = real_series(symbol)
    sign = 1 if side == "LONG" else -1
    for i in range(start, len(s) - horizon):
        p = float(s.close[i])
        stop, target = p * (1 - sign * stop_pct / 100), p * (1 + sign * target_pct / 100)
        for j in range(i + 1, i + horizon):
            c = float(s.close[j])
            hit_stop = c <= stop if sign == 1 else c >= stop
            hit_target = c >= target if sign == 1 else c <= target
            if hit_stop or hit_target:
                if (want == "stop" and hit_stop and not hit_target) or (want == "target" and hit_target and
                                                                         not hit_stop):
                    return i, j
                break
    raise AssertionError(f"no {want} path in {symbol}")


def client_ids(account: SimAccount) -> list[str]:
    """Every client id the simulated exchange accepted a request for, in order (orders and algo orders)."""
    return account.order_log


def bars(symbol: str, i: int) -> int:
    return int(real_series(symbol).open_time[i])


# -- open: entry, protection, leverage ---------------------------------------------------------------


async def test_open_fills_entry_and_places_close_position_stop_and_target() -> None:
    """A LONG on BTCUSDT: MARKET entry filled, STOP_MARKET and TAKE_PROFIT_MARKET with closePosition at the prices."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 500)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 500))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    assert result.reason == "opened" and result.position is not None
    assert result.entry is not None and result.entry.status == "FILLED" and result.entry.executed_qty == d.quantity
    assert result.entry.client_order_id == client_order_id(d.signal.signal_id, Leg.ENTRY, 0)
    sl, tp = result.sl, result.tp
    assert sl is not None and tp is not None
    assert (sl.type, sl.side, sl.trigger_price, sl.close_position) == ("STOP_MARKET", "SELL", d.stop_price, True)
    assert (tp.type, tp.side, tp.trigger_price, tp.close_position) == ("TAKE_PROFIT_MARKET", "SELL",
                                                                        d.target_price, True)
    assert sl.client_algo_id == client_order_id(d.signal.signal_id, Leg.STOP_LOSS, 0)
    assert tp.client_algo_id == client_order_id(d.signal.signal_id, Leg.TAKE_PROFIT, 0)
    live = {a.client_algo_id: a for a in await venue.broker.open_algo_orders("BTCUSDT")}
    assert set(live) == {sl.client_algo_id, tp.client_algo_id}
    held = await venue.broker.positions()
    assert [(p.symbol, p.side, p.quantity, p.leverage) for p in held] == [("BTCUSDT", "LONG", d.quantity, 10)]
    assert result.position.quantity == d.quantity and result.position.stop_price == d.stop_price
    assert manager.stats["sent"] == 3 and manager.stats["filled"] == 1


async def test_stop_path_closes_by_algo_and_close_finds_it_flat_without_sending() -> None:
    """Real ETHUSDT closes fall through a SHORT's... no: a LONG's stop; the algo closes it; close() sends nothing."""
    start, hit = first_exit("ETHUSDT", "LONG", 0.4, 0.8, want="stop")
    venue = make_venue()
    price = venue.start("ETHUSDT", start)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", start), stop_pct=0.4, target_pct=0.8)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None

    venue.step("ETHUSDT", hit - start)

    assert venue.position("ETHUSDT") is None
    sl = await venue.broker.query_algo("ETHUSDT", client_order_id(d.signal.signal_id, Leg.STOP_LOSS, 0))
    assert sl is not None and sl.status in ("TRIGGERED", "FINISHED")
    sent_before = manager.stats["sent"]
    closed = await manager.close(result.position, ExitReason.TIME, mark=venue.step("ETHUSDT"))
    assert (closed.closed, closed.outcome) == (True, "already_flat")
    assert manager.stats["sent"] == sent_before
    exit_id = client_order_id(d.signal.signal_id, Leg.EXIT, 0)
    assert exit_id not in client_ids(venue.account)
    assert await venue.broker.open_algo_orders("ETHUSDT") == []


async def test_take_profit_path_on_a_short_closes_by_algo() -> None:
    """A SHORT on DOGEUSDT (price ~0.07, tick 0.00001): real closes reach the target; flat, nothing left open."""
    start, hit = first_exit("DOGEUSDT", "SHORT", 0.6, 0.6, want="target")
    venue = make_venue()
    price = venue.start("DOGEUSDT", start)
    d = decision("DOGEUSDT", "SHORT", price, bars("DOGEUSDT", start), stop_pct=0.6, target_pct=0.6)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None and result.tp is not None
    assert d.stop_price is not None and result.tp.side == "BUY" and result.tp.trigger_price < price < d.stop_price

    venue.step("DOGEUSDT", hit - start)

    assert venue.position("DOGEUSDT") is None
    tp = await venue.broker.query_algo("DOGEUSDT", result.tp.client_algo_id)
    assert tp is not None and tp.status in ("TRIGGERED", "FINISHED")
    closed = await manager.close(result.position, ExitReason.TAKE_PROFIT)
    assert closed.outcome == "already_flat"
    assert await venue.broker.open_algo_orders("DOGEUSDT") == []
    assert venue.account.balance().wallet > Decimal("10000") - Decimal("5")  # a win minus two taker fees


async def test_close_for_time_limit_cancels_both_algos_then_exits_reduce_only() -> None:
    """close(TIME): both algo orders CANCELED, one reduce-only MARKET exit FILLED, flat, no open algo orders."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 2_000)
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 2_000), stop_pct=2.0, target_pct=4.0)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None
    mark = venue.step("BTCUSDT", 5)

    closed = await manager.close(result.position, ExitReason.TIME, mark=mark)

    assert (closed.closed, closed.outcome, closed.reason) == (True, "closed", ExitReason.TIME)
    assert closed.exit is not None and closed.exit.status == "FILLED" and closed.exit.reduce_only
    assert closed.exit.side == "BUY" and closed.exit.executed_qty == d.quantity
    assert closed.exit.client_order_id == client_order_id(d.signal.signal_id, Leg.EXIT, 0)
    for leg in (Leg.STOP_LOSS, Leg.TAKE_PROFIT):
        algo = await venue.broker.query_algo("BTCUSDT", client_order_id(d.signal.signal_id, leg, 0))
        assert algo is not None and algo.status == "CANCELED"
    assert venue.position("BTCUSDT") is None and await venue.broker.open_algo_orders() == []


async def test_every_client_id_reaches_the_exchange_exactly_once_over_many_trades() -> None:
    """Three symbols, open → time exit, twice each: the order log holds each of our ids once."""
    venue = make_venue(balance="50000")
    manager = make_manager(venue)
    for symbol, i in (("BTCUSDT", 3_000), ("ETHUSDT", 3_000), ("DOGEUSDT", 3_000)):
        for k in range(2):
            price = venue.start(symbol, i + 100 * k)
            d = decision(symbol, "LONG" if k == 0 else "SHORT", price, bars(symbol, i + 100 * k),
                         stop_pct=3.0, target_pct=6.0)
            result = await manager.open(d, price)
            assert result.position is not None, result.reason
            closed = await manager.close(result.position, ExitReason.TIME, mark=venue.step(symbol, 3))
            assert closed.outcome == "closed"
    ids = client_ids(venue.account)
    assert len(ids) == 6 * 4  # entry, stop, target, exit per trade
    assert [cid for cid, n in Counter(ids).items() if n > 1] == []
    assert venue.account.positions() == [] and venue.account.open_algo_orders() == []


async def test_leverage_and_margin_type_are_set_once_per_symbol() -> None:
    """Margin type once per symbol; leverage only when the decision's differs from the last one set."""

    calls: list[tuple[str, str, object]] = []

    class Counting(PaperBroker):

        async def set_leverage(self, symbol: str, leverage: int) -> None:
            calls.append(("leverage", symbol, leverage))
            await super().set_leverage(symbol, leverage)

        async def set_margin_type(self, symbol: str, margin_type: Literal["ISOLATED", "CROSSED"]) -> None:
            calls.append(("margin", symbol, margin_type))
            await super().set_margin_type(symbol, margin_type)

    venue = make_venue(Counting, balance="50000")
    manager = make_manager(venue)
    plan = [("ETHUSDT", 1_000, 10), ("ETHUSDT", 1_100, 10), ("ETHUSDT", 1_200, 5), ("BTCUSDT", 1_000, 5)]
    for symbol, i, leverage in plan:
        price = venue.start(symbol, i)
        d = decision(symbol, "LONG", price, bars(symbol, i), leverage=leverage, stop_pct=3.0, target_pct=6.0)
        result = await manager.open(d, price)
        assert result.position is not None
        assert (await manager.close(result.position, ExitReason.MANUAL)).outcome == "closed"
    assert calls == [("margin", "ETHUSDT", "CROSSED"), ("leverage", "ETHUSDT", 10),
                              ("leverage", "ETHUSDT", 5),
                              ("margin", "BTCUSDT", "CROSSED"), ("leverage", "BTCUSDT", 5)]
    assert manager.stats["leverage_set"] == 3 and manager.stats["margin_type_set"] == 2


# -- drops and immediate closes -----------------------------------------------------------------------


async def test_a_decision_below_min_notional_is_dropped_with_the_filter_named() -> None:
    """BTCUSDT's MIN_NOTIONAL is 100 USDT: 0.001 BTC (~30 USDT) is dropped before anything is sent."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 500)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 500), quantity=Decimal("0.001"))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    assert result.position is None and result.entry is None
    assert result.reason.startswith("filter MIN_NOTIONAL")
    assert client_ids(venue.account) == [] and manager.stats["sent"] == 0 and manager.stats["dropped"] == 1


async def test_exchange_answering_2021_on_the_stop_closes_the_position_at_market() -> None:
    """The stop is re-placed from a stale mark while the real price already fell through it: the venue
    answers -2021, and the position is closed at market at once."""
    start, hit = first_exit("ETHUSDT", "LONG", 0.4, 0.8, want="stop")
    venue = make_venue()
    price = venue.start("ETHUSDT", start)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", start), stop_pct=0.4, target_pct=0.8)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None and result.sl is not None
    # the protection goes missing (e.g. cancelled by hand) while the price falls through the stop
    await venue.broker.cancel_algo("ETHUSDT", result.sl.client_algo_id)
    await venue.broker.cancel_algo("ETHUSDT", result.tp.client_algo_id)  # type: ignore[union-attr]
    venue.step("ETHUSDT", hit - start)
    assert venue.position("ETHUSDT") is not None

    sl, tp = await manager.ensure_protection(result.position, price)  # a stale mark: our check passes

    assert (sl, tp) == (None, None)
    assert venue.position("ETHUSDT") is None
    assert manager.stats["immediate_trigger_closes"] == 1 and manager.stats["rejected"] == 1
    assert client_order_id(d.signal.signal_id, Leg.EXIT, 0) in client_ids(venue.account)


async def test_trigger_already_passed_at_the_current_mark_closes_without_asking_the_exchange() -> None:
    """ensure_protection with the current mark below a LONG's stop closes at market; no algo order is tried."""
    start, hit = first_exit("ETHUSDT", "LONG", 0.4, 0.8, want="stop")
    venue = make_venue()
    price = venue.start("ETHUSDT", start)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", start), stop_pct=0.4, target_pct=0.8)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None and result.sl is not None and result.tp is not None
    for algo in (result.sl, result.tp):
        await venue.broker.cancel_algo("ETHUSDT", algo.client_algo_id)
    mark = venue.step("ETHUSDT", hit - start)
    algos_before = len(venue.account.open_algo_orders())

    assert await manager.ensure_protection(result.position, mark) == (None, None)

    assert venue.position("ETHUSDT") is None and manager.stats["rejected"] == 0
    assert algos_before == 0 and len(client_ids(venue.account)) == 4  # entry, sl, tp, exit


async def test_decision_whose_stop_is_already_behind_the_mark_is_dropped() -> None:
    """A LONG whose stop sits above the current price would be stopped at once: dropped before the entry."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 500)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 500))
    manager = make_manager(venue)
    assert d.stop_price is not None
    result = await manager.open(d, d.stop_price - real_filters()["BTCUSDT"].tick_size)
    assert result.position is None and result.reason.startswith("filter TRIGGER")
    assert client_ids(venue.account) == []


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


async def test_entry_timeout_after_execution_is_queried_and_never_resent() -> None:
    """The entry executed but its answer was lost: the manager queries, finds it FILLED, sends nothing again."""
    venue = make_venue(TimeoutAfterExecuting)
    broker = broker_of(venue, TimeoutAfterExecuting)
    broker.lose_answers = 1
    price = venue.start("BTCUSDT", 800)
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
    venue = make_venue(TimeoutAfterExecuting)
    broker = broker_of(venue, TimeoutAfterExecuting)
    broker.lose_requests = 1
    price = venue.start("BTCUSDT", 900)
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
    venue = make_venue(TimeoutAfterExecuting)
    broker = broker_of(venue, TimeoutAfterExecuting)
    broker.lose_answers = 0
    price = venue.start("ETHUSDT", 4_000)
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


async def test_limit_entry_not_filled_in_time_is_cancelled_and_dropped() -> None:
    """A LIMIT entry (one tick under the mark) on a real path that walks away is cancelled after fill_timeout_s."""
    venue = make_venue()
    s = real_series("BTCUSDT")
    # a bar after which the next 20 closes all stay above the close (a BUY limit at the close never fills)
    i = next(k for k in range(200, len(s) - 21) if min(s.close[k + 1:k + 21]) > s.close[k])
    price = venue.start("BTCUSDT", i)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", i), stop_pct=3.0, target_pct=6.0)
    sleeps = Sleeps(on_sleep=lambda: venue.step("BTCUSDT"))
    manager = make_manager(venue, sleeps, entry_type="LIMIT", fill_timeout_s=10, fill_poll_s=1)

    result = await manager.open(d, price)

    assert result.position is None and result.reason.startswith("not_filled")
    assert result.entry is not None and result.entry.status == "CANCELED" and result.entry.executed_qty == 0
    assert venue.account.open_orders() == [] and venue.account.positions() == []


async def test_limit_entry_fills_when_the_real_price_comes_to_it() -> None:
    """A SHORT LIMIT one tick above the close fills as maker once a later real close trades at or above it."""
    venue = make_venue()
    s = real_series("ETHUSDT")
    tick = float(real_filters()["ETHUSDT"].tick_size)
    i = next(k for k in range(200, len(s) - 21)
             if s.close[k + 1] < s.close[k] and max(s.close[k + 2:k + 10]) >= s.close[k] + tick)
    price = venue.start("ETHUSDT", i)
    limit = price + real_filters()["ETHUSDT"].tick_size
    d = decision("ETHUSDT", "SHORT", price, bars("ETHUSDT", i), stop_pct=3.0, target_pct=6.0)
    sleeps = Sleeps(on_sleep=lambda: venue.step("ETHUSDT"))
    manager = make_manager(venue, sleeps, entry_type="LIMIT", fill_timeout_s=10, fill_poll_s=1)

    result = await manager.open(d, price)

    assert result.position is not None and result.entry is not None and result.entry.status == "FILLED"
    assert result.entry.avg_price == limit and result.sl is not None and result.tp is not None


async def test_skip_decision_sends_nothing() -> None:
    venue = make_venue()
    price = venue.start("BTCUSDT", 500)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 500))
    skip = Decision(action="skip", reason="max_positions", signal=d.signal, quantity=d.quantity, leverage=10,
                    stop_price=d.stop_price, target_price=d.target_price, close_symbol=None, notional=d.notional,
                    margin=d.margin, risk_amount=d.risk_amount)
    manager = make_manager(venue)
    result = await manager.open(skip, price)
    assert result.position is None and result.reason == "decision skip: max_positions"
    assert client_ids(venue.account) == []
    assert isinstance(result.position, Position | None)


# -- reconciliation: ensure_protection ------------------------------------------------------------------


async def test_ensure_protection_after_a_restart_keeps_live_orders_and_replaces_only_the_missing_leg() -> None:
    """A fresh manager (no memory): the live target is kept, the cancelled stop is re-placed with attempt 1."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 9_000)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 9_000), stop_pct=3.0, target_pct=6.0)
    result = await make_manager(venue).open(d, price)
    assert result.position is not None and result.sl is not None and result.tp is not None
    await venue.broker.cancel_algo("BTCUSDT", result.sl.client_algo_id)  # the stop went missing
    restarted = make_manager(venue)

    sl, tp = await restarted.ensure_protection(result.position, venue.step("BTCUSDT"))

    assert tp is not None and tp.client_algo_id == result.tp.client_algo_id  # kept, not duplicated
    assert sl is not None and sl.client_algo_id == client_order_id(d.signal.signal_id, Leg.STOP_LOSS, 1)
    assert (sl.trigger_price, sl.close_position, sl.status) == (d.stop_price, True, "NEW")
    assert venue.account.order_log[-1] == sl.client_algo_id and len(venue.account.order_log) == 4
    sent = restarted.stats["sent"]
    assert await restarted.ensure_protection(result.position, venue.step("BTCUSDT")) == (sl, tp)
    assert restarted.stats["sent"] == sent  # both live: nothing sent


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


async def test_a_target_left_by_a_stopped_trade_is_cancelled_before_the_next_entry_on_the_symbol() -> None:
    """After the stop fires, the old closePosition target would close a new position at the old level."""
    start, hit = first_exit("ETHUSDT", "LONG", 0.4, 0.8, want="stop")
    venue = make_venue()
    price = venue.start("ETHUSDT", start)
    first = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", start), stop_pct=0.4, target_pct=0.8)
    manager = make_manager(venue)
    result = await manager.open(first, price)
    assert result.tp is not None
    price = venue.step("ETHUSDT", hit - start)
    assert venue.position("ETHUSDT") is None
    assert [a.client_algo_id for a in venue.account.open_algo_orders("ETHUSDT")] == [result.tp.client_algo_id]

    second = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", hit), stop_pct=3.0, target_pct=6.0)
    again = await manager.open(second, price)

    assert again.sl is not None and again.tp is not None
    old_tp = await venue.broker.query_algo("ETHUSDT", result.tp.client_algo_id)
    assert old_tp is not None and old_tp.status == "CANCELED"
    assert {a.client_algo_id for a in venue.account.open_algo_orders("ETHUSDT")} == {again.sl.client_algo_id,
                                                                                     again.tp.client_algo_id}


async def test_a_stop_accepted_but_unanswered_is_queried_and_not_placed_twice() -> None:
    """The stop's answer is lost after the venue accepted it: queried, found NEW, no second stop."""
    venue = make_venue(TimeoutAfterExecuting)
    broker = broker_of(venue, TimeoutAfterExecuting)
    broker.lose_algo_answers = 1
    price = venue.start("BTCUSDT", 10_000)
    d = decision("BTCUSDT", "SHORT", price, bars("BTCUSDT", 10_000))
    manager = make_manager(venue)

    result = await manager.open(d, price)

    sl_id = client_order_id(d.signal.signal_id, Leg.STOP_LOSS, 0)
    assert result.sl is not None and result.sl.client_algo_id == sl_id and result.sl.status == "NEW"
    algo_calls = [e for e in broker.log if e[0] in ("place_algo", "query_algo")]
    assert algo_calls[:3] == [("place_algo", sl_id), ("query_algo", sl_id),
                              ("place_algo", client_order_id(d.signal.signal_id, Leg.TAKE_PROFIT, 0))]
    assert venue.account.order_log.count(sl_id) == 1 and len(venue.account.open_algo_orders("BTCUSDT")) == 2


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


async def test_margin_insufficient_entry_is_repaired_once_with_half_the_size() -> None:
    """150k USDT notional at 10× on a 10k account: -2019, then one resend at half the size with attempt 1."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 12_000)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 12_000), notional="150000", stop_pct=3.0, target_pct=6.0)
    manager = make_manager(venue)

    result = await manager.open(d, price)

    step = real_filters()["BTCUSDT"].market_step_size
    assert result.position is not None and result.position.quantity == floor_to_step(d.quantity / 2, step)
    assert result.entry is not None and result.entry.client_order_id == client_order_id(d.signal.signal_id,
                                                                                         Leg.ENTRY, 1)
    assert manager.stats["rejected"] == 1 and manager.stats["repaired"] == 1


async def test_margin_insufficient_twice_is_dropped_with_the_code() -> None:
    venue = make_venue()
    price = venue.start("BTCUSDT", 12_000)
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 12_000), notional="500000")
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is None and result.reason.startswith("rejected -2019")
    assert venue.account.order_log == [] and manager.stats["rejected"] == 2


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
