"""A stop (SIGTERM) while an entry or an exit is in flight. The entry finishes — its stop and target at the
exchange, the position in the book and in PostgreSQL — before the executor stops. The scaled executor cancels
the task that awaits ``Executor.handle`` at shutdown; the entry used to be cut off mid-way, its protection left
running in the background that nothing waited for, the HTTP session closed under it, and the position held with
no stop and no row until a later start adopted it from the order journal. An exit under way finishes too, or,
cut by the stop's budget, leaves the position with its stop and target. Emulator (real 2023 candles), signed
REST, the ``/private`` user-data stream, PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from smc_quant.orders.broker import AlgoUpdate
from tests.integration.test_forced_exits import arrival
from tests.integration.trading_kit import Rig, trading_rig

pytestmark = pytest.mark.integration


async def _entry_being_protected(rig: Rig, ex: Executor) -> asyncio.Task[None]:
    """A BTCUSDT long being handled, its stop placed at the exchange but the answer held past the client's 1 s
    timeout: the entry's protection is still in flight."""
    rig.emulator.faults.order_timeout(1, hold_s=30.0, only="algo")
    placed = arrival(ex, lambda e: isinstance(e, AlgoUpdate) and e.symbol == "BTCUSDT" and e.status == "NEW")
    handling = asyncio.create_task(ex.handle(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0,
                                                        target_pct=30.0)))
    await asyncio.wait_for(placed.wait(), 10)
    assert not handling.done(), "precondition: the entry is still being protected"
    return handling


async def test_a_stop_during_an_entry_waits_until_the_position_is_protected_and_stored(
        shared_data: Path, pg_dsn: str) -> None:
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        handling = await _entry_being_protected(rig, ex)
        handling.cancel()  # what the scaled executor's supervisor does to the task awaiting handle() at a stop
        with contextlib.suppress(asyncio.CancelledError):
            await handling
        await ex.stop()

        assert [p.symbol for p in rig.account.positions()] == ["BTCUSDT"]
        assert sorted(a.type for a in rig.account.open_algo_orders("BTCUSDT")) == ["STOP_MARKET",
                                                                                     "TAKE_PROFIT_MARKET"]
        assert "BTCUSDT" in ex.book
        assert [p.symbol for p, _ in await rig.repo.open_positions()] == ["BTCUSDT"]


async def test_a_bound_on_idle_does_not_cancel_the_entry_it_waits_for(shared_data: Path, pg_dsn: str) -> None:
    """The scaled executor's stop waits for ``idle()`` at most 4 s, less than an order's 5 s timeout. Waiting with
    a gather, the bound cancelled what idle() waited for: the entry that handle() shields from cancellation."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        handling = await _entry_being_protected(rig, ex)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ex.idle(), 0.1)  # what ExecutorProcess.stop does, with its 4 s
        await handling  # the entry was not cancelled: it finishes
        await ex.stop()
        assert sorted(a.type for a in rig.account.open_algo_orders("BTCUSDT")) == ["STOP_MARKET",
                                                                                     "TAKE_PROFIT_MARKET"]
        assert [p.symbol for p, _ in await rig.repo.open_positions()] == ["BTCUSDT"]


async def _exit_under_way(rig: Rig, ex: Executor) -> asyncio.Task[bool]:
    """A protected BTCUSDT long, then its 2-hour exit asked for as the exit clock's loop does, once the exchange
    refused its first try (refused for as long as the test's faults say); its stop and target stay armed."""
    await ex.handle(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0))
    assert len(rig.account.open_algo_orders("BTCUSDT")) == 2
    refused = asyncio.Event()
    rig.emulator.faults.order_fault_listeners.append(
        lambda kind, placement: refused.set() if placement == "reduce_only" else None)
    closing = asyncio.create_task(ex.close("BTCUSDT", ExitReason.TIME))
    await asyncio.wait_for(refused.wait(), 10)
    assert not closing.done() and len(rig.account.open_algo_orders("BTCUSDT")) == 2, "precondition: under way"
    return closing


async def test_a_stop_lets_an_exit_under_way_finish(shared_data: Path, pg_dsn: str) -> None:
    """SIGTERM cancels the loop that asked for the exit while it is under way: the exit used to be cut off there —
    after the position's stop and target were cancelled, as exits then did first — leaving the position open with
    no exchange-side stop until the next start. It finishes: flat, the stop and target cancelled."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(exit_check_interval_s=3600.0)  # the test asks for the exit itself
        rig.emulator.faults.order_reject_503(3, only="reduce_only")  # the exit is refused three times, then fills
        closing = await _exit_under_way(rig, ex)
        closing.cancel()  # what stop() does to the exit clock's loop (a flatten's watcher, the marks task alike)
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        await rig.kill(ex)
        assert rig.emulator.faults.counters["order_reject_503"] == 3
        assert not rig.account.positions() and not rig.account.open_algo_orders("BTCUSDT")
        await rig.executor()  # the next start settles what the stop left unfinished: one trade, no position
        assert [t.exit_reason for t in await rig.repo.trades()] == [ExitReason.TIME]
        assert not await rig.repo.open_positions()


async def test_an_exit_cut_off_by_the_stops_budget_puts_the_stop_and_target_back(shared_data: Path,
                                                                                pg_dsn: str) -> None:
    """The exchange refuses the exit for longer than the stop waits: the exit is cancelled at the end of the
    stop's budget, and the position keeps its stop and target (checked again; exits used to cancel them first)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(exit_check_interval_s=3600.0, stop_wait_s=1.0)
        rig.emulator.faults.order_reject_503(1000, only="reduce_only")
        closing = await _exit_under_way(rig, ex)
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        await rig.kill(ex)
        rig.emulator.faults.order_faults.clear()
        assert [p.symbol for p in rig.account.positions()] == ["BTCUSDT"]
        assert sorted(a.type for a in rig.account.open_algo_orders("BTCUSDT")) == ["STOP_MARKET",
                                                                                     "TAKE_PROFIT_MARKET"]
        assert [(p.symbol, meta["status"]) for p, meta in await rig.repo.open_positions()] == [("BTCUSDT", "open")]


async def test_signals_handled_once_the_stop_began_enter_nothing(shared_data: Path, pg_dsn: str) -> None:
    """The service's stop flushes the feed, which scores a last minute: its signals are skipped as ``stopping``
    (stored so) instead of opening positions that race the stop's budget."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        ex.stop_intake()
        signal = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)
        await ex.handle(signal)
        await ex.idle()
        assert not rig.account.positions() and not ex.book
        assert ex.stats.skip_reasons == {"stopping": 1}
        stored = await rig.pool.fetchrow("SELECT decision, decision_reason FROM signals WHERE signal_id = $1",
                                         signal.signal_id)
        assert stored is not None and tuple(stored) == ("skip", "stopping")
