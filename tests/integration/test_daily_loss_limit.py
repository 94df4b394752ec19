"""The daily loss breaker is told when it trips: nothing said so, and the trader saw positions closed as
``daily_breaker`` and then no entries for the rest of the day, with no reason given. Emulator (real 2023 candles)
over real sockets, PostgreSQL, the real Notifier against a local stand-in for Discord."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from tests.integration.test_alarm_notify import _told_until
from tests.integration.test_forced_exits import open_position
from tests.integration.test_notify import FakeChat, _notifier, chat  # noqa: F401 (the fixture)
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration


async def test_the_breaker_is_told_once_with_the_days_loss(shared_data: Path, pg_dsn: str,
                                                          chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """The ETHUSDT long is 10 % under water at its mark; with a 0.5 % daily limit the breaker trips at the next exit
    check, which closes the position. It is told once, with the loss and what it does."""
    fake, base = chat
    notifier = _notifier(base, telegram_token=None, telegram_chat_id=None)
    await notifier.start()
    try:
        async with trading_rig(shared_data, pg_dsn) as rig:
            ex = await rig.executor(notifier=notifier, exit_check_interval_s=3600.0)
            ex.risk.config = replace(ex.risk.config, daily_loss_limit_pct=Decimal("0.5"))
            entry = await open_position(rig, ex, "ETHUSDT", "LONG")
            await ex.check_exits()  # the day's starting equity, before any loss
            assert not ex.risk.breaker_tripped
            start = ex.risk.day_start_equity
            assert start is not None
            ex.on_price("ETHUSDT", entry.position.entry_price * Decimal("0.9"))
            unrealised = ex.snapshot().unrealized_pnl
            assert -unrealised > start * Decimal("0.005"), "precondition: past the limit"

            assert await ex.check_exits() == 1
            await ex.check_exits()  # still tripped: not told again
            await ex.idle()
            (trade,) = await rig.repo.trades()
            assert trade.exit_reason == ExitReason.BREAKER
            notifier.notify("marker", "info")
            told = [t for t in await _told_until(fake, "marker") if t.startswith("DAILY LOSS LIMIT")]
    finally:
        await notifier.close()
    assert told == [f"DAILY LOSS LIMIT · today {unrealised:+.2f} USDT (trades +0.00, open {unrealised:+.2f}) = "
                    f"{-unrealised / start * 100:.2f}% of the day's starting equity {start:.2f} USDT · limit 0.5% · "
                    "no new entries until 00:00 UTC · closing 1 position"]
