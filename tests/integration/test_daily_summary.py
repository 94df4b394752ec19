"""The daily summary counts the day's trades from PostgreSQL: a service restarted during the day used to tell only
the trades its own process had closed. Emulator (real 2023 candles), PostgreSQL, the real Notifier against a local
stand-in for Discord."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason, Trade
from smc_quant.notify import daily_summary
from smc_quant.risk import DAY_MS
from tests.integration.test_alarm_notify import _told_until
from tests.integration.test_notify import FakeChat, _notifier, chat  # noqa: F401 (the fixture)
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration


async def test_the_summary_counts_the_trades_closed_before_a_restart(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    fake, base = chat
    notifier = _notifier(base, telegram_token=None, telegram_chat_id=None)
    await notifier.start()
    try:
        async with trading_rig(shared_data, pg_dsn) as rig:
            day = rig.clock() // DAY_MS
            start = day * DAY_MS
            # closed by the process before this one: a win, a loss, and one of the day before (not counted)
            closed = [Trade("s1", "BTCUSDT", "LONG", Decimal("0.01"), Decimal("27000"), Decimal("27300"),
                            start + 3_600_000, start + 4_000_000, Decimal("0.2"), ExitReason.TAKE_PROFIT),
                      Trade("s2", "ETHUSDT", "SHORT", Decimal("0.1"), Decimal("1800"), Decimal("1810"),
                            start + 5_000_000, start + 6_000_000, Decimal("0.1"), ExitReason.STOP_LOSS),
                      Trade("s0", "SOLUSDT", "LONG", Decimal("1"), Decimal("20"), Decimal("21"),
                            start - 7_000_000, start - 6_000_000, Decimal("0.05"), ExitReason.TAKE_PROFIT)]
            for trade in closed:
                assert await rig.repo.close_trade(trade, features=[], schema_version="",
                                                  signal_time_ms=trade.entry_time_ms, model_version=None) is not None
            now = {"ms": start + 7_000_000}
            ex = await rig.executor(notifier=notifier, clock=lambda: now["ms"])
            await ex.check_exits()  # the first check: the day is under way
            now["ms"] = start + DAY_MS + 1_000  # past midnight
            await ex.check_exits()
            await ex.check_exits()  # once a day
            notifier.notify("marker", "info")
            texts = await _told_until(fake, "marker")
    finally:
        await notifier.close()
    summaries = [t for t in texts if t.startswith("DAY")]
    assert summaries == [daily_summary(closed[:2], ex.snapshot().equity)], texts
    assert summaries[0].startswith("DAY 2 trades · 1W/1L")
