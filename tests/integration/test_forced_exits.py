"""Exits the exchange makes on its own — liquidation, auto-deleveraging — and protection the exchange ends without
executing it, end to end: emulator (real 2023 candles), signed REST, the ``/private`` user-data stream, the real
executor and PostgreSQL.

Binance carries a liquidation's or an ADL's fill on the ``x = CALCULATED`` event itself (``l > 0``), and may send the
same fill again as ``x = TRADE`` with the same trade id. Real captured frames are replayed through the emulator's
user-data socket (parsed by the project's own parser on the way in), with symbol, side, quantity, price and times
rewritten to match the position the executor holds.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import replace
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from smc_quant.domain.trading import ExitReason, PositionSide, exit_side
from smc_quant.executor import Executor
from smc_quant.orders.broker import AccountEvent, AlgoUpdate, OrderUpdate
from smc_quant.orders.client_ids import parse_client_order_id
from tests.integration.trading_kit import Rig, Told, signed, trading_rig

pytestmark = pytest.mark.integration

WS = "payloads/binance-integration/ws_messages"
FEE = Decimal("0.0005")


def capture(shared_data: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((shared_data / WS / name).read_text()))


def arrival(ex: Executor, match: Callable[[AccountEvent], bool]) -> asyncio.Event:
    """Set once the executor's user-data stream delivered an event ``match`` accepts (the executor's own sink was
    subscribed first, so by then the event is queued for it)."""
    seen = asyncio.Event()
    ex.broker.subscribe(lambda e: seen.set() if match(e) else None)
    return seen


async def replay(rig: Rig, ex: Executor, frame: dict[str, Any]) -> None:
    """Send one (rewritten) captured frame down the executor's user-data socket and wait until it is handled."""
    o = frame["data"]["o"]
    key = ("caid", o["caid"]) if "caid" in o else ("t", o["t"])

    def match(e: AccountEvent) -> bool:
        if isinstance(e, AlgoUpdate):
            return key == ("caid", e.client_algo_id)
        return isinstance(e, OrderUpdate) and key == ("t", e.trade_id) and e.execution == o["x"]

    seen = arrival(ex, match)
    assert rig.emulator.user_data.send_raw(frame) >= 1
    await asyncio.wait_for(seen.wait(), 10)
    await ex.idle()


def forced_fill(raw: dict[str, Any], *, symbol: str, side: PositionSide, qty: Decimal, cum: Decimal,
                total: Decimal, price: Decimal, entry: Decimal, time_ms: int, trade_id: int | None = None
                ) -> dict[str, Any]:
    """A captured ORDER_TRADE_UPDATE rewritten to close ``qty`` of our ``side`` position on ``symbol`` at ``price``."""
    frame = copy.deepcopy(raw)
    frame["data"]["E"] = frame["data"]["T"] = time_ms
    o = frame["data"]["o"]
    sign = 1 if side == "LONG" else -1
    o.update(s=symbol, S=exit_side(side), q=str(total), l=str(qty), z=str(cum), L=str(price), ap=str(price), T=time_ms,
             N="USDT", n=str((qty * price * FEE).quantize(Decimal("1e-8"))), rp=str(sign * qty * (price - entry)))
    if trade_id is not None:
        o["t"] = trade_id
    return frame


async def open_position(rig: Rig, ex: Executor, symbol: str, side: PositionSide) -> Any:
    assert ex.submit(rig.signal(symbol, side, confidence=0.75, stop_pct=8.0, target_pct=30.0))
    await ex.idle()
    return ex.book[symbol]


