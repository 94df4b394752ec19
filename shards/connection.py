"""One combined-stream WebSocket connection carrying up to 200 kline streams of a shard.

``run()`` connects to ``<market route>/stream``, subscribes in paced SUBSCRIBE messages (under the
10 messages/s limit), and pushes every data frame with its receive time onto the shard's bounded
queue without ever awaiting it (a full queue drops and counts), yielding to the loop every
``YIELD_EVERY`` queued frames so workers keep up within a burst. In-candle updates (``"x":false``)
count as proof of life and are not queued: only final candles are stored. A watchdog recycles the socket when
no data arrived for ``heartbeat_timeout_s`` and before the 24 h cut. A subscription that is acked but
silent on a route other than ``/market`` is the 2026 mis-route: it raises an alarm and the next
attempt goes to the origin's ``/market`` route. Server pings are answered by aiohttp (autoping).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import structlog

from shards.backoff import BackoffFactory
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.settings import FeedSettings

Frame = tuple[int, str]
SUBSCRIBE_CHUNK = 50
OPEN_MARK = '"x":false'
"""Compact-JSON marker of a non-final kline update; such frames skip the queue (anything else is parsed)."""
ROTATE_AFTER_FINAL_S = (0.5, 3.0)
"""A socket past its maximum age is recycled this long after the latest final kline — just after a close's burst
of finals, so the reconnect is done long before the next close — ..."""
ROTATE_OVERDUE_S = 120.0
"""... or this long past the age whatever the phase (no final seen: a quiet stream)."""


def rotation_due(age_s: float, since_final_s: float, max_age_s: float) -> bool:
    """Whether a socket ``age_s`` old whose latest final kline came ``since_final_s`` ago is recycled now.

    Every socket of every shard reaches its age together; recycled at once, about 3 % of the rotations straddled
    a close (1.5–2 s blind: reconnect, backoff, paced SUBSCRIBEs) and the whole universe missed that minute, found
    only at the next one and backfilled a minute late."""
    if age_s <= max_age_s:
        return False
    low, high = ROTATE_AFTER_FINAL_S
    return low <= since_final_s <= high or age_s > max_age_s + ROTATE_OVERDUE_S


YIELD_EVERY = 32
"""The reader yields to the event loop after this many queued frames. aiohttp hands over every frame
of a received chunk without suspending, so a minute-close burst (all finals in one write) would
otherwise be read whole before any worker runs: the first candle would wait for the last frame to be
read. Yielding lets workers store candles while the burst is still being read; frames not yet read
wait in aiohttp's buffer (before our receive stamp), so the minute's last candle is stored no sooner —
bench/feed.py reports that minute-close completion next to the per-frame latency."""


def market_route(base: str) -> str:
    """The ``/market`` route on the same origin as ``base`` (where kline streams live since 2026)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/market", "", ""))


def is_market_route(base: str) -> bool:
    return urlsplit(base).path.rstrip("/").endswith("/market")


