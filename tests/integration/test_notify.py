"""Notifier against a local aiohttp server standing in for Discord and Telegram on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS, load_exchange_info
from smc_quant.domain.trading import ExitReason, Position, Signal, Trade
from smc_quant.exchange.exchange_info import parse_exchange_info
from smc_quant.model.learner import LearnOutcome
from smc_quant.notify import (
    ChannelStats,
    DiscordChannel,
    Notifier,
    TelegramChannel,
    closed,
    daily_loss_limit,
    daily_summary,
    error,
    forced_exit,
    learned,
    opened,
)
from smc_quant.settings import load_settings

pytestmark = pytest.mark.integration

DISCORD_SECRET = "SECRETdiscordTOKEN-9f8e7d"
TELEGRAM_SECRET = "123456:SECRETtelegramTOKEN-AAbb"
DISCORD_PATH = f"/api/webhooks/1122334455/{DISCORD_SECRET}"
TELEGRAM_PATH = f"/bot{TELEGRAM_SECRET}/sendMessage"
Reply = tuple[int, Any, dict[str, str]]   # status, JSON body (or None), headers


@dataclass
class Hit:
    """One request as the server saw it: receive time (monotonic s), channel, JSON body."""

    t: float
    channel: str
    body: dict[str, Any]


@dataclass
class FakeChat:
    """Discord webhook + Telegram sendMessage routes with scripted replies (default: success)."""

    hits: list[Hit] = field(default_factory=list)
    script: dict[str, deque[Reply]] = field(default_factory=lambda: {"discord": deque(), "telegram": deque()})
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def discord(self, request: web.Request) -> web.StreamResponse:
        return await self._answer("discord", request, (204, None, {}))

    async def telegram(self, request: web.Request) -> web.StreamResponse:
        return await self._answer("telegram", request, (200, {"ok": True, "result": {"message_id": 1}}, {}))

    async def _answer(self, channel: str, request: web.Request, default: Reply) -> web.StreamResponse:
        t = time.monotonic()
        body = await request.json()
        async with self.changed:
            self.hits.append(Hit(t, channel, body))
            self.changed.notify_all()
        if self.hang:
            await self.release.wait()
        status, payload, headers = self.script[channel].popleft() if self.script[channel] else default
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    def of(self, channel: str) -> list[Hit]:
        return [h for h in self.hits if h.channel == channel]

    async def wait_hits(self, channel: str, n: int) -> list[Hit]:
        """Wait (at most 15 s) until ``channel`` has received ``n`` requests."""
        async def _wait() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: len(self.of(channel)) >= n)
        await asyncio.wait_for(_wait(), 15)
        return self.of(channel)


@pytest.fixture
async def chat() -> AsyncIterator[tuple[FakeChat, str]]:
    """The fake server and its base URL."""
    fake = FakeChat()
    app = web.Application()
    app.router.add_post("/api/webhooks/{id}/{token}", fake.discord)
    app.router.add_post("/bot{token}/sendMessage", fake.telegram)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        fake.release.set()
        await server.close()


def _notifier(base: str, **kw: Any) -> Notifier:
    settings: dict[str, Any] = {"discord_webhook_url": f"{base}{DISCORD_PATH}", "telegram_token": TELEGRAM_SECRET,
                                "telegram_chat_id": -100123, "telegram_api_base": base, "min_interval_s": 0.01,
                                "backoff_s": 0.01, "request_timeout_s": 5.0}
    settings.update(kw)
    return Notifier(**settings)


def _gaps(hits: list[Hit]) -> list[float]:
    return [b.t - a.t for a, b in pairwise(hits)]


async def test_both_channels_receive_the_exact_json(chat: tuple[FakeChat, str]) -> None:
    fake, base = chat
    async with _notifier(base) as notifier:
        notifier.notify("OPEN BTCUSDT LONG 0.012 @ 37125.10", "opened")
        [d] = await fake.wait_hits("discord", 1)
        [t] = await fake.wait_hits("telegram", 1)
        await notifier.wait_idle()
        assert d.body == {"content": "OPEN BTCUSDT LONG 0.012 @ 37125.10"}
        assert t.body == {"chat_id": -100123, "text": "OPEN BTCUSDT LONG 0.012 @ 37125.10",
                          "disable_web_page_preview": True}
        assert notifier.stats == {"discord": ChannelStats(sent=1), "telegram": ChannelStats(sent=1)}


async def test_messages_are_spaced_by_min_interval(chat: tuple[FakeChat, str]) -> None:
    """Three messages queued at once arrive in order, ≥ 1 s apart by the server's receive clock."""
    fake, base = chat
    async with _notifier(base, min_interval_s=1.0) as notifier:
        for i in range(3):
            notifier.notify(f"m{i}")
        for channel in ("discord", "telegram"):
            hits = await fake.wait_hits(channel, 3)
            assert all(gap >= 1.0 for gap in _gaps(hits)), _gaps(hits)
        assert [h.body["content"] for h in fake.of("discord")] == ["m0", "m1", "m2"]
        assert [h.body["text"] for h in fake.of("telegram")] == ["m0", "m1", "m2"]