async def test_a_liquidation_by_the_emulator_reaches_the_trades_the_day_and_the_exchange_fills(
        shared_data: Path, pg_dsn: str) -> None:
    """Cross margin: a foreign BTCUSDT position at 20x crashes and the account is liquidated — our ETHUSDT position
    with it, though its own price never moved. The emulator sends the liquidation fill on the CALCULATED event (as
    Binance does); the executor settles the position as a LIQUIDATION trade, stored, counted in the day's PnL,
    matching the exchange's fills (it used to wait for a TRADE event that Binance never sends, and the reconciler
    later dropped the position as ``position_vanished``)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "LONG")
        account = rig.account
        _, cap = account.set_leverage("BTCUSDT", 20)
        price = rig.price("BTCUSDT")
        notional = min(account.balance().available * 18, cap * Decimal("0.9"))
        qty = (notional / price).quantize(Decimal("0.001"), ROUND_DOWN)
        account.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=qty, time_ms=rig.clock(),
                          client_order_id="by-hand-btc")
        crash = (price - Decimal(2) * account.balance().wallet / qty).quantize(Decimal("0.1"))
        settled = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.symbol == "ETHUSDT" and e.is_liquidation)

        rig.emulator.user_data.publish(account.on_price("BTCUSDT", crash, rig.clock()))
        await asyncio.wait_for(settled.wait(), 10)
        await ex.idle()

        assert account.positions() == [] and "ETHUSDT" not in ex.book
        (trade,) = ex.trades
        assert (trade.symbol, trade.exit_reason, trade.quantity) == ("ETHUSDT", ExitReason.LIQUIDATION,
                                                                     entry.position.quantity)
        ours = [f for f in account.fills if f.symbol == "ETHUSDT"]
        (liquidation,) = [f for f in ours if f.client_order_id.startswith("autoclose-")]
        assert all(parse_client_order_id(f.client_order_id) is not None for f in ours if f is not liquidation)
        assert trade.exit_price == liquidation.price and trade.fees == sum(f.fee for f in ours)
        assert trade.net_pnl < 0 and ex.risk.realised_today == trade.net_pnl
        assert [(t.signal_id, t.exit_reason) for t in await rig.repo.trades()] == [
            (entry.position.signal_id, ExitReason.LIQUIDATION)]
        assert await rig.repo.open_positions() == []


async def test_the_captured_liquidation_frame_settles_the_position_and_counts_the_loss(shared_data: Path,
                                                                                      pg_dsn: str) -> None:
    """``ws_futures_order_update_liquidation.json`` (x=CALCULATED, X=FILLED, l>0) for our BTCUSDT long, 10 % below
    the entry: a LIQUIDATION trade at that price, stored, the loss in the day's PnL. The zero-quantity capture
    (``l = 0``) before it books nothing."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "BTCUSDT", "LONG")
        pos = entry.position
        price = (pos.entry_price * Decimal("0.9")).quantize(Decimal("0.1"))
        common = dict(symbol="BTCUSDT", side="LONG", total=pos.quantity, price=price, entry=pos.entry_price,
                      time_ms=rig.clock())
        empty = forced_fill(capture(shared_data, "ws_futures_order_update_liquidation_zero_qty.json"),
                            qty=Decimal(0), cum=Decimal(0), **common)  # type: ignore[arg-type]
        await replay(rig, ex, empty)
        assert "BTCUSDT" in ex.book and ex.trades == []

        frame = forced_fill(capture(shared_data, "ws_futures_order_update_liquidation.json"),
                            qty=pos.quantity, cum=pos.quantity, **common)  # type: ignore[arg-type]
        await replay(rig, ex, frame)

        assert "BTCUSDT" not in ex.book
        (trade,) = ex.trades
        assert (trade.exit_reason, trade.quantity, trade.exit_price) == (ExitReason.LIQUIDATION, pos.quantity, price)
        assert trade.net_pnl < pos.quantity * (price - pos.entry_price) < 0
        assert ex.risk.realised_today == trade.net_pnl
        assert [t.exit_reason for t in await rig.repo.trades()] == [ExitReason.LIQUIDATION]
        assert rig.account.open_algo_orders("BTCUSDT") == []  # the leftover protection is cancelled


