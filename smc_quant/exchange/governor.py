"""``WeightGovernor``: keeps REST usage under the exchange's per-minute REQUEST_WEIGHT limit.

The budget is ``limit * (1 - headroom)`` per wall-clock minute. Usage is our own accounting raised
to the ``X-MBX-USED-WEIGHT-1M`` header whenever the exchange reports more (other clients on the same
IP count too). A 429 or 418 blocks every caller until the exchange's deadline, so after a 429 nothing
is sent before the deadline and the IP never earns a 418. The clock and the sleep are injected so
tests run on a fake clock with no real waiting.

Several processes (shard workers, the executor) behind one IP share one budget: with a
:class:`SharedWeightBudget` every acquire also adds its weight to a per-minute Redis counter
(``INCRBY`` on ``rest_weight(minute)``, expiring after two minutes) and waits for the next minute when
the cluster-wide total would pass the budget. The shared budget is best effort and never holds up the
exchange path: its Redis call is made outside the governor's lock and waited for at most
``shared_timeout_s`` (0.25 s); a failure (an error, or no answer in time) opens a circuit breaker — for
``shared_pause_s`` (30 s) the local accounting alone decides, with no Redis call — counted in
``shared_failures`` / ``shared_skipped`` and logged once per trip.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from smc_quant.domain.candles import MINUTE_MS
from smc_quant.errors import RateLimited

Clock = Callable[[], int]
"""Current wall-clock time in epoch milliseconds."""
Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds."""

_BANNED_UNTIL = re.compile(r"banned until (\d+)")


def wall_clock_ms() -> int:
    """The system clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _next_minute(now_ms: int) -> int:
    return (now_ms // MINUTE_MS + 1) * MINUTE_MS


class SharedWeightBudget:
    """The cluster-wide per-minute REST weight counter in Redis (one key per epoch minute).

    ``redis`` is a ``redis.asyncio.Redis``; ``key_for(minute)`` names the counter (``ClusterKeys.rest_weight``).
    """

    def __init__(self, redis: Any, key_for: Callable[[int], str], *, expire_s: int = 120) -> None:
        self.redis = redis
        self.key_for = key_for
        self.expire_s = expire_s
        self.errors = 0

    async def add(self, minute: int, weight: int) -> int | None:
        """Add ``weight`` to ``minute``'s counter and return the new total (None: Redis unreachable)."""
        key = self.key_for(minute)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incrby(key, weight)
            pipe.expire(key, self.expire_s)
            total, _ = await pipe.execute()
        except Exception:  # Redis down or any client error: local accounting only, counted
            self.errors += 1
            return None
        return int(total)

    async def give_back(self, minute: int, weight: int) -> None:
        """Undo an :meth:`add` that did not fit (the request waits for the next minute instead)."""
        try:
            await self.redis.decrby(self.key_for(minute), weight)
        except Exception:
            self.errors += 1

    async def used(self, minute: int) -> int:
        """The cluster-wide weight counted for ``minute`` (0 when absent or unreachable)."""
        try:
            value = await self.redis.get(self.key_for(minute))
        except Exception:
            self.errors += 1
            return 0
        return int(value or 0)