class StreamConnection:
    """Keeps one socket alive for ``streams`` and feeds ``queue``; cancel the task to stop."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        streams: Sequence[str],
        queue: asyncio.Queue[Frame],
        metrics: FeedMetrics,
        settings: FeedSettings,
        backoff: BackoffFactory,
        logger: structlog.stdlib.BoundLogger,
    ) -> None:
        self.base_url = base_url
        self.streams = tuple(streams)
        self._session = session
        self._queue = queue
        self._metrics = metrics
        self._settings = settings
        self._backoff = backoff
        self._log = logger
        self._last_data = 0.0
        self._last_final = 0.0
        self._data_seen = 0
        self._next_id = 1
        self._awaiting_acks: set[int] = set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._sending = asyncio.Lock()
        self._sent_at = 0.0
        self.subscribed = asyncio.Event()
        """Set once every SUBSCRIBE of the current socket was acknowledged; cleared on reconnect."""
        if not is_market_route(base_url):
            self._log.warning("ws_route_suspect", base=base_url, expected=market_route(base_url))

    async def run(self) -> None:
        delays = self._backoff()
        while True:
            opened = time.monotonic()
            reason = await self._session_once()
            self._metrics.reconnects += 1
            if self._data_seen and time.monotonic() - opened >= self._settings.backoff_max_s:
                # A healthy socket (data flowed, and it lived longer than the longest wait) starts the backoff
                # over; one that a server cuts soon after its first frames keeps backing off, so a failing
                # edge is not reconnected to every half second (Binance may ban an IP that keeps reconnecting).
                delays = self._backoff()
            delay = next(delays)
            self._log.warning("ws_reconnect", reason=reason, in_s=round(delay, 3), url=self.base_url)
            await asyncio.sleep(delay)

    async def _session_once(self) -> str:
        self._data_seen = 0
        self.subscribed.clear()
        url = self.base_url.rstrip("/") + "/stream"
        try:
            async with self._session.ws_connect(url, autoping=True, heartbeat=None, max_msg_size=0) as ws:
                self._metrics.connections_open += 1
                try:
                    return await self._serve(ws)
                finally:
                    self._metrics.connections_open -= 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return f"connect failed: {exc!r}"

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        self._last_data = time.monotonic()
        self._verdict: str | None = None
        watchdog = asyncio.create_task(self._watchdog(ws))
        self._awaiting_acks = set()
        self._ws = ws
        subscriber = asyncio.create_task(self._subscribe(ws, self.streams))
        try:
            await self._pump(ws)
        finally:
            self._ws = None
            subscriber.cancel()
            watchdog.cancel()
        return self._verdict or f"closed code={ws.close_code}"

    async def add(self, streams: Sequence[str]) -> list[str]:
        """More streams on this connection (a new listing): subscribed now if a socket is open — ``subscribed``
        is cleared until their acknowledgement — and with the others after any reconnect. Returns those new
        to the connection."""
        new = [s for s in dict.fromkeys(streams) if s not in self.streams]
        self.streams += tuple(new)
        ws = self._ws
        if new and ws is not None and not ws.closed:
            try:
                await self._subscribe(ws, new)
            except (aiohttp.ClientError, ConnectionError) as exc:  # closing under us: the reconnect subscribes all
                self._log.warning("ws_subscribe_deferred", streams=new, error=repr(exc))
        return new

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse, streams: Sequence[str]) -> None:
        """SUBSCRIBE ``streams`` in chunks, every control message of the connection paced under Binance's limit."""
        requests = []
        for i in range(0, len(streams), SUBSCRIBE_CHUNK):
            requests.append({"method": "SUBSCRIBE", "params": list(streams[i : i + SUBSCRIBE_CHUNK]),
                             "id": self._next_id})
            self._awaiting_acks.add(self._next_id)
            self._next_id += 1
        self.subscribed.clear()
        pause = 1.0 / self._settings.control_messages_per_s
        for request in requests:
            async with self._sending:
                wait = self._sent_at + pause - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await ws.send_str(orjson.dumps(request).decode())
                self._sent_at = time.monotonic()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        queue, metrics, clock = self._queue, self._metrics, time.perf_counter_ns
        queued = 0
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    metrics.reject("binary_frame")
                continue
            data: str = msg.data
            if data.startswith('{"stream"'):
                self._last_data = time.monotonic()
                self._data_seen += 1
                metrics.frames += 1
                if OPEN_MARK in data:
                    continue  # an in-candle update: proof of life only, never stored
                self._last_final = self._last_data
                try:
                    queue.put_nowait((clock(), data))
                except asyncio.QueueFull:
                    metrics.queue_drops += 1
                queued += 1
                if queued == YIELD_EVERY:  # let the workers store these while the rest is read
                    queued = 0
                    await asyncio.sleep(0)
            else:
                self._control(data)

    def _control(self, data: str) -> None:
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._metrics.reject("malformed")
            return
        if isinstance(reply, dict) and reply.get("error"):
            self._metrics.reject("control_error")
            self._log.error("ws_control_error", reply=reply)
        elif not (isinstance(reply, dict) and "id" in reply):
            self._metrics.reject("malformed")
        else:
            self._awaiting_acks.discard(reply["id"])
            if not self._awaiting_acks:
                self.subscribed.set()

    async def _watchdog(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        started = time.monotonic()
        timeout = self._settings.heartbeat_timeout_s
        while not ws.closed:
            await asyncio.sleep(min(timeout / 4, 1.0))
            now = time.monotonic()
            if now - self._last_data > timeout:
                self._verdict = self._on_silence()
                await ws.close(code=1000, message=b"stalled")
            elif rotation_due(now - started, now - self._last_final, self._settings.max_connection_age_s):
                self._verdict = "max connection age"
                await ws.close(code=1000, message=b"recycle")

    def _on_silence(self) -> str:
        self._metrics.stalls += 1
        if self._data_seen:
            return "stalled"
        if is_market_route(self.base_url):
            self._log.error("ws_silent_subscription", url=self.base_url)
            return "silent subscription"
        self._metrics.wrong_route_alarms += 1
        target = market_route(self.base_url)
        self._log.error("ws_silent_subscription", url=self.base_url, switching_to=target,
                        hint="kline streams live on the /market route since 2026")
        self.base_url = target
        return "silent subscription"