async def test_an_adl_fill_sent_as_calculated_and_again_as_trade_is_counted_once(shared_data: Path,
                                                                                  pg_dsn: str) -> None:
    """``ws_futures_order_update_adl.json`` (CALCULATED) and ``…_adl_filled.json`` (TRADE) carry the same trade
    id: one fill. Our ETHUSDT short is deleveraged in two trades, each delivered both ways: after the first pair
    the position is half closed (not settled by the duplicate), after the second it is one ADL trade of the whole
    size, each fill stored once; the late duplicate books nothing."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        pos = entry.position
        half = (pos.quantity / 2).quantize(Decimal("0.001"), ROUND_DOWN)
        rest = pos.quantity - half
        price = (pos.entry_price * Decimal("1.05")).quantize(Decimal("0.01"))
        calculated = capture(shared_data, "ws_futures_order_update_adl.json")
        traded = capture(shared_data, "ws_futures_order_update_adl_filled.json")
        assert calculated["data"]["o"]["t"] == traded["data"]["o"]["t"]
        first_id = int(calculated["data"]["o"]["t"])
        common = dict(symbol="ETHUSDT", side="SHORT", total=pos.quantity, price=price, entry=pos.entry_price,
                      time_ms=rig.clock())

        fills = ex.book.fills(pos.signal_id)
        with structlog.testing.capture_logs() as logs:
            await replay(rig, ex, forced_fill(calculated, qty=half, cum=half, **common))  # type: ignore[arg-type]
            assert [f.quantity for f in fills[1:]] == [half]  # booked from the CALCULATED event
            await replay(rig, ex, forced_fill(traded, qty=half, cum=half, **common))  # type: ignore[arg-type]
            assert [f.quantity for f in fills[1:]] == [half]  # not twice
            assert "ETHUSDT" in ex.book and ex.trades == []
            for raw in (calculated, traded):
                await replay(rig, ex, forced_fill(raw, qty=rest, cum=pos.quantity, trade_id=first_id + 1,
                                                  **common))  # type: ignore[arg-type]

        assert "ETHUSDT" not in ex.book
        (trade,) = ex.trades
        assert (trade.exit_reason, trade.quantity, trade.exit_price) == (ExitReason.ADL, pos.quantity, price)
        exit_fees = sum(((q * price * FEE).quantize(Decimal("1e-8")) for q in (half, rest)), Decimal(0))
        assert trade.fees - exit_fees > 0 and ex.risk.realised_today == trade.net_pnl
        assert not [e for e in logs if e["event"] == "fill_unmatched"]
        assert sum(e["event"] == "fill_duplicate" for e in logs) == 2
        rows = await rig.pool.fetch("SELECT trade_id FROM fills WHERE trade_id = ANY($1::bigint[]) ORDER BY 1",
                                    [first_id, first_id + 1])
        assert [r["trade_id"] for r in rows] == [first_id, first_id + 1]
        assert [t.exit_reason for t in await rig.repo.trades()] == [ExitReason.ADL]


async def test_a_stop_cancelled_by_someone_else_is_placed_again_at_once(shared_data: Path, pg_dsn: str) -> None:
    """Someone (a person, another tool) cancels our stop over REST: the ALGO_UPDATE CANCELED we did not ask for
    has the executor protect the position again at once — a new stop at the exchange, booked and stored — without
    waiting for the next reconciliation (minutes away). The person is told (a person moving our stop in the app
    used to learn of it from a log line only)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        told = Told()
        ex = await rig.executor(notifier=told)
        entry = await open_position(rig, ex, "BTCUSDT", "LONG")
        old = entry.sl_client_id
        assert old is not None
        rounds = ex.stats.reconciliations
        cancelled = arrival(ex, lambda e: isinstance(e, AlgoUpdate) and e.client_algo_id == old
                            and e.status == "CANCELED")

        status, body = await signed(rig.session, rig.emulator, "DELETE", "/fapi/v1/algoOrder",
                                    [("symbol", "BTCUSDT"), ("clientAlgoId", old)])
        assert status == 200, body
        await asyncio.wait_for(cancelled.wait(), 10)
        await ex.idle()

        live = {a.client_algo_id: a for a in rig.account.open_algo_orders("BTCUSDT")}
        new = ex.book["BTCUSDT"].sl_client_id
        assert new is not None and new != old and live[new].type == "STOP_MARKET"
        assert live[new].trigger_price == rig.account.query_algo(client_algo_id=old).trigger_price
        assert entry.tp_client_id in live and len(live) == 2
        ((_, meta),) = await rig.repo.open_positions()
        assert meta["sl_client_id"] == new
        assert ex.stats.reconciliations == rounds
        replaced = [text for kind, text in told.sent if kind == "error"]
        assert len(replaced) == 1 and "BTCUSDT" in replaced[0] and "stop CANCELED by someone else" in replaced[0]