async def test_429_retry_after_is_honoured(chat: tuple[FakeChat, str]) -> None:
    """Discord's body retry_after, Discord's Retry-After header and Telegram's parameters.retry_after."""
    fake, base = chat
    fake.script["discord"].extend([(429, {"message": "You are being rate limited.", "retry_after": 1.3,
                                          "global": False}, {}),
                                   (429, None, {"Retry-After": "0.7"})])
    fake.script["telegram"].append((429, {"ok": False, "error_code": 429, "description": "Too Many Requests: "
                                          "retry after 1", "parameters": {"retry_after": 1}}, {}))
    async with _notifier(base) as notifier:
        notifier.notify("hello")
        discord = await fake.wait_hits("discord", 3)
        telegram = await fake.wait_hits("telegram", 2)
        await notifier.wait_idle()
        gaps = _gaps(discord)
        assert gaps[0] >= 1.3 and gaps[1] >= 0.7, gaps
        assert _gaps(telegram)[0] >= 1.0
        assert {h.body["content"] for h in discord} == {"hello"}
        assert notifier.stats == {"discord": ChannelStats(sent=1, retried=2),
                                  "telegram": ChannelStats(sent=1, retried=1)}


async def test_a_long_flood_wait_is_waited_out_not_counted_as_failed_attempts(chat: tuple[FakeChat, str]) -> None:
    """Telegram answers 429 with ``retry_after`` six times in a row (a flood wait) with ``max_attempts`` 3: each 429
    said when to come back, so none is a failed attempt and the message goes out after the wait (it used to be
    dropped after three tries, and with it, one by one, every message queued behind it)."""
    fake, base = chat
    body = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 0.1",
            "parameters": {"retry_after": 0.1}}
    flood: tuple[int, dict[str, Any], dict[str, str]] = (429, body, {})
    fake.script["telegram"].extend([flood] * 6)
    async with _notifier(base, max_attempts=3) as notifier:
        notifier.notify("after the flood")
        telegram = await fake.wait_hits("telegram", 7)
        await notifier.wait_idle()
        assert [h.body["text"] for h in telegram] == ["after the flood"] * 7
        assert notifier.stats["telegram"] == ChannelStats(sent=1, retried=6)


async def test_5xx_is_retried_with_backoff_and_4xx_fails_at_once(chat: tuple[FakeChat, str]) -> None:
    fake, base = chat
    fake.script["telegram"].extend([(502, None, {}), (500, {"ok": False}, {})])
    fake.script["discord"].append((404, {"message": "Unknown Webhook", "code": 10015}, {}))
    async with _notifier(base, backoff_s=0.3) as notifier:
        notifier.notify("x")
        telegram = await fake.wait_hits("telegram", 3)
        await notifier.wait_idle()
        gaps = _gaps(telegram)
        assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps    # backoff_s · 2^(attempt−1)
        assert len(fake.of("discord")) == 1
        assert notifier.stats == {"discord": ChannelStats(failed=1), "telegram": ChannelStats(sent=1, retried=2)}


