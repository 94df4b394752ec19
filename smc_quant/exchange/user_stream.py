"""``UserDataStream``: the account's user-data WebSocket and its listenKey lifecycle (``BINANCE-PROTOCOL.md`` §3.5).

- ``POST /fapi/v1/listenKey`` (``X-MBX-APIKEY`` only, no signature, weight 1) gives the key; a key
  already active comes back unchanged and extended.
- The socket is ``{ws_base}/private/ws?listenKey=<k>`` — the query form (the path form is dead on prod
  since 2026-04-23) with no ``events`` parameter, so ``listenKeyExpired`` and ``ALGO_UPDATE`` arrive.
- ``PUT /fapi/v1/listenKey`` every ``keepalive_s`` (30 min by default; the key lives 60 min); a PUT that failed
  is tried again ``keepalive_retry_s`` (30 s) later, up to ``keepalive_retries`` (5) times, before the period
  resumes. A -1125 answer (key unknown) or a ``listenKeyExpired`` frame → a new key and a new connection.
- Binance closes a connection at 24 h; it is recycled proactively after ``max_connection_s`` (23 h 30).
- Reconnects back off ``min(cap, base·2^attempt)`` with ±25 % jitter, reset after a connection succeeds.
- Frames are parsed by :func:`~smc_quant.exchange.wire_trading.parse_event` and delivered to every
  subscriber in arrival order, on the event loop. Malformed frames are counted by reason in
  ``malformed``; ignored event types (TRADE_LITE, MARGIN_CALL …) in ``ignored``.
- Whenever events may have been missed — ``listenKeyExpired``, and every reconnection after the first
  connection (dropped socket, 24 h recycle) — subscribers receive a
  :class:`~smc_quant.orders.broker.StreamExpired` so the executor reconciles over REST.

The listenKey is a credential: it is never logged (log lines carry the path only).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from smc_quant.errors import DataRejected, RateLimited, TemporaryError
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.wire_trading import parse_event
from smc_quant.logging import get_logger
from smc_quant.orders.broker import AccountEvent, EventSink, StreamExpired
from smc_quant.tasks import wait_cancelled

__all__ = ["Backoff", "ListenKeyInvalid", "UserDataStream", "stream_backoff"]

LISTEN_KEY_PATH = "/fapi/v1/listenKey"
Backoff = Callable[[int], float]
"""Seconds to wait before reconnect number ``attempt`` (0-based)."""


class ListenKeyInvalid(TemporaryError):
    """-1125: the listenKey does not exist (expired or deleted); a new one is needed."""


def stream_backoff(attempt: int) -> float:
    """0.5 s doubling per attempt, capped at 30 s, with ±25 % jitter."""
    return min(30.0, 0.5 * 2.0**attempt) * random.uniform(0.75, 1.25)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class UserDataStream:
    """One account's user-data stream: listenKey, keep-alive, reconnects, in-order delivery.

    ``connected`` is set while a socket is open (tests wait on it). Counters: ``frames``, ``events``,
    ``malformed`` and ``ignored`` (by reason / type), ``connections``, ``listen_keys_created``,
    ``keepalives``, ``expired`` (listenKeyExpired seen or -1125 met), ``sink_errors``, ``errors`` (unexpected
    exceptions in the loop, logged and retried with backoff).
    ``listen_keys_created`` counts distinct keys (a POST returning the active key again does not count).
    """

    def __init__(self, session: aiohttp.ClientSession, rest_base_url: str, ws_base_url: str,
                 api_headers: Mapping[str, str], *, governor: WeightGovernor, keepalive_s: float = 1800.0,
                 keepalive_retry_s: float = 30.0, keepalive_retries: int = 5,
                 max_connection_s: float = 23.5 * 3600, backoff: Backoff = stream_backoff,
                 timeout_s: float = 10.0, heartbeat_s: float | None = 60.0, healthy_s: float = 60.0,
                 keepalive_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, logger: Any = None) -> None:
        self._session = session
        self._rest = rest_base_url.rstrip("/")
        self._ws = ws_base_url.rstrip("/")
        self._headers = dict(api_headers)
        self.governor = governor
        self.keepalive_s = keepalive_s
        self.keepalive_retry_s = keepalive_retry_s
        self.keepalive_retries = keepalive_retries
        """A failed keep-alive PUT is tried again ``keepalive_retry_s`` later (never later than the period), up to
        ``keepalive_retries`` times in a row, before the ``keepalive_s`` period resumes (:meth:`_keepalive_loop`)."""
        self._keepalive_sleep = keepalive_sleep
        """The keep-alive loop's wait between PUTs (tests drive it)."""
        self.max_connection_s = max_connection_s
        self._backoff = backoff
        self.healthy_s = healthy_s
        """A socket that stayed open this long was healthy: the reconnect after it starts the backoff over (one
        that drops sooner keeps backing off, so a server that accepts and closes at once is not hammered)."""
        self._opened_at: float | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._heartbeat = heartbeat_s
        self._log = logger if logger is not None else get_logger(component="user_stream")
        self._sinks: list[EventSink] = []
        self._task: asyncio.Task[None] | None = None
        self._listen_key: str | None = None
        self.connected = asyncio.Event()
        self.down_since: float | None = None
        """Monotonic time the stream lost (or, from :meth:`start`, has not yet had) its socket; ``None`` while
        connected (``/health`` reads it)."""
        self.keepalive_seen = asyncio.Event()
        """Set after each successful keep-alive ``PUT`` (tests wait on it; clear it to wait for the next)."""
        self.frames = 0
        self.events = 0
        self.malformed: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.connections = 0
        self.listen_keys_created = 0
        self.keepalives = 0
        self.expired = 0
        self.sink_errors = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"UserDataStream(ws={self._ws!r}, connected={self.connected.is_set()})"

    @property
    def listen_key(self) -> str | None:
        """The key in use (a credential: do not log it)."""
        return self._listen_key

    def subscribe(self, sink: EventSink) -> None:
        """Add a subscriber; it is called on the event loop for every event, in arrival order."""
        self._sinks.append(sink)

    # -- listenKey REST -------------------------------------------------------------------------------------

    async def _key_request(self, method: str, key: str | None = None) -> dict[str, Any]:
        await self.governor.acquire(1)
        url = self._rest + LISTEN_KEY_PATH
        data = f"listenKey={key}".encode() if key else None
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"} if data else self._headers
        try:
            async with self._session.request(method, url, data=data, headers=headers, timeout=self._timeout) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TemporaryError(f"{method} {LISTEN_KEY_PATH}: {type(exc).__name__}") from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if 200 <= status < 300 and isinstance(body, dict):
            return body
        code = body.get("code") if isinstance(body, dict) else None
        msg = str(body.get("msg", ""))[:200] if isinstance(body, dict) else raw[:200].decode("utf-8", "replace")
        if code == -1125:
            raise ListenKeyInvalid(f"{method} {LISTEN_KEY_PATH}: -1125 {msg}")
        if status in (418, 429):
            seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            until = self.governor.penalise(status, seconds, msg)
            raise RateLimited(f"{method} {LISTEN_KEY_PATH}: HTTP {status}", status=status, retry_at_ms=until)
        raise TemporaryError(f"{method} {LISTEN_KEY_PATH}: HTTP {status} code {code}: {msg}")

    async def create_key(self) -> str:
        """``POST /fapi/v1/listenKey``: the active key (extended) or a new one."""
        body = await self._key_request("POST")
        key = body.get("listenKey")
        if not isinstance(key, str) or not key:
            raise TemporaryError(f"POST {LISTEN_KEY_PATH}: no listenKey in the answer")
        return key

    async def keepalive(self) -> None:
        """``PUT /fapi/v1/listenKey``: extend the current key 60 min; ``ListenKeyInvalid`` on -1125."""
        if self._listen_key is None:
            raise ListenKeyInvalid("no listenKey yet")
        await self._key_request("PUT", self._listen_key)
        self.keepalives += 1
        self.keepalive_seen.set()

    async def _delete_key(self) -> None:
        if self._listen_key is None:
            return
        with contextlib.suppress(TemporaryError):
            await self._key_request("DELETE", self._listen_key)
        self._listen_key = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection loop (returns at once; wait on ``connected`` for the first socket)."""
        if self._task is None or self._task.done():
            self._disconnected()
            self._task = asyncio.create_task(self._run(), name="user-data-stream")

    async def close(self) -> None:
        """Stop the loop, close the socket and invalidate the key (``DELETE /fapi/v1/listenKey``)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await wait_cancelled(task)
        self.connected.clear()
        await self._delete_key()

    # -- the loop -------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                # POST before every connection: it returns the active key (extended) or, once the old
                # one expired, a new one — a reconnect never reuses a dead key.
                key = await self.create_key()
                if key != self._listen_key:
                    self.listen_keys_created += 1
                self._listen_key = key
                await self._connection(key)
                attempt = 0
            except ListenKeyInvalid:
                self.expired += 1
                self._log.warning("listen_key_invalid", path=LISTEN_KEY_PATH)
            except (TemporaryError, aiohttp.ClientError, TimeoutError) as exc:
                self._disconnected()
                attempt = 0 if self._was_healthy() else attempt
                delay = self._backoff(attempt)
                attempt += 1
                self._log.warning("user_stream_retry", error=type(exc).__name__, attempt=attempt, delay_s=delay)
                if isinstance(exc, RateLimited):
                    delay = max(delay, (exc.retry_at_ms - self.governor.clock()) / 1000)
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug or an unforeseen library error must not end the account stream
                self._disconnected()
                self.errors += 1
                attempt = 0 if self._was_healthy() else attempt
                delay = self._backoff(attempt)
                attempt += 1
                self._log.error("user_stream_error", error=f"{type(exc).__name__}: {exc}"[:200], delay_s=delay)
                await asyncio.sleep(delay)

    def _was_healthy(self) -> bool:
        """Whether the socket that just closed had stayed open ``healthy_s`` (asked once per socket)."""
        opened, self._opened_at = self._opened_at, None
        return opened is not None and time.monotonic() - opened >= self.healthy_s

    def _disconnected(self) -> None:
        self.connected.clear()
        if self.down_since is None:
            self.down_since = time.monotonic()

    async def _connection(self, key: str) -> None:
        """One socket: read until it closes, the key expires or the 24 h recycle is due."""
        url = f"{self._ws}/private/ws?listenKey={key}"
        async with self._session.ws_connect(url, heartbeat=self._heartbeat, autoping=True,
                                            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)) as ws:
            first = self.connections == 0
            self.connections += 1
            self.connected.set()
            self.down_since = None
            self._opened_at = time.monotonic()
            self._log.info("user_stream_connected", path="/private/ws", connections=self.connections)
            if not first:
                self._deliver(StreamExpired(event_time_ms=_now_ms()))
            keeper = asyncio.create_task(self._keepalive_loop(ws), name="listen-key-keepalive")
            deadline = asyncio.get_running_loop().time() + self.max_connection_s
            try:
                while True:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        self._log.info("user_stream_recycle", path="/private/ws")
                        return
                    try:
                        msg = await ws.receive(timeout=remaining)
                    except TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        if self._frame(msg.data):
                            return
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                      aiohttp.WSMsgType.ERROR):
                        break
                    else:
                        self.malformed["not_text"] += 1
            finally:
                self._disconnected()
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
        if keeper_failed(keeper):
            raise ListenKeyInvalid("keep-alive answered -1125")
        raise TemporaryError("user-data socket closed")

    async def _keepalive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """PUT the key every ``keepalive_s``; on -1125 close the socket so the loop takes a new key.

        A PUT that failed (network, 5xx) is tried again ``keepalive_retry_s`` later, up to ``keepalive_retries`` times
        in a row: the key lives 60 min from the last PUT that got through, so a blip left to the next period's PUT
        raced the expiry (listenKeyExpired, a reconnect and a reconciliation). Then the period resumes."""
        failed = 0  # PUTs failed in a row
        retry_s = min(self.keepalive_retry_s, self.keepalive_s)
        while True:
            soon = 0 < failed <= self.keepalive_retries
            await self._keepalive_sleep(retry_s if soon else self.keepalive_s)
            try:
                await self.keepalive()
            except ListenKeyInvalid:
                await ws.close()
                raise
            except TemporaryError as exc:
                failed = failed + 1 if soon else 1
                retry = failed <= self.keepalive_retries
                self._log.warning("listen_key_keepalive_failed", error=type(exc).__name__, failed_in_row=failed,
                                  next_s=retry_s if retry else self.keepalive_s)
            else:
                failed = 0

    def _frame(self, data: str) -> bool:
        """Parse and deliver one frame; True when it was ``listenKeyExpired`` (reconnect with a new key)."""
        self.frames += 1
        try:
            event = parse_event(orjson.loads(data))
        except orjson.JSONDecodeError:
            self.malformed["not_json"] += 1
            return False
        except DataRejected as exc:
            self.malformed[exc.reason] += 1
            return False
        if event is None:
            self.ignored[_event_type(data)] += 1
            return False
        self._deliver(event)
        if isinstance(event, StreamExpired):
            self.expired += 1
            self._log.warning("listen_key_expired", path="/private/ws")
            return True
        return False

    def _deliver(self, event: AccountEvent) -> None:
        self.events += 1
        for sink in self._sinks:
            try:
                sink(event)
            except Exception as exc:  # a subscriber's bug must not stop the account stream
                self.sink_errors += 1
                self._log.error("user_stream_sink_error", error=f"{type(exc).__name__}: {exc}"[:200])


def keeper_failed(task: asyncio.Task[None]) -> bool:
    """Whether the keep-alive task ended on -1125."""
    return task.done() and not task.cancelled() and isinstance(task.exception(), ListenKeyInvalid)


def _event_type(data: str) -> str:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "unknown"
    kind = body.get("e") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else "unknown"
