"""SmartOrderManager over the real PaperBroker and SimAccount, real exchangeInfo filters and real 1m candles:
the normal paths and the filters' and the venue's refusals.

Covered here: open (MARKET entry, closePosition stop and target, leverage and margin type once per symbol),
exits by the algo orders and by close(), decisions dropped by the filters or closed at once because a trigger
is already passed, LIMIT entries, skipped decisions, ensure_protection, and an entry refused for margin
(repaired once, then dropped). Timeouts, unknown outcomes, exit retries and cancellation are in
``test_order_manager_faults.py``; the helpers both files use are in ``order_manager_kit.py``.

Prices are the real closes of Binance USDT-M perpetuals (2023), fed bar by bar into the paper broker; the
symbols' filters and leverage brackets are the real 2024-10 exchangeInfo and tiers. The manager's code is never
replaced; the only stand-in here is a PaperBroker subclass that counts the leverage and margin-type calls.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Literal

from smc_quant.domain.trading import ExitReason, Position, PositionSide
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.orders.filters import floor_to_step
from smc_quant.paper import PaperBroker
from smc_quant.risk import Decision
from tests.unit.order_manager_kit import Sleeps, bars, client_ids, decision, make_manager
from tests.unit.test_paper_broker import (
    make_venue,
    pytestmark,
    real_filters,
    real_series,
)

# Sleeps, bars and decision are imported from here by tests/integration/test_order_manager.py.
__all__ = ["Sleeps", "bars", "decision", "pytestmark"]


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


async def test_leverage_and_margin_type_are_asserted_before_every_entry() -> None:
    """Margin type and the decision's leverage are sent before every entry, unchanged or not (nothing is cached:
    a person on the account may have changed them between our trades)."""

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
                     ("margin", "ETHUSDT", "CROSSED"), ("leverage", "ETHUSDT", 10),
                     ("margin", "ETHUSDT", "CROSSED"), ("leverage", "ETHUSDT", 5),
                     ("margin", "BTCUSDT", "CROSSED"), ("leverage", "BTCUSDT", 5)]
    assert manager.stats["leverage_set"] == 4 and manager.stats["margin_type_set"] == 4


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


# -- LIMIT entries and skipped decisions ------------------------------------------------------------


async def test_limit_entry_whose_price_would_sit_on_its_stop_is_dropped() -> None:
    """A LONG LIMIT goes a tick under the mark; with the mark a tick above the stop (it drifted towards the stop
    since the signal), that price is the stop's: the entry would fill where the stop triggers and be closed at
    once, two taker fees for nothing. Dropped before any order; a tick further from the stop it is placed."""
    venue = make_venue()
    price = venue.start("BTCUSDT", 500)
    tick = real_filters()["BTCUSDT"].tick_size
    d = decision("BTCUSDT", "LONG", price, bars("BTCUSDT", 500))
    assert d.stop_price is not None
    manager = make_manager(venue, entry_type="LIMIT", fill_timeout_s=0.0, fill_poll_s=1)
    result = await manager.open(d, d.stop_price + tick)
    assert result.position is None and result.reason.startswith("filter TRIGGER")
    assert client_ids(venue.account) == []
    result = await manager.open(d, d.stop_price + 2 * tick)
    assert result.reason.startswith("not_filled") and len(client_ids(venue.account)) == 1  # placed, a tick above


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


# -- margin refusals: repaired once, then dropped ----------------------------------------------------


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