async def test_overflow_drops_the_oldest_and_counts(chat: tuple[FakeChat, str]) -> None:
    fake, base = chat
    notifier = _notifier(base, queue_size=3)
    for i in range(5):
        notifier.notify(f"m{i}")
    assert notifier.pending("discord") == 3
    assert notifier.stats["discord"] == notifier.stats["telegram"] == ChannelStats(dropped=2)
    await notifier.start()
    try:
        await fake.wait_hits("discord", 3)
        await fake.wait_hits("telegram", 3)
        await notifier.wait_idle()
    finally:
        await notifier.close()
    assert [h.body["content"] for h in fake.of("discord")] == ["m2", "m3", "m4"]
    assert [h.body["text"] for h in fake.of("telegram")] == ["m2", "m3", "m4"]
    assert notifier.stats["discord"] == ChannelStats(sent=3, dropped=2)


async def test_notify_never_blocks_while_the_server_hangs(chat: tuple[FakeChat, str]) -> None:
    """A hanging endpoint: 1000 notify() calls return at once, the hung request times out and is retried."""
    fake, base = chat
    fake.hang = True
    notifier = _notifier(base, queue_size=5, request_timeout_s=0.3, max_attempts=2)
    await notifier.start()
    try:
        notifier.notify("first")
        await fake.wait_hits("discord", 1)
        for i in range(1000):  # synchronous: each returns without waiting for the hung request
            notifier.notify(f"m{i}")
        assert notifier.pending("discord") == 5 and notifier.stats["discord"].dropped == 995
        hits = await fake.wait_hits("discord", 3)          # first, first again after the timeout, then m995
        assert [h.body["content"] for h in hits[:3]] == ["first", "first", "m995"]
        assert hits[1].t - hits[0].t >= 0.3
        assert notifier.stats["discord"].failed == 1
        await asyncio.wait_for(notifier.close(deadline_s=0.2), 10)  # the deadline ends the hung request
    finally:
        await notifier.close()
    # m995 was in flight and m996..m999 queued when the deadline passed: dropped, never raised.
    assert notifier.stats["discord"] == ChannelStats(sent=0, dropped=1000, failed=1, retried=1)


async def test_close_flushes_pending_messages(chat: tuple[FakeChat, str]) -> None:
    fake, base = chat
    notifier = _notifier(base, min_interval_s=0.2)
    await notifier.start()
    for i in range(3):
        notifier.notify(f"m{i}")
    await notifier.close(deadline_s=10.0)
    assert [h.body["content"] for h in fake.of("discord")] == ["m0", "m1", "m2"]
    assert [h.body["text"] for h in fake.of("telegram")] == ["m0", "m1", "m2"]
    notifier.notify("after close")
    assert notifier.stats["discord"] == ChannelStats(sent=3, dropped=1)


async def test_no_secret_in_logs_errors_or_reprs(chat: tuple[FakeChat, str], caplog: pytest.LogCaptureFixture) -> None:
    """Discord answers 500 forever, Telegram's host refuses connections: logs name channels, never tokens."""
    fake, base = chat
    with socket.socket() as s:                 # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    fake.script["discord"].extend([(500, {"message": f"boom {DISCORD_SECRET}"}, {})] * 3)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        notifier = _notifier(base, telegram_api_base=dead, max_attempts=3)
        async with notifier:
            notifier.notify("x", "error")
            await notifier.wait_idle()
    assert notifier.stats == {"discord": ChannelStats(failed=1, retried=2), "telegram": ChannelStats(failed=1,
                                                                                                    retried=2)}
    failed = [e for e in logs if e["event"] == "notify_failed"]
    assert sorted(e["channel"] for e in failed) == ["discord", "telegram"]
    assert [e["status"] for e in failed if e["channel"] == "discord"] == [500]
    assert [e["error"] for e in failed if e["channel"] == "telegram"] == ["ClientConnectorError"]
    # The fake server's own access log prints request paths (it is the exchange side, not our code).
    ours = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records
                     if not r.name.startswith(("aiohttp.access", "aiohttp.server", "aiohttp.web")))
    texts = [str(logs), ours, repr(notifier), repr(DiscordChannel(f"{base}{DISCORD_PATH}")),
             repr(TelegramChannel(TELEGRAM_SECRET, 1, base)), str(notifier.stats)]
    for secret in (DISCORD_SECRET, TELEGRAM_SECRET, "SECRET", "1122334455"):
        assert not any(secret in text for text in texts), secret