class WeightGovernor:
    """Shared by every REST caller of one process; ``acquire`` before each request.

    Plain counters for the metrics exporter: ``used_weight`` (this minute), ``acquired_total``,
    ``throttled`` (acquires that had to wait), ``rate_limited_429``, ``banned_418``; of the shared budget:
    ``shared_waits``, ``shared_failures`` (calls that failed or timed out), ``shared_skipped`` (acquires
    counted locally only while the breaker was open).
    """

    def __init__(self, limit: int = 2400, headroom: float = 0.10, *,
                 clock: Clock = wall_clock_ms, sleep: Sleep = asyncio.sleep,
                 shared: SharedWeightBudget | None = None, shared_timeout_s: float = 0.25,
                 shared_pause_s: float = 30.0, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        if not 0.0 <= headroom < 1.0:
            raise ValueError("headroom must be in [0, 1)")
        self.clock = clock
        self.sleep = sleep
        self._headroom = headroom
        self._limit = limit
        self._minute = clock() // MINUTE_MS
        self._used = 0
        self._blocked_until_ms = 0
        self._penalty_status = 429
        self._lock = asyncio.Lock()
        self.acquired_total = 0
        self.throttled = 0
        self.rate_limited_429 = 0
        self.banned_418 = 0
        self.shared = shared
        self.shared_waits = 0
        self.shared_timeout_s = shared_timeout_s
        self.shared_pause_s = shared_pause_s
        self.shared_failures = 0
        self.shared_skipped = 0
        self._shared_off_until_ms = 0
        self._shared_calls: set[asyncio.Task[Any]] = set()
        self.log = logger or structlog.get_logger()

    @property
    def budget(self) -> int:
        """Weight we allow ourselves per minute (the limit minus the headroom)."""
        return int(self._limit * (1.0 - self._headroom))

    @property
    def used_weight(self) -> int:
        """Weight counted against the current minute."""
        self._roll(self.clock())
        return self._used

    @property
    def blocked_until_ms(self) -> int:
        """Nothing is sent before this time (0 when not rate limited)."""
        return self._blocked_until_ms

    def set_limit(self, limit: int) -> None:
        """Adopt the REQUEST_WEIGHT limit read from exchangeInfo ``rateLimits``."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._limit = limit

    async def acquire(self, weight: int, *, max_wait_s: float | None = None) -> None:
        """Wait until ``weight`` fits into this minute's budget and no penalty is running, then take it.

        With ``max_wait_s``, a running 429/418 penalty that ends later than that raises ``RateLimited``
        at once instead of waiting (an IP ban can last up to three days).
        """
        if not 0 < weight <= self.budget:
            raise ValueError(f"weight {weight} outside 1..{self.budget}")
        self._refuse_long_penalty(max_wait_s)
        waited = self._lock.locked()  # the holder only keeps the lock while it sleeps
        while True:
            async with self._lock:
                while (wait_ms := self._wait_ms(weight)) > 0:
                    self._refuse_long_penalty(max_wait_s)  # a ban that came while this caller waited or queued
                    waited = True
                    await self.sleep(wait_ms / 1000.0)
                self._used += weight  # taken locally now; given back below if the cluster has no room
                minute = self._minute
            if await self._fits_cluster(minute, weight):  # outside the lock: Redis never queues the others
                break
            if self._minute == minute:
                self._used = max(0, self._used - weight)
            waited = True
            self.shared_waits += 1
            now = self.clock()
            await self.sleep(max(0, _next_minute(now) - now) / 1000.0)
        self.acquired_total += weight
        self.throttled += int(waited)

    async def _fits_cluster(self, minute: int, weight: int) -> bool:
        """Count ``weight`` in the cluster-wide ``minute``; ``False`` (given back) when it would pass the budget.

        Best effort: while the breaker is open no Redis call is made; a call that fails or takes longer than
        ``shared_timeout_s`` counts as "fits" and opens the breaker for ``shared_pause_s``."""
        if self.shared is None:
            return True
        if self.clock() < self._shared_off_until_ms:
            self.shared_skipped += 1
            return True
        total = await self._bounded(self.shared.add(minute, weight))
        if total is None:
            self._trip()
            return True
        if total <= self.budget:
            return True
        await self._bounded(self.shared.give_back(minute, weight))
        return False

    async def _bounded(self, call: Coroutine[Any, Any, Any]) -> Any:
        """``call``'s result, or None when it did not finish within ``shared_timeout_s``. It runs as its own task,
        so a call that does not end when cancelled (a redis-py read can swallow a cancellation) never holds up the
        caller; it is cancelled and left to end on its own (:meth:`close` waits for the stragglers)."""
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait([task], timeout=self.shared_timeout_s)
        if done:
            return task.result()
        task.cancel()
        self._shared_calls.add(task)
        task.add_done_callback(self._forget)
        return None

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._shared_calls.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned call's failure is already counted, never "never retrieved"

    def _trip(self) -> None:
        now = self.clock()
        self.shared_failures += 1
        if now >= self._shared_off_until_ms:  # one line per trip (calls in flight together fail together)
            self.log.warning("rest_weight_shared_unavailable", failures=self.shared_failures,
                             local_only_s=self.shared_pause_s, note="REST weight counted by this process alone")
        self._shared_off_until_ms = now + int(self.shared_pause_s * 1000)

    async def close(self) -> None:
        """Wait (bounded) for shared-budget calls abandoned after their timeout (at the process's stop)."""
        if self._shared_calls:
            await asyncio.wait(list(self._shared_calls), timeout=1.0)

    def _refuse_long_penalty(self, max_wait_s: float | None) -> None:
        if max_wait_s is None:
            return
        if self._blocked_until_ms - self.clock() > max_wait_s * 1000:
            until, status = self._blocked_until_ms, self._penalty_status
            raise RateLimited(f"REST requests paused until {until} (HTTP {status})",
                              status=status, retry_at_ms=until, now_ms=self.clock())

    def _wait_ms(self, weight: int) -> int:
        now = self.clock()
        self._roll(now)
        if now < self._blocked_until_ms:
            return self._blocked_until_ms - now
        if self._used + weight > self.budget:
            return _next_minute(now) - now
        return 0

    def _roll(self, now_ms: int) -> None:
        minute = now_ms // MINUTE_MS
        if minute != self._minute:
            self._minute = minute
            self._used = 0

    def observe(self, used_weight_1m: int, sent_at_ms: int) -> None:
        """Fold in the exchange's ``X-MBX-USED-WEIGHT-1M`` for a request sent at ``sent_at_ms``."""
        self._roll(self.clock())
        if sent_at_ms // MINUTE_MS == self._minute:
            self._used = max(self._used, used_weight_1m)

    def penalise(self, status: int, retry_after_s: float | None, body: str) -> int:
        """Record a 429/418 and block every caller until its deadline; return the deadline (epoch ms).

        The deadline is the latest of the 418 body's "banned until <ms>" and ``Retry-After``; with
        neither, the next minute boundary.
        """
        now = self.clock()
        if status == 418:
            self.banned_418 += 1
        else:
            self.rate_limited_429 += 1
        candidates = []
        if match := _BANNED_UNTIL.search(body):
            candidates.append(int(match.group(1)))
        if retry_after_s is not None:
            candidates.append(now + int(retry_after_s * 1000))
        deadline = max(candidates) if candidates else _next_minute(now)
        if deadline >= self._blocked_until_ms:
            self._blocked_until_ms, self._penalty_status = deadline, status
        return self._blocked_until_ms