async def test_a_captured_finished_stop_that_executed_nothing_is_replaced_at_once(shared_data: Path,
                                                                                 pg_dsn: str) -> None:
    """``ws_futures_algo_update_finished_canceled.json``: the stop FINISHED with ``aq = "0"`` — it fired but its
    order executed nothing, so the position is unprotected. Replayed for our ETHUSDT short's stop (which the
    exchange no longer holds): a new stop at once. A FINISHED stop that did execute (``aq > 0``) changes nothing."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        old = entry.sl_client_id
        assert old is not None
        state = rig.account.query_algo(client_algo_id=old)

        def finished(name: str) -> dict[str, Any]:
            frame = capture(shared_data, name)
            frame["data"]["E"] = frame["data"]["T"] = rig.clock()
            frame["data"]["o"].update(caid=old, aid=state.algo_id, s="ETHUSDT", S=state.side, o=state.type,
                                      tp=str(state.trigger_price), q=str(entry.position.quantity))
            return frame

        log_before = list(rig.account.order_log)
        executed = finished("ws_futures_algo_update_finished.json")
        assert Decimal(executed["data"]["o"]["aq"]) > 0
        await replay(rig, ex, executed)
        assert rig.account.order_log == log_before and ex.book["ETHUSDT"].sl_client_id == old

        rig.account.cancel_algo(symbol="ETHUSDT", client_algo_id=old, time_ms=rig.clock())  # gone, silently
        frame = finished("ws_futures_algo_update_finished_canceled.json")
        assert frame["data"]["o"]["X"] == "FINISHED" and frame["data"]["o"]["aq"] == "0"
        await replay(rig, ex, frame)

        new = ex.book["ETHUSDT"].sl_client_id
        live = {a.client_algo_id: a for a in rig.account.open_algo_orders("ETHUSDT")}
        assert new is not None and new != old and live[new].type == "STOP_MARKET"
        assert live[new].trigger_price == state.trigger_price


async def test_a_failed_exit_leaves_the_stop_and_target_armed(shared_data: Path, pg_dsn: str) -> None:
    """The market exit is refused at every try (503 on placements): the position keeps its stop and target, never
    cancelled, and nothing else is sent. A close used to cancel them first, so a refused exit left the position
    without an exchange-side stop until its retries were spent, and again at every retry of the exit clock (found by
    a review of the exchange in distress: a flash move through the stop cost 2.16× the planned loss)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        told = Told()
        ex = await rig.executor(orders={"exit_max_attempts": 2}, notifier=told)
        entry = await open_position(rig, ex, "BTCUSDT", "LONG")
        armed = {entry.sl_client_id, entry.tp_client_id}
        rig.emulator.faults.order_reject_503(4, only="reduce_only")
        sent = list(rig.account.order_log)
        with structlog.testing.capture_logs() as logs:
            assert not await ex.close("BTCUSDT", ExitReason.TIME)
            assert not await ex.close("BTCUSDT", ExitReason.TIME)  # the exit clock's next try, 15 s later
            await ex.idle()
        assert {a.client_algo_id for a in rig.account.open_algo_orders("BTCUSDT")} == armed
        assert {ex.book["BTCUSDT"].sl_client_id, ex.book["BTCUSDT"].tp_client_id} == armed
        assert rig.account.order_log == sent  # no cancel and no new stop or target reached the exchange
        assert not [e for e in logs if e["event"] == "protection_ended"]
        # told once an hour, not at every try (an outage of two hours told ~90 of them), and whether a stop stands
        alarm, error = [text for kind, text in told.sent if kind == "error"]
        assert alarm == "ERROR order_alarm: BTCUSDT: exit not done after 2 attempts"
        assert error.startswith("ERROR exit failed BTCUSDT (time_limit): ") and "its stop is in place" in error
        assert ex.stats.alarms_not_repeated == 2  # the second try's two