async def test_no_channel_configured_is_a_no_op() -> None:
    for notifier in (Notifier(), Notifier(telegram_token=TELEGRAM_SECRET), Notifier(telegram_chat_id=5)):
        assert not notifier.enabled and notifier.channels == []
        async with notifier:
            notifier.notify("nobody listens")
            await notifier.wait_idle()
        assert notifier.stats == {}


# ------------------------------------------------------------------------------------------------ formatting

D = Decimal
T0 = 1_700_000_000_000
SIGNAL = Signal(signal_id="s1", symbol="BTCUSDT", side="LONG", open_time=T0, price=D("37123.40"), confidence=0.6375,
                stop_pct=0.8, target_pct=1.6, setup="sweep>choch>fvg@1700000000000")
POSITION = Position(symbol="BTCUSDT", side="LONG", quantity=D("0.012"), entry_price=D("37125.10"),
                    entry_time_ms=T0 + 60_000, leverage=5, signal_id="s1", stop_price=D("36828.10"),
                    target_price=D("37719.10"))


def _trade(exit_price: str, reason: ExitReason = ExitReason.TAKE_PROFIT) -> Trade:
    return Trade(signal_id="s1", symbol="BTCUSDT", side="LONG", quantity=D("0.012"), entry_price=D("37125.10"),
                 exit_price=D(exit_price), entry_time_ms=T0 + 60_000, exit_time_ms=T0 + 60_000 + 59 * 60_000 + 5,
                 fees=D("0.44550120"), exit_reason=reason)


def test_opened_and_forced_exit_texts() -> None:
    assert opened(SIGNAL, POSITION) == ("OPEN BTCUSDT LONG 0.012 @ 37125.10 x5 · P(win) 0.64 · SL 36828.10 · "
                                        "TP 37719.10 · sweep>choch>fvg@1700000000000")
    assert forced_exit(POSITION) == "FORCED EXIT BTCUSDT LONG 0.012 · entered 2023-11-14 22:14 UTC @ 37125.10"


def test_closed_text_has_net_pnl_and_percent() -> None:
    # gross = (37719.10 − 37125.10)·0.012 = 7.128; net = 7.128 − 0.4455012 = 6.6824988; / 445.5012 = +1.50 %
    assert closed(_trade("37719.10")) == ("CLOSE BTCUSDT LONG 0.012 37125.10 → 37719.10 · net +6.68 USDT (+1.50% of "
                                          "notional) · take_profit · 59m")
    assert "net -1.95 USDT (-0.44% of notional) · stop_loss" in closed(_trade("37000.00", ExitReason.STOP_LOSS))


def test_closed_text_rounds_an_average_over_several_fills() -> None:
    """An average over fills is an exact quotient with 28 digits: shown to 8 places at most, trailing zeros
    dropped; a price as the exchange wrote it keeps its places (``37000.00``)."""
    trade = replace(_trade("37000.00"), entry_price=D("111375.7") / 3, exit_price=D("37299.9666666666666666666666667"))
    assert closed(trade).startswith("CLOSE BTCUSDT LONG 0.012 37125.23333333 → 37299.96666667 · ")
    assert closed(replace(trade, entry_price=D("111375") / 3)).startswith("CLOSE BTCUSDT LONG 0.012 37125 → ")
    assert " 37125.10 → 37000.00 · " in closed(_trade("37000.00"))


def test_error_and_daily_summary_texts() -> None:
    assert error("exit_failed", "BTCUSDT\n exit failed   after 5 attempts") == (
        "ERROR exit_failed: BTCUSDT exit failed after 5 attempts")
    assert len(error("x", "y" * 1000)) == len("ERROR x: ") + 300
    trades = [_trade("37719.10"), _trade("37000.00", ExitReason.STOP_LOSS), _trade("37719.10")]
    assert daily_summary(trades, D("1011.4183")) == ("DAY 3 trades · 2W/1L (67%) · net +11.42 USDT · fees 1.34 · "
                                                     "equity 1011.42 USDT")
    assert daily_summary([], D("1000")) == "DAY 0 trades · 0W/0L · net +0.00 USDT · fees 0.00 · equity 1000.00 USDT"
    assert daily_summary([], D("1000"), 20_793) == (  # 2026-12-06 is UTC day 20,793
        "DAY 2026-12-06 · 0 trades · 0W/0L · net +0.00 USDT · fees 0.00 · equity 1000.00 USDT")


