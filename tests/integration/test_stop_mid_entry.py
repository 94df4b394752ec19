"""A stop (SIGTERM) while an entry is in flight: the entry finishes — its stop and target at the exchange, the
position in the book and in PostgreSQL — before the executor stops. The scaled executor cancels the task that
awaits ``Executor.handle`` at shutdown; the entry used to be cut off mid-way, its protection left running in the
background that nothing waited for, the HTTP session closed under it, and the position held with no stop and no
row until a later start adopted it from the order journal. Emulator (real 2023 candles), signed REST, the
``/private`` user-data stream, PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from smc_quant.orders.broker import AccountEvent, AlgoUpdate
from tests.integration.test_forced_exits import arrival
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration


async def test_a_stop_during_an_entry_waits_until_the_position_is_protected_and_stored(
        shared_data: Path, pg_dsn: str) -> None:
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        # the entry's stop executes at the exchange, its answer is held past the client's 1 s timeout: the
        # protection is still in flight when the stop comes
        rig.emulator.faults.order_timeout(1, hold_s=30.0, only="algo")
        signal = rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=8.0, target_pct=30.0)

        def stop_placed(e: AccountEvent) -> bool:
            return isinstance(e, AlgoUpdate) and e.symbol == "BTCUSDT" and e.status == "NEW"

        placed = arrival(ex, stop_placed)
        handling = asyncio.create_task(ex.handle(signal))
        await asyncio.wait_for(placed.wait(), 10)
        assert not handling.done(), "precondition: the entry is still being protected"

        handling.cancel()  # what the scaled executor's supervisor does to the task awaiting handle() at a stop
        with contextlib.suppress(asyncio.CancelledError):
            await handling
        await ex.stop()

        assert [p.symbol for p in rig.account.positions()] == ["BTCUSDT"]
        assert sorted(a.type for a in rig.account.open_algo_orders("BTCUSDT")) == ["STOP_MARKET",
                                                                                     "TAKE_PROFIT_MARKET"]
        assert "BTCUSDT" in ex.book
        assert [p.symbol for p, _ in await rig.repo.open_positions()] == ["BTCUSDT"]