async def test_an_exit_refused_for_a_conflict_with_open_orders_cancels_them_and_goes_again(
        shared_data: Path, pg_dsn: str) -> None:
    """-2022 while the position is still open: the exchange says open orders conflict with the reduce-only exit. Our
    stop and target are cancelled, once, and the next exit closes the position."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await open_position(rig, ex, "BTCUSDT", "LONG")
        rig.emulator.faults.reduce_only_conflict(1)
        with structlog.testing.capture_logs() as logs:
            assert await ex.close("BTCUSDT", ExitReason.MANUAL)
            await ex.idle()
        assert rig.account.positions() == [] and rig.account.open_algo_orders() == []
        assert len([e for e in logs if e["event"] == "exit_conflicts_with_orders"]) == 1
        (trade,) = await rig.repo.trades()
        assert trade.exit_reason is ExitReason.MANUAL


async def test_a_repair_waits_for_a_reconciliation_under_way_and_places_one_stop(shared_data: Path,
                                                                                 pg_dsn: str) -> None:
    """The stop cancelled by someone else while a reconciliation runs (it holds no symbol lock): the immediate
    repair waits for it instead of re-placing the same stop beside it; then exactly one new stop stands."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "BTCUSDT", "LONG")
        old = entry.sl_client_id
        assert old is not None
        cancelled = arrival(ex, lambda e: isinstance(e, AlgoUpdate) and e.client_algo_id == old
                            and e.status == "CANCELED")
        async with ex._reconciling:  # a reconciliation under way
            status, body = await signed(rig.session, rig.emulator, "DELETE", "/fapi/v1/algoOrder",
                                        [("symbol", "BTCUSDT"), ("clientAlgoId", old)])
            assert status == 200, body
            await asyncio.wait_for(cancelled.wait(), 10)
            repairs = [t for t in ex._finishing if not t.done()]
            assert repairs, "a repair was scheduled"
            await asyncio.wait(repairs, timeout=0.2)  # given every chance to run: it must wait
            assert ex.book["BTCUSDT"].sl_client_id == old and not any(t.done() for t in repairs)
        await ex.idle()
        live = {a.client_algo_id: a for a in rig.account.open_algo_orders("BTCUSDT")}
        new = ex.book["BTCUSDT"].sl_client_id
        assert new is not None and new != old and live[new].type == "STOP_MARKET" and len(live) == 2