def test_daily_loss_limit_texts() -> None:
    assert daily_loss_limit(D("-20"), D("-103.4512"), D("10000"), D("1.0"), 1) == (
        "DAILY LOSS LIMIT · today -123.45 USDT (trades -20.00, open -103.45) = 1.23% of the day's starting equity "
        "10000.00 USDT · limit 1% · no new entries until 00:00 UTC · closing 1 position")
    assert daily_loss_limit(D("-500"), D("0"), D("10000"), D("5"), 0).endswith("· no position to close")
    assert daily_loss_limit(D("-500"), D("-20"), D("10000"), D("5"), 2).endswith("· closing 2 positions")
    assert daily_loss_limit(D("-500"), D("-20"), D("10000"), D("2.5"), None).endswith(
        "· limit 2.5% · no new entries until 00:00 UTC · open positions kept")


def test_learner_round_texts_speak_only_when_the_live_model_changes_or_loses_its_edge() -> None:
    """A promotion (first champion or replacement) and a kept champion with no edge left are worth a message;
    a kept champion that still clears the chance test is not."""
    kept = LearnOutcome(7, False, "challenger AUC 0.6061 does not beat champion 0.6009 + 0.01", 0.6061, 0.6009, 5,
                        "schedule", 9000, 2400, 2412, "strategy setups", 12, 3.2, True,
                        "champion v5 AUC 0.6009 is significantly above chance: AUC − 1.771·SE = 0.5312 on …")
    assert learned(kept) is None
    first = replace(kept, version=1, promoted=True, champion_auc=None, champion_version=None, champion_edge=None,
                    trigger="cold_start", gate_rows=2445, gate_on="all held-out rows")
    assert learned(first) == "MODEL v1 becomes the champion · AUC 0.606 on 2,445 all held-out rows · cold_start"
    assert learned(replace(kept, promoted=True, champion_edge=False)) == (
        "MODEL v7 replaces v5 · AUC 0.606 against 0.601 on 2,412 strategy setups · schedule")
    stale = replace(kept, champion_auc=0.4736, champion_edge=False,
                    champion_reason="champion v5 AUC 0.4736 is not above chance + 0.01")
    assert learned(stale) == ("MODEL champion v5 shows no edge on the latest window · champion v5 AUC 0.4736 is not "
                              "above chance + 0.01 · it trades until a challenger beats it (smc-quant halt / rollback)")


async def test_the_trading_stack_sends_the_learner_s_reports_to_the_chat(chat: tuple[FakeChat, str],
                                                                         shared_data: Path) -> None:
    """``TradingStack.report_learned`` — the service's ``on_outcome`` hook — sends what :func:`learned` says to
    the configured channels, and nothing for a round that changed nothing."""
    fake, base = chat
    info = parse_exchange_info(load_exchange_info(shared_data))
    settings = load_settings(mode="paper", database_url=None, redis_url=None,
                             notify={"discord_webhook_url": f"{base}{DISCORD_PATH}", "min_interval_s": 1.0})
    async with aiohttp.ClientSession() as session:
        stack = TradingStack(settings, filters={s.symbol: s.filters for s in info.symbols[:3]}, session=session,
                             pool=None, governor=None, brackets_file=shared_data / LEVERAGE_TIERS)
        await stack.notifier.start()
        try:
            kept = LearnOutcome(7, False, "kept", 0.61, 0.60, 5, "schedule", 9000, 2400, 2412, "strategy setups", 12,
                                3.2, True, "champion v5 AUC 0.6000 is significantly above chance")
            stack.report_learned(kept)  # nothing to say
            stack.report_learned(replace(kept, champion_edge=False, champion_reason="champion v5 AUC 0.4736 is …"))
            hits = await fake.wait_hits("discord", 1)
            await stack.notifier.wait_idle()
        finally:
            await stack.notifier.close()
    assert [h.body["content"] for h in hits] == [
        "MODEL champion v5 shows no edge on the latest window · champion v5 AUC 0.4736 is … · it trades until a "
        "challenger beats it (smc-quant halt / rollback)"]


