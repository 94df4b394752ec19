"""Alarms reach the chat: a position nobody on this executor opened (reconciliation) and a stop the exchange would
not take (the order manager) are "needs a human" alarms, and they were only logged, counted and stored — a trader
without log monitoring never heard of them. A standing alarm, raised again at every reconciliation, is told once
an hour. Emulator (real 2023 candles), signed REST, PostgreSQL, the real Notifier against a local stand-in for
Discord and Telegram."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.test_notify import FakeChat, Hit, _notifier, chat  # noqa: F401 (the fixture)
from tests.integration.trading_kit import trading_rig

pytestmark = pytest.mark.integration


async def _told_until(fake: FakeChat, marker: str) -> list[str]:
    """Every Discord text up to ``marker`` (sent last: the lane is first in, first out)."""
    notifier_texts: list[str] = []
    n = 1
    while True:
        hits: list[Hit] = await fake.wait_hits("discord", n)
        notifier_texts = [h.body["content"] for h in hits]
        if notifier_texts[-1] == marker:
            return notifier_texts[:-1]
        n += 1


async def test_a_foreign_position_and_an_unplaceable_stop_are_told_once(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    fake, base = chat
    notifier = _notifier(base, telegram_token=None, telegram_chat_id=None)
    await notifier.start()
    try:
        async with trading_rig(shared_data, pg_dsn) as rig:
            ex = await rig.executor(notifier=notifier)
            rig.account.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=Decimal("0.005"),
                                  time_ms=rig.clock(), client_order_id="by-hand-btc")
            await ex.reconcile()
            await ex.reconcile()  # the same position again: raised once while it lasts, not at every round
            assert ex.stats.alarms == 1

            rig.emulator.faults.order_reject_503(20, only="algo")  # every try of the ETHUSDT stop
            assert ex.submit(rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0))
            await ex.idle()
            assert "ETHUSDT" not in ex.book, "precondition: closed at market for want of a stop"
            again = rig.signal("ETHUSDT", "SHORT", confidence=0.7, stop_pct=8.0, target_pct=30.0)
            assert ex.submit(replace(again, signal_id=f"{again.signal_id}:again"))  # the same alarm within the hour
            await ex.idle()
            assert ex.stats.signals == 2 and "ETHUSDT" not in ex.book, "precondition: the same again"
            assert ex.stats.alarms_not_repeated == 1

            notifier.notify("marker", "info")
            texts = await _told_until(fake, "marker")
    finally:
        await notifier.close()
    alarms = [t for t in texts if t.startswith("ERROR")]
    assert alarms == ["ERROR unknown_position: BTCUSDT LONG 0.005",
                      "ERROR order_alarm: ETHUSDT: stop could not be placed; closing at market"], texts
