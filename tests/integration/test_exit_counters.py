"""A closed trade leaves no retry counters in the order manager, also when its exit's answer comes after its fills:
the trade settled from the fills (the manager forgot its counters), then the closer counted its try, one counter per
such trade kept for as long as the process ran. Emulator (real 2023 candles) over real sockets, PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from tests.integration.test_forced_exits import open_position
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration


async def test_an_exit_answered_after_its_fills_leaves_no_retry_counters(shared_data: Path, pg_dsn: str) -> None:
    """The exit is executed but answered 503 "unknown": its fill is heard on the user stream while the closer asks
    the exchange what became of it."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await open_position(rig, ex, "ETHUSDT", "LONG")
        assert ex.manager.tracked_signals == 1
        rig.emulator.faults.order_unknown(1, only="reduce_only")

        assert await ex.close("ETHUSDT", ExitReason.TIME)
        await ex.idle()
        (trade,) = await rig.repo.trades()
        assert trade.exit_reason == ExitReason.TIME and "ETHUSDT" not in ex.book
        assert rig.emulator.faults.counters["order_unknown"] == 1
        assert ex.manager.tracked_signals == 0
