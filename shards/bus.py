"""The signal bus: shard workers → one executor over a Redis Stream with a consumer group.

Wire format (msgspec JSON, one stream field ``s``): a :class:`~smc_quant.domain.trading.Signal` with the
Decimal price as a string (exact) and the features as floats. Publishers never block the feed: signals
go into a bounded in-memory buffer flushed by a background task (``XADD … MAXLEN ~``); while Redis is
down the buffer holds them, and when it is full the oldest is dropped and counted (a stale signal is
worth less than a fresh one). Any Redis error is transient to the flusher (a connection lost, but also a
failover's ``READONLY``, ``OOM`` under ``noeviction``, ``MISCONF``, a missing ACL permission): counted,
logged once per outage, retried with backoff while the buffer holds the data; :meth:`SignalPublisher.health`
turns unhealthy once data has waited longer than a grace period without a write (the worker's ``/health``).
The executor reads with ``XREADGROUP`` and acknowledges an entry only
after the executor handled it and its rows were written; at start it first re-reads its own pending
entries and claims those of a crashed consumer with ``XAUTOCLAIM`` (idle longer than ``claim_idle_ms``).
Marks (each minute's closes) travel on a second, capped stream read without a group: they are
ephemeral, the next minute replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NamedTuple

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shards.backoff import exponential_backoff
from smc_quant.domain.trading import Signal
from smc_quant.ops.health import STREAM_GRACE_S
from smc_quant.tasks import wait_cancelled, within

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
"""Exceptions that mean "Redis is unreachable right now" (retry later), not a bug."""
REDIS_FAILED = (RedisError, ConnectionError, OSError)
"""Any failure of a Redis call: unreachable, or refused by the server (``READONLY`` after a failover, ``OOM``
under ``noeviction``, ``MISCONF``, ``NOPERM``, ``WRONGTYPE``) — for loops that must outlive all of them."""


def redis_client(url: str) -> aioredis.Redis:
    """The Redis client of every long-running process: a connect, a command and an idle connection are each
    bounded (a Redis that accepts and never answers raises after 5 s instead of hanging its caller)."""
    client: aioredis.Redis = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5,
                                               health_check_interval=10)
    return client


class _WireSignal(msgspec.Struct, array_like=True, frozen=True):
    signal_id: str
    symbol: str
    side: Literal["LONG", "SHORT"]
    open_time: int
    price: str
    confidence: float
    stop_pct: float
    target_pct: float
    setup: str
    features: list[float]
    expected_return_pct: float | None
    model_version: int | None
    schema_version: str
    created_ms: int


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(_WireSignal)


class BadSignal(ValueError):
    """A bus entry that is not a valid encoded signal."""


def encode_signal(signal: Signal) -> bytes:
    """Signal → bytes (price as its exact decimal string, features as floats)."""
    return _ENCODER.encode(_WireSignal(
        signal.signal_id, signal.symbol, signal.side, signal.open_time, str(signal.price), signal.confidence,
        signal.stop_pct, signal.target_pct, signal.setup, [float(f) for f in signal.features],
        signal.expected_return_pct, signal.model_version, signal.schema_version, signal.created_ms))


def decode_signal(data: bytes) -> Signal:
    """Bytes → Signal; raise :class:`BadSignal` on anything malformed (never a crash of the consumer)."""
    try:
        w = _DECODER.decode(data)
        price = Decimal(w.price)
    except (msgspec.DecodeError, msgspec.ValidationError, InvalidOperation) as exc:
        raise BadSignal(f"undecodable signal: {exc}") from None
    if not price.is_finite() or price <= 0:
        raise BadSignal(f"bad signal price {w.price!r}")
    return Signal(w.signal_id, w.symbol, w.side, w.open_time, price, w.confidence, w.stop_pct, w.target_pct,
                  w.setup, tuple(w.features), w.expected_return_pct, w.model_version, w.schema_version, w.created_ms)


@dataclass(slots=True)
class PublisherStats:
    """Counters of one publisher (exported by the worker's /metrics and heartbeat line)."""

    published: int = 0
    buffered_max: int = 0
    overflow: int = 0
    redis_errors: int = 0
    marks_published: int = 0
    marks_dropped: int = 0
    """Unwritten minutes of marks dropped: older than ``MARKS_KEEP_MS`` behind the newest (Redis down), or past
    ``MARKS_MAX`` entries."""
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


MARKS_KEEP_MS = 3 * 60_000
"""Unwritten marks of minutes this far behind the newest are dropped (Redis down: the executor wants the latest)."""
MARKS_MAX = 1024
"""At most this many unwritten marks entries (one per slot and minute) wait, whatever their minutes."""


class SignalPublisher:
    """Bounded, non-blocking publisher of signals (and marks) to the streams; see the module docstring.

    :meth:`run` is the flusher (a worker runs it under its supervisor; :meth:`start`/:meth:`stop` run it as a
    plain task). ``sleep`` (the retry backoff) and ``monotonic`` (the health clock) are injectable.
    """

    def __init__(self, redis: Any, stream: str, *, marks_stream: str | None = None, buffer_max: int = 10_000,
                 maxlen: int = 100_000, retry_s: float = 0.5, retry_max_s: float = 5.0,
                 grace_s: float = STREAM_GRACE_S, clock_ms: Callable[[], int] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.redis = redis
        self.stream = stream
        self.marks_stream = marks_stream
        self.buffer_max = buffer_max
        self.maxlen = maxlen
        self.retry_s = retry_s
        self.retry_max_s = max(retry_s, retry_max_s)
        self.grace_s = grace_s
        self.sleep = sleep
        self.monotonic = monotonic
        self.log = logger or structlog.get_logger()
        self.stats = PublisherStats()
        self._buffer: deque[tuple[int, bytes, int]] = deque()
        """(sequence number, encoded signal, created_ms): the numbers say which entries a write took, so an entry
        dropped or added while that write was in flight is never mistaken for another."""
        self._marks: deque[tuple[int, int, bytes]] = deque()
        """(sequence number, minute, encoded marks): every slot's marks of the latest minutes (a worker's slots
        close the same minute together; a buffer of 4 entries dropped the others' minute before it was written)."""
        self._seq = 0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task[None] | None = None
        self._clock = clock_ms
        self._down = False
        self._waiting_since: float | None = None
        """Monotonic time since which unwritten data waits with no successful write (None: nothing waits)."""
        self.last_error: str | None = None
        """The last write's failure (``"Type: message"``) while it lasts; None once a write succeeded."""

    @property
    def buffered(self) -> int:
        """Signals waiting to be written (grows only while Redis is down)."""
        return len(self._buffer)

    def _queued(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = self.monotonic()
        self._wake.set()

    def publish(self, signal: Signal) -> None:
        """Queue ``signal`` for the stream; never blocks, drops the oldest (counted) when the buffer is full."""
        if len(self._buffer) >= self.buffer_max:
            self._buffer.popleft()
            self.stats.overflow += 1
            self.log.warning("signal_buffer_overflow", dropped=1, total=self.stats.overflow)
        self._seq += 1
        self._buffer.append((self._seq, encode_signal(signal), signal.created_ms))
        self.stats.buffered_max = max(self.stats.buffered_max, len(self._buffer))
        self._empty.clear()
        self._queued()

    def publish_marks(self, open_time: int, symbols: Sequence[str], closes: Sequence[float],
                      bars: Sequence[tuple[int, float, float, float] | None] | None = None) -> None:
        """Queue one minute's closes for the marks stream (while Redis is down only the latest 3 minutes are kept,
        every slot's).

        ``bars``: per symbol ``(open_time, open, high, low)`` of the candle the close belongs to (the paper
        account walks the bar's path, so a stop inside the bar fills at its trigger), or None.
        """
        if self.marks_stream is None or not symbols:
            return
        wire_bars = [list(b) if b is not None else None for b in bars] if bars is not None else None
        self._seq += 1
        self._marks.append((self._seq, open_time, msgspec.json.encode([open_time, list(symbols),
                                                                       [float(c) for c in closes], wire_bars])))
        newest = max(m[1] for m in self._marks)  # of what waits (a replay clock that starts over starts it over)
        while self._marks and (len(self._marks) > MARKS_MAX or self._marks[0][1] < newest - MARKS_KEEP_MS):
            self._marks.popleft()
            self.stats.marks_dropped += 1
        self._empty.clear()  # drain() waits for the marks too
        self._queued()

    def health(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """``(ok, body)`` at monotonic ``now``: unhealthy once unwritten data has waited more than ``grace_s``
        with no successful write (Redis refusing or unreachable, or the flusher not running)."""
        now = self.monotonic() if now is None else now
        stuck_s = 0.0 if self._waiting_since is None else max(0.0, now - self._waiting_since)
        ok = stuck_s <= self.grace_s
        return ok, {"status": "ok" if ok else "stuck", "unwritten_s": round(stuck_s, 1), "buffered": len(self._buffer),
                    "overflow": self.stats.overflow, "redis_errors": self.stats.redis_errors,
                    "error": self.last_error}

    def start(self) -> None:
        """Run the flusher as a plain task (a worker spawns :meth:`run` under its supervisor instead)."""
        self._task = asyncio.create_task(self.run(), name="signal-publisher")

    async def drain(self, timeout_s: float) -> bool:
        """Wait (bounded) until the buffers — signals and marks — are empty; ``False`` if Redis did not take them in
        time. It returned at once when only marks were queued (a worker's last minute at its stop)."""
        try:
            await within(self._empty.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop the flusher started by :meth:`start` (call :meth:`drain` first to write what is buffered).

        Never raises: a flusher that died of a bug is logged here, so the caller's own stop (leases, sockets)
        still runs."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await wait_cancelled(task)  # our caller's cancellation goes on; the flusher's is absorbed
        except Exception as exc:
            self.log.error("signal_publisher_failed", error=f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """The flusher: writes whatever is queued; any Redis error is retried with backoff (data kept)."""
        delays: Iterator[float] | None = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except REDIS_FAILED as exc:
                self.stats.redis_errors += 1
                self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if not self._down:  # one line per outage, not one per retry
                    self._down = True
                    self.log.warning("signal_bus_unavailable", error=self.last_error, buffered=len(self._buffer),
                                     note="retried with backoff, signals kept in the bounded buffer")
                delays = delays or exponential_backoff(self.retry_s, self.retry_max_s)
                await self.sleep(next(delays))
                self._wake.set()
            else:
                delays = None
                self.last_error = None
                if self._down:
                    self._down = False
                    self.log.warning("signal_bus_recovered", overflow=self.stats.overflow,
                                     errors=self.stats.redis_errors)

    async def _flush(self) -> None:
        while self._buffer or self._marks:
            batch = list(itertools.islice(self._buffer, 500))
            marks = list(self._marks)
            pipe = self.redis.pipeline(transaction=False)
            for _seq, data, _created in batch:
                pipe.xadd(self.stream, {"s": data}, maxlen=self.maxlen, approximate=True)
            for _seq, _minute, data in marks:
                pipe.xadd(self.marks_stream, {"m": data}, maxlen=1000, approximate=True)
            await pipe.execute()
            # What was written leaves the buffers, by number: a publish while the write was in flight may have
            # dropped a written entry (overflow) and added an unwritten one, which stays.
            sent = batch[-1][0] if batch else 0
            while self._buffer and self._buffer[0][0] <= sent:
                _seq, _data, created = self._buffer.popleft()
                if self._clock is not None and created:
                    self.stats.latencies_ms.append(float(self._clock() - created))
            sent = marks[-1][0] if marks else 0
            while self._marks and self._marks[0][0] <= sent:
                self._marks.popleft()
            self.stats.published += len(batch)
            self.stats.marks_published += len(marks)
            self._waiting_since = self.monotonic() if self._buffer or self._marks else None  # progress made
        self._empty.set()


@dataclass(slots=True)
class ConsumerStats:
    """Counters of the executor's consumer."""

    delivered: int = 0
    acked: int = 0
    claimed: int = 0
    bad: int = 0
    redis_errors: int = 0


class SignalConsumer:
    """The executor's side of the bus: XREADGROUP, XAUTOCLAIM of a dead consumer's pending, XACK."""

    def __init__(self, redis: Any, stream: str, group: str, consumer: str, *, claim_idle_ms: int = 30_000,
                 logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.log = logger or structlog.get_logger()
        self.stats = ConsumerStats()
        self._backlog = True  # first read our own pending entries (delivered before a crash, never acked)
        self.redelivered = False
        """True when the last :meth:`read` returned entries delivered before (pending or claimed)."""

    def rewind(self) -> None:
        """Re-read our own pending entries at the next :meth:`read` (after an ack that did not reach Redis)."""
        self._backlog = True

    async def ensure_group(self) -> None:
        """Create the stream and the group if absent (the group starts at the stream's beginning)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int = 100, block_ms: int = 1000) -> list[tuple[bytes, Signal | None]]:
        """The next entries for this consumer: own pending first, then claimed, then new (``>``).

        Each item is ``(entry id, signal)``; a malformed entry comes back with ``None`` (the caller acks
        it so it is not redelivered forever; counted in ``stats.bad``).
        """
        try:
            return await self._read(count, block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # Redis restarted empty: the group is gone
            self._backlog = True
            return []

    async def _read(self, count: int, block_ms: int) -> list[tuple[bytes, Signal | None]]:
        self.redelivered = self._backlog
        if self._backlog:
            resp = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
            entries = _entries(resp)
            if entries:
                return self._decode(entries)
            self._backlog = False
            claimed = await self._autoclaim(count)
            if claimed:
                return claimed
        self.redelivered = False
        resp = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count,
                                           block=block_ms)
        return self._decode(_entries(resp))

    async def _autoclaim(self, count: int) -> list[tuple[bytes, Signal | None]]:
        out: list[tuple[bytes, Signal | None]] = []
        start: Any = "0-0"
        while True:
            resp = await self.redis.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                               start_id=start, count=count)
            start, entries = resp[0], [e for e in resp[1] if e is not None and e[1] is not None]
            self.stats.claimed += len(entries)
            out.extend(self._decode(entries))
            if start in (b"0-0", "0-0") or len(out) >= count:
                return out

    async def claim_stale(self, count: int = 100) -> list[tuple[bytes, Signal | None]]:
        """Claim entries another consumer left pending longer than ``claim_idle_ms`` (periodic sweep)."""
        return await self._autoclaim(count)

    def _decode(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[bytes, Signal | None]]:
        out: list[tuple[bytes, Signal | None]] = []
        for entry_id, fields in entries:
            self.stats.delivered += 1
            try:
                out.append((entry_id, decode_signal(fields[b"s"])))
            except (BadSignal, KeyError) as exc:
                self.stats.bad += 1
                self.log.error("bad_signal_entry", entry=entry_id.decode(), error=str(exc)[:200])
                out.append((entry_id, None))
        return out

    async def ack(self, ids: Sequence[bytes]) -> None:
        """Acknowledge handled entries (they leave the pending list)."""
        if ids:
            await self.redis.xack(self.stream, self.group, *ids)
            self.stats.acked += len(ids)


def _entries(resp: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    if not resp:
        return []
    return [e for e in resp[0][1] if e[1] is not None]


class Marks(NamedTuple):
    """One shard's closes of one minute from the marks stream."""

    open_time: int
    symbols: list[str]
    closes: list[float]
    bars: list[tuple[int, float, float, float] | None]
    """Per symbol ``(open_time, open, high, low)`` of the candle, when the worker sent it."""


class MarksReader:
    """Reads the marks stream (no group: each executor start reads from "now")."""

    def __init__(self, redis: Any, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.last_id: Any = "$"

    async def read(self, block_ms: int | None = 1000) -> list[Marks]:
        """The minutes published since the last call: ``(open_time, symbols, closes)`` each.

        The first call returns the latest entry already in the stream (the marks known at start), later
        calls what came after it (``block_ms`` None: do not wait).
        """
        if self.last_id == "$":  # resolve "now" once, so entries between two calls are never skipped
            last = await self.redis.xrevrange(self.stream, count=1)
            self.last_id = "0-0"
            if last:
                return self._parse(last)
        resp = await self.redis.xread({self.stream: self.last_id}, block=block_ms, count=100)
        return self._parse(_entries(resp))

    def _parse(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Marks]:
        out: list[Marks] = []
        for entry_id, fields in entries:
            self.last_id = entry_id
            with contextlib.suppress(msgspec.DecodeError, KeyError, ValueError, TypeError):
                open_time, symbols, closes, *rest = msgspec.json.decode(fields[b"m"])
                bars = rest[0] if rest and rest[0] is not None else [None] * len(symbols)
                out.append(Marks(int(open_time), list(symbols), [float(c) for c in closes],
                                 [tuple(b) if b is not None else None for b in bars]))
        return out