def test_a_webhook_copied_from_discord_is_pinned_to_an_api_version_that_speaks_seconds() -> None:
    """`/api/webhooks/…` (what Discord's UI gives) answers a 429 in milliseconds; v10 in seconds, as we read it."""
    from smc_quant.notify import versioned_webhook

    assert versioned_webhook("https://discord.com/api/webhooks/1/tok?thread_id=7") == (
        "https://discord.com/api/v10/webhooks/1/tok?thread_id=7")
    assert versioned_webhook("https://discordapp.com/api/webhooks/1/tok") == "https://discordapp.com/api/v10/webhooks/1/tok"
    assert versioned_webhook("https://discord.com/api/v10/webhooks/1/tok") == "https://discord.com/api/v10/webhooks/1/tok"
    local = "http://127.0.0.1:8000/api/webhooks/1/tok"  # a relay or a test server: as given
    assert versioned_webhook(local) == local
    assert DiscordChannel("https://discord.com/api/webhooks/1/tok").request("hi")[0] == (
        "https://discord.com/api/v10/webhooks/1/tok")


async def test_a_repeated_alarm_is_sent_once_per_window_and_a_full_queue_keeps_the_alarms(
        chat: tuple[FakeChat, str]) -> None:
    """An exit that keeps failing (every 15 s, per position) would flood the chat and push the max-drawdown alarm
    out of a full queue: the same text is queued once per ``repeat_s``, and overflow drops trade chatter first."""
    fake, base = chat
    now = [0.0]
    notifier = _notifier(base, queue_size=3, repeat_s=300.0, clock=lambda: now[0])
    for _ in range(20):
        notifier.notify("ERROR exit failed BTCUSDT (time_limit): -1003", "error")
    assert notifier.pending("discord") == 1 and notifier.suppressed == 19
    notifier.notify("ERROR max drawdown 20.1 %", "error")
    for i in range(4):
        notifier.notify(f"OPEN m{i}", "open")
    assert notifier.stats["discord"].dropped == 3
    now[0] = 301.0  # a window later the failure is told again
    notifier.notify("ERROR exit failed BTCUSDT (time_limit): -1003", "error")
    await notifier.start()
    try:
        await fake.wait_hits("discord", 3)
        await notifier.wait_idle()
    finally:
        await notifier.close()
    assert [h.body["content"] for h in fake.of("discord")] == [
        "ERROR exit failed BTCUSDT (time_limit): -1003", "ERROR max drawdown 20.1 %",
        "ERROR exit failed BTCUSDT (time_limit): -1003"]


async def test_a_change_of_state_is_never_suppressed_as_a_repeat(chat: tuple[FakeChat, str]) -> None:
    """IMPAIRED → OK → IMPAIRED → OK within a minute: the chat's last word must be OK (the texts repeat)."""
    fake, base = chat
    notifier = _notifier(base, clock=lambda: 0.0)
    for _ in range(2):
        notifier.notify("TRADING IMPAIRED · Redis out of reach for 61 s", "health")
        notifier.notify("TRADING OK again", "health")
    notifier.notify("HALTED no new entries · 0 open · executor lock lost", "halt")
    notifier.notify("RESUMED new entries allowed · checked", "resume")
    notifier.notify("HALTED no new entries · 0 open · executor lock lost", "halt")
    assert notifier.suppressed == 0
    await notifier.start()
    try:
        await fake.wait_hits("discord", 7)
        await notifier.wait_idle()
    finally:
        await notifier.close()
    assert [h.body["content"] for h in fake.of("discord")][-4:] == [
        "TRADING OK again", "HALTED no new entries · 0 open · executor lock lost",
        "RESUMED new entries allowed · checked", "HALTED no new entries · 0 open · executor lock lost"]
