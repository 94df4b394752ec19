"""The daily summary counts the day's trades from PostgreSQL: a service restarted during the day used to tell only the
trades its own process had closed. A day is told once, a restart across midnight still tells the day that ended
while no executor ran, and a trade that filled before midnight but settled after it is counted in its day. Emulator
(real 2023 candles), PostgreSQL, the real Notifier against a local stand-in for Discord."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason, Trade
from smc_quant.executor import Executor
from smc_quant.executor_summary import SUMMARY_CATCH_UP_DAYS, SUMMARY_GRACE_MS
from smc_quant.notify import Notifier, daily_summary
from smc_quant.risk import DAY_MS
from smc_quant.tasks import within
from tests.integration.test_alarm_notify import _told_until
from tests.integration.test_notify import FakeChat, _notifier, chat  # noqa: F401 (the fixture)
from tests.integration.trading_kit import Rig, trading_rig

pytestmark = pytest.mark.integration

Summaries = Callable[[], Awaitable[list[str]]]


@contextlib.asynccontextmanager
async def _told(shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]  # noqa: F811
                ) -> AsyncIterator[tuple[Rig, Notifier, Summaries]]:
    """A trading rig and a started Notifier to the stand-in chat; ``summaries()`` waits until everything told so
    far has arrived and returns the daily summaries among it."""
    fake, base = chat
    notifier = _notifier(base, telegram_token=None, telegram_chat_id=None)
    await notifier.start()
    try:
        async with trading_rig(shared_data, pg_dsn) as rig:
            async def summaries() -> list[str]:
                notifier.notify("marker", "info")
                return [t for t in await _told_until(fake, "marker") if t.startswith("DAY")]

            yield rig, notifier, summaries
    finally:
        await notifier.close()


def _date(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, UTC).date().isoformat()


def _trade(signal_id: str, symbol: str, closed_ms: int, exit_price: str) -> Trade:
    return Trade(signal_id, symbol, "LONG", Decimal("1"), Decimal("20"), Decimal(exit_price), closed_ms - 600_000,
                 closed_ms, Decimal("0.05"), ExitReason.TAKE_PROFIT)


async def _checked(ex: Executor) -> None:
    """An exit check, and the daily summary it asks for (told beside the exits, in the background)."""
    await ex.check_exits()
    await ex.summarised()


async def _store(rig: Rig, trades: list[Trade]) -> None:
    """Trades closed by a process before this one."""
    for trade in trades:
        assert await rig.repo.close_trade(trade, features=[], schema_version="", signal_time_ms=trade.entry_time_ms,
                                          model_version=None) is not None


async def test_the_summary_counts_the_trades_closed_before_a_restart(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        start = day * DAY_MS
        # closed by the process before this one: a win, a loss, and one of the day before (not counted)
        closed = [Trade("s1", "BTCUSDT", "LONG", Decimal("0.01"), Decimal("27000"), Decimal("27300"),
                        start + 3_600_000, start + 4_000_000, Decimal("0.2"), ExitReason.TAKE_PROFIT),
                  Trade("s2", "ETHUSDT", "SHORT", Decimal("0.1"), Decimal("1800"), Decimal("1810"),
                        start + 5_000_000, start + 6_000_000, Decimal("0.1"), ExitReason.STOP_LOSS),
                  Trade("s0", "SOLUSDT", "LONG", Decimal("1"), Decimal("20"), Decimal("21"),
                        start - 7_000_000, start - 6_000_000, Decimal("0.05"), ExitReason.TAKE_PROFIT)]
        await _store(rig, closed)
        now = {"ms": start + 7_000_000}
        ex = await rig.executor(notifier=notifier, clock=lambda: now["ms"])
        await _checked(ex)  # the first check: the day is under way
        now["ms"] = start + DAY_MS + SUMMARY_GRACE_MS + 1_000  # past midnight and its grace
        await _checked(ex)
        await _checked(ex)  # once a day
        told = await summaries()
    assert told == [daily_summary(closed[:2], ex.snapshot().equity, day)]
    assert told[0].startswith(f"DAY {_date(day)} · 2 trades · 1W/1L")


async def test_a_restart_across_midnight_tells_the_day_that_ended_while_down(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        yesterday = (day - 1) * DAY_MS
        # the process before this one told the day before yesterday, closed two trades yesterday and stopped
        # before midnight; this one starts ten minutes into today
        assert await rig.repo.claim_summary(day - 2, 0, Decimal(0), Decimal(1000))
        closed = [_trade("s1", "SOLUSDT", yesterday + 3_600_000, "21"),
                  _trade("s2", "SOLUSDT", yesterday + 7_200_000, "19")]
        await _store(rig, closed)
        now = day * DAY_MS + 600_000
        ex = await rig.executor(notifier=notifier, clock=lambda: now)
        await _checked(ex)
        await _checked(ex)
        again = await rig.executor(notifier=notifier, clock=lambda: now)  # restarted once more: told already
        await _checked(again)
        told = await summaries()
        assert await rig.repo.last_summary_day() == day - 1
    assert told == [daily_summary(closed, ex.snapshot().equity, day - 1)]
    assert told[0].startswith(f"DAY {_date(day - 1)} · 2 trades · 1W/1L")


async def test_two_executors_passing_the_same_midnight_tell_the_day_once(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """A failover overlap: the old executor still runs when the new one has started; the day is claimed once."""
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        now = {"ms": day * DAY_MS + 3_600_000}
        first = await rig.executor(notifier=notifier, clock=lambda: now["ms"])
        second = await rig.executor(notifier=notifier, clock=lambda: now["ms"])
        for ex in (first, second):
            await _checked(ex)  # the day under way: nothing to tell
        now["ms"] = (day + 1) * DAY_MS + SUMMARY_GRACE_MS + 1_000
        assert await first.daily_summary()
        assert not await second.daily_summary()
        told = await summaries()
    assert told == [daily_summary([], first.snapshot().equity, day)]


async def test_a_trade_filled_before_midnight_and_settled_after_it_counts_in_its_day(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """The exit filled at 23:59:59; its trade was stored when its fills settled, after midnight. The summary used to
    be told at midnight, from the trades stored by then, and left this one out; it now waits for the grace."""
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        midnight = (day + 1) * DAY_MS
        now = {"ms": day * DAY_MS + 3_600_000}
        ex = await rig.executor(notifier=notifier, clock=lambda: now["ms"])
        await _checked(ex)  # the day under way
        now["ms"] = midnight + 2_000  # the first check after midnight: the last trade's fills are still settling
        await _checked(ex)
        late = _trade("s1", "SOLUSDT", midnight - 1_000, "21")
        await _store(rig, [late])  # settled
        now["ms"] = midnight + SUMMARY_GRACE_MS
        await _checked(ex)
        told = await summaries()
    assert told == [daily_summary([late], ex.snapshot().equity, day)]
    assert told[0].startswith(f"DAY {_date(day)} · 1 trades · 1W/0L")


async def test_a_downtime_of_days_tells_each_untold_day_with_the_equity_of_when_it_is_told(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """The process before this one told the day 4 days ago, closed a trade on each of the 3 days since, and stopped.
    This one starts at 15:00: each of the 3 days is told (only yesterday was, the others were lost), and the equity
    says it is of now, not of the day's end (it used to show as the day's)."""
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        assert await rig.repo.claim_summary(day - 4, 0, Decimal(0), Decimal(1000))
        closed = [_trade(f"s{k}", "SOLUSDT", (day - k) * DAY_MS + 3_600_000, exit_) for k, exit_ in
                  ((3, "21"), (2, "19"), (1, "22"))]
        await _store(rig, closed)
        now = day * DAY_MS + 15 * 3_600_000
        ex = await rig.executor(notifier=notifier, clock=lambda: now)
        await _checked(ex)
        told = await summaries()
        assert await rig.repo.last_summary_day() == day - 1
    equity = ex.snapshot().equity
    assert told == [daily_summary([t], equity, day - k, equity_at_ms=now) for k, t in zip((3, 2, 1), closed,
                                                                                              strict=True)]
    assert told[0].startswith(f"DAY {_date(day - 3)} · 1 trades · 1W/0L") and told[0].endswith(
        f"USDT at {_date(day)} 15:00 UTC")


async def test_a_long_downtime_tells_the_last_week_only(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        assert await rig.repo.claim_summary(day - 30, 0, Decimal(0), Decimal(1000))
        now = day * DAY_MS + 600_000
        ex = await rig.executor(notifier=notifier, clock=lambda: now)
        await _checked(ex)
        told = await summaries()
    assert [t.split(" · ")[0] for t in told] == [f"DAY {_date(day - k)}" for k in range(SUMMARY_CATCH_UP_DAYS, 0, -1)]


async def test_the_day_tells_the_funding_the_exchange_booked(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """Funding is money the trades' net leaves out: the day's net used to differ from the wallet's change by it, with
    nothing said. The summary reads the day's funding from the exchange's income history and tells both."""
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        closed = [_trade("s1", "SOLUSDT", day * DAY_MS + 3_600_000, "21")]
        await _store(rig, closed)
        now = {"ms": rig.clock()}
        ex = await rig.executor(notifier=notifier, clock=lambda: now["ms"], day_funding=True)
        await _checked(ex)  # the day under way
        rig.account.new_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=Decimal("0.5"),
                              time_ms=rig.clock(), client_order_id="funded")
        paid, _ = rig.account.settle_funding("ETHUSDT", Decimal("0.002"), day * DAY_MS + 8 * 3_600_000)
        later, _ = rig.account.settle_funding("ETHUSDT", Decimal("0.001"), (day + 1) * DAY_MS + 3_600)  # next day
        assert paid > 0 and later > 0
        now["ms"] = (day + 1) * DAY_MS + SUMMARY_GRACE_MS + 1_000
        await _checked(ex)
        told = await summaries()
    assert told == [daily_summary(closed, ex.snapshot().equity, day, funding=-paid)]
    net = closed[0].net_pnl
    assert f"· net {net - paid:+.2f} USDT (trades {net:+.2f}, funding {-paid:+.2f}) ·" in told[0]


async def test_the_summary_never_holds_up_the_exits(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """The exchange does not answer the day's funding read. The exit check used to wait for the summary — 10 s per
    read, minutes for a week's catch-up after a downtime — with no 2-hour exit, breaker or max drawdown meanwhile.
    The check is over before the read is even asked, and ``idle()`` (the intake's wait) does not wait for it either;
    the day is told when the read answers."""
    async with _told(shared_data, pg_dsn, chat) as (rig, notifier, summaries):
        day = rig.clock() // DAY_MS
        now = {"ms": day * DAY_MS + 3_600_000}
        ex = await rig.executor(notifier=notifier, clock=lambda: now["ms"], exit_check_interval_s=3600.0)
        await _checked(ex)  # the day under way
        asked, answered = asyncio.Event(), asyncio.Event()

        async def funding(start_ms: int, end_ms: int) -> Decimal:
            asked.set()
            await answered.wait()
            return Decimal("-1.5")

        ex.day_funding = funding
        now["ms"] = (day + 1) * DAY_MS + SUMMARY_GRACE_MS + 1_000
        check = asyncio.create_task(ex.check_exits())
        await asked.wait()
        assert check.done(), "the exit check waits for the summary"
        await within(ex.idle(), 10)  # nor does the intake (the scaled executor waits for idle() after every batch)
        answered.set()
        await ex.summarised()
        told = await summaries()
    assert told == [daily_summary([], ex.snapshot().equity, day, funding=Decimal("-1.5"))]