async def test_a_rate_limit_during_an_exit_is_waited_out_on_the_wall_clock(shared_data: Path, pg_dsn: str) -> None:
    """The rig's order path runs on market time (2023), as a replay with keys does; a 429's pause ends at a wall-clock
    instant. Measured on the market clock, the exit waited years after cancelling the position's stop and target."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(exit_check_interval_s=3600.0)
        await ex.handle(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0))
        assert "BTCUSDT" in ex.book and rig.clock() < 1_700_000_000_000  # precondition: the clock is 2023's
        rig.emulator.faults.http_error(429, count=1, path="/fapi/v3/positionRisk")  # Retry-After: 1
        assert await asyncio.wait_for(ex.close("BTCUSDT", ExitReason.TIME), 30)
        assert not rig.account.positions()


async def test_a_forced_exit_that_finds_the_stop_fired_is_a_stop_loss_and_tells_no_forced_exit(
        shared_data: Path, pg_dsn: str) -> None:
    """The exchange fired our ETHUSDT stop while we could not hear (the stream down, a maintenance); the 2-hour exit
    then finds the position flat and sends nothing. It used to be told as a FORCED EXIT and stored as a
    ``time_limit`` trade (no stop-loss cooldown, a wrong label for the learner); the trade is the stop's."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        told = Told()
        ex = await rig.executor(notifier=told)
        entry = await open_position(rig, ex, "ETHUSDT", "LONG")
        stop = entry.position.stop_price
        assert stop is not None
        fired = rig.account.on_price("ETHUSDT", stop * Decimal("0.97"), rig.clock(), gap=True)  # not on the stream
        assert any(isinstance(e, AlgoUpdate) and e.status == "FINISHED" for e in fired), "precondition: it fired"

        assert await ex.close("ETHUSDT", ExitReason.TIME)
        await ex.reconcile()
        await ex.idle()

        (trade,) = await rig.repo.trades()
        assert trade.exit_reason is ExitReason.STOP_LOSS and "ETHUSDT" not in ex.book
        assert ex.stats.forced_exits == 0 and [k for k, _ in told.sent] == ["open", "close"]
        again = rig.signal("ETHUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        assert ex.submit(replace(again, signal_id=f"{again.signal_id}:again"))
        await ex.idle()
        assert ex.stats.skip_reasons == {"cooldown": 1}  # the stop-loss cooldown holds


async def test_a_stop_that_fires_while_our_exit_is_refused_is_a_stop_loss_whatever_is_heard_first(
        shared_data: Path, pg_dsn: str) -> None:
    """Our 2-hour exit is being refused (503s) when the stop, armed until the position is flat, fires. Its order
    carries an id the exchange made up, and its fill is heard before the ALGO_UPDATE naming it (Binance does not
    document their order). The fill is not our exit's — ours carry our id — so it is named by its price, a
    ``stop_loss``; it was named after the exit under way (``time_limit``: no cooldown, a wrong label)."""
    async with trading_rig(shared_data, pg_dsn, trigger_ids="exchange") as rig:
        told = Told()
        ex = await rig.executor(notifier=told, orders={"exit_retry_base_s": 0.3})
        entry = await open_position(rig, ex, "ETHUSDT", "LONG")
        stop = entry.position.stop_price
        assert stop is not None
        rig.emulator.faults.order_reject_503(3, only="reduce_only")
        refused = asyncio.Event()
        rig.emulator.faults.order_fault_listeners.append(lambda kind, placement: refused.set())
        closing = asyncio.ensure_future(ex.close("ETHUSDT", ExitReason.TIME))
        await asyncio.wait_for(refused.wait(), 10)
        assert ex.book["ETHUSDT"].status == "closing", "precondition: our exit is under way"

        fired = rig.account.on_price("ETHUSDT", stop * Decimal("0.99"), rig.clock(), gap=True)
        fill_heard = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.has_fill)
        rig.emulator.user_data.publish([e for e in fired if not isinstance(e, AlgoUpdate)])
        await asyncio.wait_for(fill_heard.wait(), 10)
        await ex.idle()
        rig.emulator.user_data.publish([e for e in fired if isinstance(e, AlgoUpdate)])  # the ALGO_UPDATE after
        assert await asyncio.wait_for(closing, 30)
        await ex.idle()

        (trade,) = await rig.repo.trades()
        assert trade.exit_reason is ExitReason.STOP_LOSS and trade.exit_price < stop
        assert [k for k, _ in told.sent] == ["open", "close"] and "· stop_loss ·" in told.sent[-1][1]
