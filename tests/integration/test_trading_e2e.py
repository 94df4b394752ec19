"""Signals → orders → exchange-side protection → exits → trades, end to end on the emulator with real candles.

Real sockets (signed REST + the ``/private`` user-data stream), real PostgreSQL, the real executor,
risk manager and order manager. The exchange's own fills (the emulator's account) are the independent
record every stored trade is checked against.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from smc_quant.correlation import SeriesReturns
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.trading import ExitReason, PositionSide, Signal
from tests.integration.trading_kit import Rig, check_trades, trading_rig

pytestmark = pytest.mark.integration

HOLD_MS = 2 * 3_600_000


def _tp_case(rig: Rig, symbol: str) -> tuple[PositionSide, float, float]:
    """Side and a (stop, target) pair that the real path resolves by the target first, by a wide margin."""
    entry = float(rig.price(symbol))
    path = rig.future(symbol, 30)
    up = max(h for h, _, _ in path[:15]) / entry - 1
    down = 1 - min(low for _, low, _ in path[:15]) / entry
    side: PositionSide = "LONG" if up >= down else "SHORT"
    move = max(up, down)
    assert move > 0.0008, "precondition: the next 15 minutes move enough for a target"
    return side, 3.0, 100 * move * 0.5


def _sl_case(rig: Rig, symbol: str) -> tuple[PositionSide, float, float]:
    """Side and (stop, target) the real path resolves by the stop first: the stop on the side that moves."""
    side, _, half_move = _tp_case(rig, symbol)
    against: PositionSide = "SHORT" if side == "LONG" else "LONG"
    return against, half_move, 6.0


async def _until_in_profit(rig: Rig, ex: Any, symbol: str) -> None:
    """Let the replay run (in market minutes, at most 15) until ``symbol``'s position is in profit: rotation
    needs the weakest position there."""
    for _ in range(15):
        entry = ex.book[symbol].position
        if (rig.price(symbol) - entry.entry_price) * (1 if entry.side == "LONG" else -1) > 0:
            return
        await rig.minutes(1)
    pytest.fail(f"precondition: {symbol} never moved into profit within 15 minutes")


async def _full_book_weakest_in_profit(rig: Rig, ex: Any) -> None:
    """Three positions (the book's limit), XRPUSDT the weakest (confidence 0.6), run until it is in profit: the
    next stronger signal rotates it out."""
    weak_side = _tp_case(rig, "XRPUSDT")[0]
    for s in (rig.signal("XRPUSDT", weak_side, confidence=0.6, stop_pct=8.0, target_pct=30.0),
              rig.signal("BTCUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0),
              rig.signal("SOLUSDT", "LONG", confidence=0.8, stop_pct=8.0, target_pct=30.0)):
        assert ex.submit(s)
    await ex.idle()
    assert len(ex.book) == 3
    await _until_in_profit(rig, ex, "XRPUSDT")


async def test_tp_sl_time_limit_and_rotation_end_in_trades_that_match_the_exchange_fills(
        shared_data: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """Four exits, four reasons; every trade's PnL and fees equal the exchange's fills; no secret logged."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        async with trading_rig(shared_data, pg_dsn) as rig:
            ex = await rig.executor()
            # 1 and 2: a take-profit and a stop-loss the real price path resolves within minutes
            side, stop, target = _tp_case(rig, "BTCUSDT")
            tp_signal = rig.signal("BTCUSDT", side, confidence=0.75, stop_pct=stop, target_pct=target)
            side, stop, target = _sl_case(rig, "ETHUSDT")
            sl_signal = rig.signal("ETHUSDT", side, confidence=0.75, stop_pct=stop, target_pct=target)
            # 3: wide exits: only the 2-hour limit can end it
            time_signal = rig.signal("SOLUSDT", "LONG", confidence=0.8, stop_pct=8.0, target_pct=30.0)
            for s in (tp_signal, sl_signal, time_signal):
                assert ex.submit(s)
            await ex.idle()
            assert set(ex.book) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
            opened_at = ex.book["SOLUSDT"].position.entry_time_ms
            for entry in ex.book.values():  # exchange-side protection exists for every position
                algos = {a.client_algo_id: a for a in rig.account.open_algo_orders(entry.position.symbol)}
                assert entry.sl_client_id in algos and entry.tp_client_id in algos
                assert algos[entry.sl_client_id].type == "STOP_MARKET"
                assert algos[entry.tp_client_id].type == "TAKE_PROFIT_MARKET"

            await rig.minutes(16)
            await ex.idle()
            reasons = {t.symbol: t.exit_reason for t in ex.trades}
            assert reasons == {"BTCUSDT": ExitReason.TAKE_PROFIT, "ETHUSDT": ExitReason.STOP_LOSS}
            assert rig.account.open_algo_orders("BTCUSDT") == [] and rig.account.open_algo_orders("ETHUSDT") == []

            # 4: rotation — fill the book (3 positions), then a stronger signal while the weakest is in profit
            weak_side = _tp_case(rig, "XRPUSDT")[0]  # the side the next minutes favour
            weak = rig.signal("XRPUSDT", weak_side, confidence=0.6, stop_pct=8.0, target_pct=30.0)
            mid = rig.signal("BTCUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0)
            for s in (weak, mid):
                assert ex.submit(s)
            await ex.idle()
            assert len(ex.book) == 3
            await _until_in_profit(rig, ex, "XRPUSDT")
            strong = rig.signal("DOGEUSDT", "LONG", confidence=0.9, stop_pct=8.0, target_pct=30.0)
            assert ex.submit(strong)
            await ex.idle()
            assert "XRPUSDT" not in ex.book and "DOGEUSDT" in ex.book
            assert [t.exit_reason for t in ex.trades if t.symbol == "XRPUSDT"] == [ExitReason.ROTATION]

            # the 2-hour limit: SOLUSDT is closed on time by the executor's exit check
            remaining = (opened_at + HOLD_MS - rig.clock()) // 60_000 + 2
            await rig.minutes(int(remaining))
            await ex.idle()
            sol = [t for t in ex.trades if t.symbol == "SOLUSDT"]
            assert [t.exit_reason for t in sol] == [ExitReason.TIME]
            held = sol[0].exit_time_ms - sol[0].entry_time_ms
            assert HOLD_MS <= held <= HOLD_MS + 60_000, held

            stored = await rig.repo.trades()
            assert {t.signal_id for t in stored} == {t.signal_id for t in ex.trades}
            check_trades(stored, rig.account.fills)
            experience = await rig.repo.experience(tp_signal.schema_version)
            assert len(experience) == len(stored)
            log = rig.account.order_log
            assert len(log) == len(set(log)), "a client id reached the exchange twice"
            api_key, secret = rig.emulator.config.api_key, rig.emulator.config.api_secret
    text = repr(logs) + caplog.text
    assert secret not in text and api_key not in text
    assert Decimal(0) != sum((t.net_pnl for t in stored), Decimal(0))


async def test_a_second_long_that_moves_with_an_open_long_is_refused_and_recorded(
        shared_data: Path, pg_dsn: str) -> None:
    """The correlation guard end to end: ETHUSDT's returns are given BTCUSDT's real closes (ρ = 1), SOLUSDT
    its own. With a BTCUSDT long open, an ETHUSDT long is refused (``correlated``, stored with the figures, no
    order sent), an ETHUSDT short (a hedge) and a SOLUSDT long open."""
    btc = read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz")
    sol = read_klines(shared_data / KLINES_2023_1M / "SOLUSDT.csv.gz")
    returns = SeriesReturns({"BTCUSDT": (btc.open_time, btc.close), "ETHUSDT": (btc.open_time, btc.close),
                             "SOLUSDT": (sol.open_time, sol.close)})
    at = int(btc.open_time[5_000])  # the minute the correlations are read at: 2 hours of real history before it
    sol_rho = returns.correlations("SOLUSDT", ["BTCUSDT"], at)["BTCUSDT"]
    assert sol_rho < 0.8, "precondition: real SOLUSDT does not move in lockstep with BTCUSDT there"

    def signal(rig: Rig, symbol: str, side: PositionSide) -> Signal:
        s = rig.signal(symbol, side, confidence=0.75, stop_pct=5.0, target_pct=20.0)
        return replace(s, open_time=at, signal_id=f"{symbol}:{side}:{at}")

    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(returns=returns)
        assert ex.submit(signal(rig, "BTCUSDT", "LONG"))
        await ex.idle()
        twin = signal(rig, "ETHUSDT", "LONG")
        assert ex.submit(twin)
        await ex.idle()
        assert set(ex.book) == {"BTCUSDT"} and ex.stats.skip_reasons == {"correlated": 1}
        assert ex.metrics()["executor_skipped_correlated"] == 1.0
        assert rig.account.open_orders("ETHUSDT") == [] and rig.account.open_algo_orders("ETHUSDT") == []
        row = await rig.pool.fetchrow("SELECT decision, decision_reason, decision_detail FROM signals "
                                      "WHERE signal_id = $1", twin.signal_id)
        assert (row["decision"], row["decision_reason"]) == ("skip", "correlated")
        assert json.loads(row["decision_detail"])["correlations"] == {"BTCUSDT": 1.0}
        for s in (signal(rig, "ETHUSDT", "SHORT"), signal(rig, "SOLUSDT", "LONG")):
            assert ex.submit(s)
            await ex.idle()
        assert set(ex.book) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"} and ex.stats.skipped == 1
        assert ex.book["ETHUSDT"].position.side == "SHORT"


async def test_restart_with_open_positions_recovers_book_protection_and_clock_without_duplicates(
        shared_data: Path, pg_dsn: str) -> None:
    """Entries answered by a timeout and a 503 "unknown"; the executor is killed with three open positions;
    one stop fires while it is down. The new executor recovers the book, finds the stop's exit, keeps the
    exchange-side protection (places nothing twice) and closes the rest at the 2-hour limit."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        first = await rig.executor()
        faults = rig.emulator.faults
        faults.order_timeout(1, hold_s=2.0)  # the BTCUSDT entry executes, its answer never arrives in time
        faults.order_unknown(1)  # the next placement (BTCUSDT's stop) executes and answers 503 unknown
        held = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        other = rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0)
        side, stop, target = _sl_case(rig, "SOLUSDT")
        stopped = rig.signal("SOLUSDT", side, confidence=0.75, stop_pct=stop, target_pct=target)
        for s in (held, other, stopped):
            assert first.submit(s)
        await first.idle()
        assert set(first.book) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
        assert first.manager.stats["unknown_queried"] >= 2 and first.manager.stats["resent"] == 0
        entry_times = {s: e.position.entry_time_ms for s, e in first.book.items()}
        protection = {s: (e.sl_client_id, e.tp_client_id) for s, e in first.book.items()}
        state = rig.emulator.state()["faults"]
        assert state["counters"].get("order_timeout", 0) == 1 and state["counters"].get("order_unknown", 0) == 1

        await rig.kill(first)
        await rig.minutes(20)  # SOLUSDT's stop fires while no executor runs
        log_before = list(rig.account.order_log)

        second = await rig.executor()
        await second.idle()
        assert set(second.book) == {"BTCUSDT", "ETHUSDT"}
        for symbol, entry in second.book.items():
            assert entry.position.entry_time_ms == entry_times[symbol]
            assert (entry.sl_client_id, entry.tp_client_id) == protection[symbol]
        assert rig.account.order_log == log_before, "the restart sent an order"
        sol = [t for t in await rig.repo.trades() if t.symbol == "SOLUSDT"]
        assert [t.exit_reason for t in sol] == [ExitReason.STOP_LOSS]

        remaining = (max(entry_times.values()) + HOLD_MS - rig.clock()) // 60_000 + 2
        await rig.minutes(int(remaining))
        await second.idle()
        closed = {t.symbol: t for t in second.trades if t.symbol != "SOLUSDT"}
        assert {s: t.exit_reason for s, t in closed.items()} == {"BTCUSDT": ExitReason.TIME,
                                                                  "ETHUSDT": ExitReason.TIME}
        for symbol, trade in closed.items():
            assert trade.entry_time_ms == entry_times[symbol]
            assert HOLD_MS <= trade.exit_time_ms - trade.entry_time_ms <= HOLD_MS + 60_000
        log = rig.account.order_log
        assert len(log) == len(set(log)), "a client id reached the exchange twice"
        stored = await rig.repo.trades()
        assert len(stored) == 3
        check_trades([t for t in stored if t.symbol != "SOLUSDT"], rig.account.fills)


async def test_a_rotation_whose_exit_fails_opens_nothing_so_three_stay_three(shared_data: Path, pg_dsn: str) -> None:
    """The book is full and a stronger signal rotates out the weakest position, in profit; the exchange refuses
    every attempt of that exit (503 × 8). The weakest stays, protected again, and the stronger signal is skipped
    ``rotation_not_closed``: the exchange holds three positions, not four (the entry used to go out anyway)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await _full_book_weakest_in_profit(rig, ex)
        rig.emulator.faults.order_reject_503(8)
        assert ex.submit(rig.signal("DOGEUSDT", "LONG", confidence=0.9, stop_pct=8.0, target_pct=30.0))
        await ex.idle()

        assert ex.stats.rotations == 1 and ex.stats.skip_reasons.get("rotation_not_closed") == 1
        assert set(ex.book) == {"XRPUSDT", "BTCUSDT", "SOLUSDT"} and ex.book["XRPUSDT"].status == "open"
        assert sorted(p.symbol for p in rig.account.positions()) == ["BTCUSDT", "SOLUSDT", "XRPUSDT"]
        algos = {a.client_algo_id for a in rig.account.open_algo_orders("XRPUSDT")}
        assert ex.book["XRPUSDT"].sl_client_id in algos  # the failed exit had cancelled it: placed again


async def test_no_rotation_while_the_entry_could_not_be_journalled(shared_data: Path, pg_dsn: str) -> None:
    """The book is full, the weakest position in profit, and PostgreSQL refuses the order journal's rows: the
    entry would be refused (``journal_unavailable``) after the rotation had closed the weakest — a position given
    up for nothing. The journal is probed first: the signal is skipped ``rotation_journal_unavailable`` and the
    three positions stay; with the journal back, the next stronger signal rotates."""
    from tests.integration.test_store_outage import store_down

    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await _full_book_weakest_in_profit(rig, ex)
        sent = len(rig.account.order_log)
        await store_down(rig.pool, True, ("orders",))
        try:
            assert ex.submit(rig.signal("DOGEUSDT", "LONG", confidence=0.9, stop_pct=8.0, target_pct=30.0))
            await ex.idle()
        finally:
            await store_down(rig.pool, False, ("orders",))
        assert ex.stats.skip_reasons.get("rotation_journal_unavailable") == 1 and ex.stats.rotations == 0
        assert set(ex.book) == {"XRPUSDT", "BTCUSDT", "SOLUSDT"} and len(rig.account.order_log) == sent
        assert await rig.pool.fetchval("SELECT count(*) FROM orders WHERE client_order_id = 'journal-probe'") == 0

        await rig.minutes(1)  # a new signal (that one is spent: a refused signal is never retried)
        await _until_in_profit(rig, ex, "XRPUSDT")
        assert ex.submit(rig.signal("DOGEUSDT", "LONG", confidence=0.9, stop_pct=8.0, target_pct=30.0))
        await ex.idle()
        assert ex.stats.rotations == 1 and set(ex.book) == {"DOGEUSDT", "BTCUSDT", "SOLUSDT"}


async def test_a_market_exit_that_filled_while_the_executor_was_down_is_found_and_stored(
        shared_data: Path, pg_dsn: str) -> None:
    """Our market exit (``ex-0``) filled at the exchange, but the executor died before it saw the fill. The next
    one finds the position flat, asks the exchange about its own exit ids, finds the fill and stores the trade,
    matching the exchange's fills (it used to ask only for the stop and target: ``position_vanished``, no
    trade, the day's PnL and the learner never told)."""
    from smc_quant.orders.client_ids import Leg, client_order_id

    async with trading_rig(shared_data, pg_dsn) as rig:
        first = await rig.executor()
        signal = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        assert first.submit(signal)
        await first.idle()
        held = first.book["BTCUSDT"].position
        await rig.kill(first)
        rig.account.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=held.quantity,
                              time_ms=rig.clock(), reduce_only=True,
                              client_order_id=client_order_id(signal.signal_id, Leg.EXIT, 0))
        assert [p for p in rig.account.positions() if p.symbol == "BTCUSDT"] == []

        second = await rig.executor()
        await second.idle()

        assert "BTCUSDT" not in second.book and second.stats.alarms == 0
        stored = [t for t in await rig.repo.trades() if t.symbol == "BTCUSDT"]
        assert [(t.signal_id, t.exit_reason) for t in stored] == [(signal.signal_id, ExitReason.RECONCILED)]
        assert stored[0].quantity == held.quantity
        check_trades(stored, rig.account.fills)


async def test_a_position_whose_stop_and_then_its_close_fail_is_booked_and_protected_again(
        shared_data: Path, pg_dsn: str) -> None:
    """The entry fills; every try of its stop is refused (503, 3 × 3 sends), so it is closed at market; the
    exchange refuses that exit too (503 × 2). The position stays, booked — and protected again at once, as after
    any failed exit (it used to stay with no stop at the exchange until the next reconciliation)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(orders={"exit_max_attempts": 2})
        rig.emulator.faults.order_reject_503(9, only="algo")
        rig.emulator.faults.order_reject_503(2, only="reduce_only")
        assert ex.submit(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0))
        await ex.idle()

        assert rig.emulator.faults.order_faults == [] and ex.manager.stats["alarms"] >= 2
        assert [p.symbol for p in rig.account.positions()] == ["BTCUSDT"] and "BTCUSDT" in ex.book
        live = {a.client_algo_id: a.type for a in rig.account.open_algo_orders("BTCUSDT")}
        entry = ex.book["BTCUSDT"]
        assert entry.sl_client_id is not None and live.get(entry.sl_client_id) == "STOP_MARKET"


async def test_a_signal_held_up_past_its_age_limit_is_skipped_and_a_fresh_one_trades(shared_data: Path,
                                                                                     pg_dsn: str) -> None:
    """A signal whose candle closed ten minutes ago (an executor restart, a Redis outage held it up) is skipped
    as ``stale_signal`` and no order leaves; the same setup on the last closed candle opens."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(max_signal_age_ms=120_000)
        fresh = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        stale = replace(fresh, open_time=fresh.open_time - 10 * 60_000, signal_id=f"{fresh.signal_id}:old")
        log_before = list(rig.account.order_log)
        assert ex.submit(stale)
        await ex.idle()
        assert ex.stats.skip_reasons == {"stale_signal": 1} and rig.account.order_log == log_before
        assert ex.submit(fresh)
        await ex.idle()
        assert "BTCUSDT" in ex.book
