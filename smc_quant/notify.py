"""Fire-and-forget notifications to Discord (webhook) and Telegram (bot API) over aiohttp.

The trading path calls :meth:`Notifier.notify`, which is synchronous and only enqueues: each channel
has a bounded queue; when it is full the OLDEST message is dropped and counted, so a slow or dead chat
service never blocks or slows trading. One background task per channel sends the messages in order,
with at least ``min_interval_s`` between the end of one request and the start of the next (both
services throttle bursts). A transient failure (timeout, connection error, 5xx, 408) is retried with
exponential backoff ``backoff_s · 2^(attempt−1)``; an HTTP 429 waits the ``retry_after`` the service
asked for (Discord: JSON ``retry_after`` seconds or the ``Retry-After`` header; Telegram:
``parameters.retry_after``; each wait capped at ``max_retry_after_s``) — such a 429 is not a failed attempt,
since a Telegram flood wait can last minutes, and one message waits them out for up to an hour. After
``max_attempts`` the message is dropped and counted as failed; a permanent rejection (other 4xx) fails at
once. Nothing here raises into the caller.

Secrets: the Discord webhook URL carries its token in the path and the Telegram bot token is part of
every request URL. Neither is ever logged, put in an exception message or shown by a ``repr``: logs
name the channel only, and errors are logged by type name and HTTP status (aiohttp exception messages
may contain the request URL).

Formatting helpers (:func:`opened`, :func:`closed`, :func:`forced_exit`, :func:`error`, :func:`process_failed`,
:func:`daily_summary`, :func:`learned`) turn domain values into short plain-text messages. :func:`tell_before_exit`
sends a process's last alarm and waits (bounded) for it to go out before the process stops.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from smc_quant.domain.trading import ZERO, ExitReason, Position, Signal, Trade
from smc_quant.logging import get_logger
from smc_quant.tasks import within

if TYPE_CHECKING:
    from smc_quant.model.learner import LearnOutcome
    from smc_quant.settings import NotifySettings

TELEGRAM_API = "https://api.telegram.org"
DISCORD_LIMIT = 2000
TELEGRAM_LIMIT = 4096
_MAX_BACKOFF_S = 30.0
_MAX_RATE_LIMITED_S = 3600.0
"""How long one message waits out 429s that say when (they are not failed attempts) before it is dropped."""


# ----------------------------------------------------------------------------------------------- formatting

def _money(value: Decimal) -> str:
    return f"{value:+.2f}"


_PRICE_EXPONENT = -8
PRICE_PLACES = Decimal(1).scaleb(_PRICE_EXPONENT)
"""A price shown with more places than this is rounded to it: an average over several fills is an exact quotient
(``37125.23333333333333333333333``), stored as such but unreadable in a message."""


def _price(value: Decimal) -> Decimal:
    """``value`` as the exchange wrote it (``37125.10`` keeps its places), or rounded to :data:`PRICE_PLACES` with
    the trailing zeros dropped when it has more."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= _PRICE_EXPONENT:
        return value
    rounded = value.quantize(PRICE_PLACES)
    return rounded.normalize() if rounded != rounded.to_integral_value() else rounded.quantize(Decimal(1))


def utc_minute(ms: int) -> str:
    """Epoch ms as ``YYYY-MM-DD HH:MM UTC``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def opened(signal: Signal, position: Position) -> str:
    """``OPEN BTCUSDT LONG 0.012 @ 37125.10 x5 · P(win) 0.64 · SL 36828.10 · TP 37719.10 · setup``."""
    sl = "-" if position.stop_price is None else str(position.stop_price)
    tp = "-" if position.target_price is None else str(position.target_price)
    return (f"OPEN {position.symbol} {position.side} {position.quantity} @ {position.entry_price} "
            f"x{position.leverage} · P(win) {signal.confidence:.2f} · SL {sl} · TP {tp} · {signal.setup}")


def closed(trade: Trade) -> str:
    """``CLOSE BTCUSDT LONG 0.012 37125.10 → 37719.10 · net +6.68 USDT (+1.50% of notional) · take_profit · 59m``.

    Net PnL = (exit − entry)·qty·dir − fees, before funding (the day's summary counts it); the percentage is of the
    entry notional (:attr:`Trade.net_return_pct`), not of the margin — at ×5 the margin made five times that.
    Average prices over several fills are rounded for reading (:func:`_price`).
    """
    held_min = (trade.exit_time_ms - trade.entry_time_ms) // 60_000
    return (f"CLOSE {trade.symbol} {trade.side} {trade.quantity} {_price(trade.entry_price)} → "
            f"{_price(trade.exit_price)} · net {_money(trade.net_pnl)} USDT ({trade.net_return_pct:+.2f}% of notional)"
            f" · {trade.exit_reason.value} · {held_min}m")


def forced_exit(position: Position, reason: ExitReason = ExitReason.TIME) -> str:
    """``FORCED EXIT BTCUSDT LONG 0.012 · entered 2023-11-14 22:14 UTC @ 37125.10``: closed by us, not by a stop, at
    the 2-hour limit; any other reason is named (``… @ 37125.10 · delisting``). The price is the entry's: the exit
    has not filled yet (its CLOSE follows)."""
    why = "" if reason is ExitReason.TIME else f" · {reason.value}"
    return (f"FORCED EXIT {position.symbol} {position.side} {position.quantity} · entered "
            f"{utc_minute(position.entry_time_ms)} @ {_price(position.entry_price)}{why}")


def daily_loss_limit(realised: Decimal, unrealised: Decimal, start_equity: Decimal, limit_pct: Decimal,
                     closing: int | None) -> str:
    """``DAILY LOSS LIMIT · today -123.45 USDT (trades -20.00, open -103.45) = 1.23% of the day's starting equity
    10000.00 USDT · limit 1% · no new entries until 00:00 UTC · closing 1 position``: the breaker tripped. Today's
    loss is the net PnL of the trades closed this UTC day plus the open positions' unrealised PnL, when it tripped.
    ``closing``: the positions closed now; ``None`` when it keeps them (``close_on_breaker`` off)."""
    today = realised + unrealised
    share = -today / start_equity * 100 if start_equity > 0 else Decimal(0)
    after = ("open positions kept" if closing is None
             else f"closing {closing} position{'' if closing == 1 else 's'}" if closing else "no position to close")
    return (f"DAILY LOSS LIMIT · today {_money(today)} USDT (trades {_money(realised)}, open {_money(unrealised)}) "
            f"= {share:.2f}% of the day's starting equity {start_equity:.2f} USDT · limit {limit_pct.normalize():f}% "
            f"· no new entries until 00:00 UTC · {after}")


def error(kind: str, detail: str) -> str:
    """``ERROR kind: detail`` with the detail cut to 300 characters (one line)."""
    flat = " ".join(detail.split())
    return f"ERROR {kind}: {flat[:299] + '…' if len(flat) > 300 else flat}"


def process_failed(role: str, reason: str) -> str:
    """``ERROR process_failed: run · task shard-0 crashed 6 times in 300s · exit 1, …``: a supervisor gave up and
    the process ``role`` (``run``, ``executor``) exits for its orchestrator to start it again."""
    return error("process_failed", f"{role} · {reason} · exit 1: the orchestrator restarts it, warm from PostgreSQL")


def daily_summary(trades: Iterable[Trade], equity: Decimal, day: int | None = None, *,
                  funding: Decimal | None = None, equity_at_ms: int | None = None) -> str:
    """``DAY 2026-12-06 · 3 trades · 2W/1L (67%) · net +8.30 USDT · fees 1.34 · equity 1008.30 USDT`` for the UTC
    ``day`` (epoch ms // 86 400 000; ``None``: no date); a win has net PnL > 0.

    With the day's ``funding`` (received positive, paid negative) when it is not zero, the net is the wallet's:
    ``net -13.81 USDT (trades -12.35, funding -1.46)`` — the trades' net leaves funding out. ``equity_at_ms``: the
    equity is that instant's, not the day's end (a day told late): ``equity 10270.00 USDT at 2023-09-03 15:00 UTC``.
    """
    done = list(trades)
    date = "" if day is None else f"{datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()} · "
    wins = sum(1 for t in done if t.net_pnl > 0)
    net = sum((t.net_pnl for t in done), ZERO)
    fees = sum((t.fees for t in done), ZERO)
    rate = f" ({wins / len(done):.0%})" if done else ""
    result = f"net {_money(net)} USDT"
    if funding:
        result = f"net {_money(net + funding)} USDT (trades {_money(net)}, funding {_money(funding)})"
    at = "" if equity_at_ms is None else f" at {utc_minute(equity_at_ms)}"
    return (f"DAY {date}{len(done)} trades · {wins}W/{len(done) - wins}L{rate} · {result} · "
            f"fees {fees:.2f} · equity {equity:.2f} USDT{at}")


def learned(outcome: LearnOutcome) -> str | None:
    """What a learner round changed for the trader, or ``None`` when nothing did (the champion kept, with an
    edge): ``MODEL v5 replaces v3 · AUC 0.634 against 0.602 on 2,412 strategy setups · schedule``;
    ``MODEL v1 becomes the champion · …`` (none before, or one that cannot score these rows);
    ``MODEL champion v3 shows no edge on the latest window · champion v3 AUC 0.4736 is not above chance + 0.01
    · it trades until a challenger beats it (smc-quant halt / rollback)``."""
    o = outcome
    on = f"on {o.gate_rows:,} {o.gate_on} · {o.trigger}"
    if o.promoted and o.champion_version is None:
        return f"MODEL v{o.version} becomes the champion · AUC {o.challenger_auc:.3f} {on}"
    if o.promoted:
        champion_auc = "-" if o.champion_auc is None else f"{o.champion_auc:.3f}"
        return (f"MODEL v{o.version} replaces v{o.champion_version} · AUC {o.challenger_auc:.3f} against "
                f"{champion_auc} {on}")
    if o.champion_edge is False:
        return (f"MODEL champion v{o.champion_version} shows no edge on the latest window · {o.champion_reason} · "
                f"it trades until a challenger beats it (smc-quant halt / rollback)")
    return None


# ------------------------------------------------------------------------------------------------- channels

class _Result(Enum):
    OK = "ok"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class _Attempt:
    result: _Result
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def _float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if out >= 0 else None


def _json_body(body: bytes) -> Mapping[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")
DISCORD_API_VERSION = "v10"


def versioned_webhook(url: str) -> str:
    """A Discord webhook URL as copied from Discord's UI (``/api/webhooks/…``) runs on a deprecated API version,
    whose 429 ``retry_after`` (and ``Retry-After``) is in milliseconds: each 429 would stall the channel for the
    60 s cap instead of about a second. Pin it to :data:`DISCORD_API_VERSION` (seconds); any other URL as given."""
    parts = urlsplit(url)
    if (parts.hostname or "").lower() in DISCORD_HOSTS and parts.path.startswith("/api/webhooks/"):
        return parts._replace(path=f"/api/{DISCORD_API_VERSION}/" + parts.path.removeprefix("/api/")).geturl()
    return url


class DiscordChannel:
    """A Discord webhook: POST ``{"content": text}``; 200/204 ok; 429 → ``retry_after`` (s) or ``Retry-After``."""

    name = "discord"

    def __init__(self, webhook_url: str) -> None:
        self._url = versioned_webhook(webhook_url)

    def __repr__(self) -> str:
        return "DiscordChannel(webhook_url=**redacted**)"

    def request(self, text: str) -> tuple[str, dict[str, Any]]:
        """URL and JSON body of one message (cut to Discord's 2000-character limit)."""
        return self._url, {"content": _cut(text, DISCORD_LIMIT)}

    @staticmethod
    def retry_after(headers: Mapping[str, str], body: bytes) -> float | None:
        """Seconds to wait after a 429: the body's ``retry_after``, else the ``Retry-After`` header."""
        after = _float(_json_body(body).get("retry_after"))
        return after if after is not None else _float(headers.get("Retry-After"))


class TelegramChannel:
    """A Telegram bot: POST ``{base}/bot{token}/sendMessage``; 429 → ``parameters.retry_after`` (s)."""

    name = "telegram"

    def __init__(self, token: str, chat_id: str | int, api_base: str = TELEGRAM_API) -> None:
        self._url = f"{api_base.rstrip('/')}/bot{token}/sendMessage"
        self._chat_id = chat_id

    def __repr__(self) -> str:
        return f"TelegramChannel(token=**redacted**, chat_id={self._chat_id!r})"

    def request(self, text: str) -> tuple[str, dict[str, Any]]:
        """URL and JSON body of one message (cut to Telegram's 4096-character limit)."""
        return self._url, {"chat_id": self._chat_id, "text": _cut(text, TELEGRAM_LIMIT),
                           "disable_web_page_preview": True}

    @staticmethod
    def retry_after(headers: Mapping[str, str], body: bytes) -> float | None:
        """Seconds to wait after a 429: ``parameters.retry_after``, else the ``Retry-After`` header."""
        params = _json_body(body).get("parameters")
        after = _float(params.get("retry_after")) if isinstance(params, dict) else None
        return after if after is not None else _float(headers.get("Retry-After"))


Channel = DiscordChannel | TelegramChannel


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _post(session: aiohttp.ClientSession, channel: Channel, text: str, timeout_s: float) -> _Attempt:
    """One HTTP attempt, classified; never raises for network or HTTP failures."""
    url, payload = channel.request(text)
    try:
        async with session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.read()
            if 200 <= resp.status < 300:
                return _Attempt(_Result.OK, resp.status)
            if resp.status == 429:
                return _Attempt(_Result.RETRY, 429, retry_after_s=channel.retry_after(resp.headers, body))
            if resp.status >= 500 or resp.status == 408:
                return _Attempt(_Result.RETRY, resp.status)
            return _Attempt(_Result.FAIL, resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _Attempt(_Result.RETRY, error=type(exc).__name__)


# ------------------------------------------------------------------------------------------------- notifier

@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Counters of one channel: delivered, dropped (queue overflow or shutdown), failed (gave up), retries."""

    sent: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0


@dataclass(slots=True)
class _Lane:
    channel: Channel
    queue: deque[tuple[str, str]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    current: str | None = None
    last_done: float | None = None
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    retried: int = 0
    task: asyncio.Task[None] | None = None


URGENT = frozenset({"error", "halt", "health", "breaker"})
"""Message kinds a full queue drops last."""
STATE_CHANGES = frozenset({"halt", "resume", "health"})
"""Message kinds never suppressed as repeats: each tells a change of state (halted → resumed → halted again with
the same text), and the last one sent must be the state that holds."""
RECENT_TEXTS = 1024
"""Texts remembered for the repeat suppression (the oldest forgotten first)."""


class Notifier:
    """Bounded, paced, retrying delivery of short texts to every configured channel.

    With no channel configured every method is a no-op (``enabled`` is False, ``stats`` is empty).
    Use ``async with Notifier(...)`` or ``await start()`` / ``await close()``; messages given to
    :meth:`notify` before :meth:`start` wait in the queue. ``notify`` must be called from the event
    loop's thread.
    """

    def __init__(self, *, discord_webhook_url: str | None = None, telegram_token: str | None = None,
                 telegram_chat_id: str | int | None = None, telegram_api_base: str = TELEGRAM_API,
                 min_interval_s: float = 1.0, queue_size: int = 100, max_attempts: int = 4,
                 backoff_s: float = 1.0, request_timeout_s: float = 10.0, max_retry_after_s: float = 60.0,
                 session: aiohttp.ClientSession | None = None,
                 logger: structlog.stdlib.BoundLogger | None = None, repeat_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        channels: list[Channel] = []
        if discord_webhook_url:
            channels.append(DiscordChannel(discord_webhook_url))
        if telegram_token and telegram_chat_id is not None and str(telegram_chat_id) != "":
            channels.append(TelegramChannel(telegram_token, telegram_chat_id, telegram_api_base))
        self._lanes = {c.name: _Lane(c) for c in channels}
        for lane in self._lanes.values():
            lane.idle.set()
        self._min_interval_s = max(0.0, min_interval_s)
        self._queue_size = max(1, queue_size)
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = max(0.0, backoff_s)
        self._timeout_s = request_timeout_s
        self._max_retry_after_s = max_retry_after_s
        self._session = session
        self._own_session = session is None
        self._log = logger if logger is not None else get_logger(component="notify")
        self._closing = False
        self._closed = False
        self._repeat_s = repeat_s
        self._clock = clock
        self._recent: dict[str, float] = {}
        self.suppressed = 0
        """Messages not queued because the same text was queued less than ``repeat_s`` ago."""

    @classmethod
    def of(cls, n: NotifySettings, session: aiohttp.ClientSession | None) -> Notifier:
        """The channels ``SMC_NOTIFY__*`` configures (none: every message is dropped quietly)."""
        return cls(discord_webhook_url=n.discord_webhook_url.get_secret_value() if n.discord_webhook_url else None,
                   telegram_token=n.telegram_token.get_secret_value() if n.telegram_token else None,
                   telegram_chat_id=n.telegram_chat_id, telegram_api_base=n.telegram_api_base,
                   min_interval_s=n.min_interval_s, session=session)

    def __repr__(self) -> str:
        return f"Notifier(channels={list(self._lanes)})"

    @property
    def enabled(self) -> bool:
        """True when at least one channel is configured."""
        return bool(self._lanes)

    @property
    def channels(self) -> list[str]:
        """Names of the configured channels (``discord``, ``telegram``)."""
        return list(self._lanes)

    @property
    def stats(self) -> dict[str, ChannelStats]:
        """Counters per channel name."""
        return {name: ChannelStats(lane.sent, lane.dropped, lane.failed, lane.retried)
                for name, lane in self._lanes.items()}

    def pending(self, channel: str) -> int:
        """Messages of ``channel`` waiting in its queue (the one being sent excluded)."""
        return len(self._lanes[channel].queue)

    def notify(self, text: str, kind: str = "info") -> None:
        """Enqueue ``text`` on every channel; never blocks, never raises.

        The same text again within ``repeat_s`` is not queued (counted in :attr:`suppressed`; never for the kinds
        in :data:`STATE_CHANGES`, whose texts repeat by design): a failure met on
        every 15 s check would otherwise flood the chat past Discord's ~30 messages a minute. A full queue drops
        its oldest message that is not an alarm (kinds in :data:`URGENT`: errors, halts, health), else its
        oldest — so a burst of trade messages never pushes out the max-drawdown or "trading impaired" alarm."""
        if not self._lanes:
            return
        text = str(text)
        now = self._clock()
        if kind not in STATE_CHANGES and self._recent.get(text, -math.inf) > now - self._repeat_s:
            self.suppressed += 1
            return
        self._recent.pop(text, None)
        self._recent[text] = now  # oldest first: expired or surplus entries leave from the front
        while self._recent and (len(self._recent) > RECENT_TEXTS
                                or next(iter(self._recent.values())) <= now - self._repeat_s):
            del self._recent[next(iter(self._recent))]
        for lane in self._lanes.values():
            if self._closing:
                lane.dropped += 1
                continue
            if len(lane.queue) >= self._queue_size:
                victim = next((i for i, (_, k) in enumerate(lane.queue) if k not in URGENT), 0)
                del lane.queue[victim]
                lane.dropped += 1
            lane.queue.append((text, kind))
            lane.idle.clear()
            lane.wake.set()

    async def start(self) -> None:
        """Open the HTTP session (unless one was given) and start one sender task per channel."""
        if not self._lanes or any(lane.task is not None for lane in self._lanes.values()):
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for lane in self._lanes.values():
            lane.task = asyncio.create_task(self._run(lane), name=f"notify-{lane.channel.name}")

    async def wait_idle(self) -> None:
        """Return once every queue is empty and no message is being sent (tests, orderly shutdown)."""
        for lane in self._lanes.values():
            await lane.idle.wait()

    async def flush(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for every queue to be empty and nothing in flight: ``True`` when it is. What is
        left stays queued (:meth:`close` sends or drops it); with no channel, ``True`` at once."""
        if not self._lanes:
            return True
        try:
            await within(self.wait_idle(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, deadline_s: float = 5.0) -> None:
        """Send what is queued within ``deadline_s``, then stop; what is left is counted as dropped."""
        if self._closed:
            return
        self._closing = True
        self._closed = True
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for lane in self._lanes.values():
            lane.wake.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=deadline_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for lane in self._lanes.values():
            left = len(lane.queue) + (lane.current is not None)
            if left:
                lane.dropped += left
                self._log.warning("notify_dropped_at_close", channel=lane.channel.name, messages=left)
            lane.queue.clear()
            lane.current = None
            lane.idle.set()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                lane.idle.set()
                if self._closing:
                    return
                lane.wake.clear()
                await lane.wake.wait()
                continue
            text, kind = lane.queue.popleft()
            lane.current = text
            try:
                await self._deliver(lane, text, kind)
            except Exception as exc:  # a sender task must survive anything
                lane.failed += 1
                self._log.warning("notify_failed", channel=lane.channel.name, kind=kind, error=type(exc).__name__)
            lane.current = None

    async def _deliver(self, lane: _Lane, text: str, kind: str) -> None:
        assert self._session is not None
        name = lane.channel.name
        extra, attempt, limited_s = 0.0, 1, 0.0
        while True:
            await self._pace(lane, extra)
            outcome = await _post(self._session, lane.channel, text, self._timeout_s)
            lane.last_done = asyncio.get_running_loop().time()
            if outcome.result is _Result.OK:
                lane.sent += 1
                self._log.debug("notify_sent", channel=name, kind=kind, attempt=attempt)
                return
            # A 429 that says when is not a failed attempt: a Telegram flood wait can last minutes, and counting
            # its waits (60 s each at most) dropped every queued message after ~3 minutes of it.
            told_when = outcome.status == 429 and outcome.retry_after_s is not None
            if outcome.result is _Result.FAIL or (attempt == self._max_attempts and not told_when) \
                    or limited_s >= _MAX_RATE_LIMITED_S:
                break
            lane.retried += 1
            extra = self._retry_wait(outcome, attempt)
            limited_s += extra if told_when else 0.0
            self._log.info("notify_retry", channel=name, kind=kind, attempt=attempt, status=outcome.status,
                           error=outcome.error, wait_s=round(extra, 3))
            attempt += 0 if told_when else 1
        lane.failed += 1
        self._log.warning("notify_failed", channel=name, kind=kind, attempts=attempt, status=outcome.status,
                          error=outcome.error)

    def _retry_wait(self, outcome: _Attempt, attempt: int) -> float:
        """429: the service's ``retry_after`` (capped); otherwise ``backoff_s · 2^(attempt−1)`` (capped)."""
        if outcome.status == 429 and outcome.retry_after_s is not None:
            return min(outcome.retry_after_s, self._max_retry_after_s)
        return min(self._backoff_s * 2.0 ** (attempt - 1), _MAX_BACKOFF_S)

    async def _pace(self, lane: _Lane, extra: float) -> None:
        """Wait until ``min_interval_s`` (and ``extra``) after the previous request of this channel ended."""
        if lane.last_done is None:
            return
        loop = asyncio.get_running_loop()
        delay = lane.last_done + max(self._min_interval_s, extra) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


ALARM_FLUSH_S = 5.0
"""How long a process about to exit waits for its last alarm to go out (:func:`tell_before_exit`)."""


async def tell_before_exit(notifier: Notifier | None, text: str, *, timeout_s: float = ALARM_FLUSH_S) -> bool | None:
    """Send the alarm ``text`` and wait at most ``timeout_s`` for it to go out: the process's stop closes the HTTP
    session its notifier uses, and a stop that overruns its budget never reaches the notifier's close. ``None`` with
    no channel configured, else whether every queued message went out in time; never raises, never hangs."""
    if notifier is None or not notifier.enabled:
        return None
    notifier.notify(text, "error")
    return await notifier.flush(timeout_s)


__all__ = [
    "ALARM_FLUSH_S", "DISCORD_LIMIT", "TELEGRAM_API", "TELEGRAM_LIMIT", "ChannelStats", "DiscordChannel", "Notifier",
    "TelegramChannel",
    "closed", "daily_summary", "error", "forced_exit", "learned", "opened", "process_failed", "tell_before_exit",
    "utc_minute",
]
