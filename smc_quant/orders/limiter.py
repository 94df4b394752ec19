"""``OrderLimiter``: keeps order placement under Binance's per-account ORDERS limits (``BINANCE-PROTOCOL.md`` §4).

Binance counts new orders per account: 300 per 10 s and 1200 per minute by default (the account's
real values come from ``exchangeInfo.rateLimits`` type ``ORDERS``, see :meth:`OrderLimiter.from_rate_limits`).
Every placement calls :meth:`OrderLimiter.acquire` first; it returns once a slot is free in *every*
sliding window, so the number of placements in any window of ``interval_ms`` never exceeds ``limit``:

    allowed at t  ⇔  for each window (limit, interval):  #{taken s : t − interval < s ≤ t} < limit

Exits have priority: an ``acquire(exit=True)`` never waits behind queued entries (entries only take a
slot when no exit is waiting); within a class the order is first-come first-served.

The exchange's own counts (``X-MBX-ORDER-COUNT-10S`` / ``-1M`` response headers) are folded in by
:meth:`observe`: when the exchange counts more than we do (another process on the same account), the
difference is recorded as taken now, which is conservative. A 429 / -1015 ``TOO_MANY_ORDERS`` blocks
all placements until the penalty ends (:meth:`penalise`).

The clock, the sleep and the event type are injected (the orders package imports no I/O library, asyncio
included): the composition root passes ``asyncio.sleep`` / ``asyncio.Event``, tests a hand-driven clock.
Waiting: the waiter at the head of its turn sleeps exactly until a slot frees (then re-checks: a penalty or an
``observe`` may have pushed it later); every other waiter waits on an event that fires whenever a waiter
leaves the queue.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["OrderLimiter", "OrderWindow"]

Clock = Callable[[], int]
"""Current time in epoch milliseconds."""
Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds."""


class EventLike(Protocol):
    """What the limiter needs of an event (``asyncio.Event`` fits)."""

    def set(self) -> None: ...

    async def wait(self) -> Any: ...

HEADER_WINDOWS: Mapping[str, int] = {"X-MBX-ORDER-COUNT-10S": 10_000, "X-MBX-ORDER-COUNT-1M": 60_000}
_INTERVAL_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class OrderWindow:
    """One ORDERS limit: at most ``limit`` placements in any ``interval_ms`` sliding window."""

    limit: int
    interval_ms: int

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.interval_ms <= 0:
            raise ValueError(f"order window needs a positive limit and interval: {self}")


DEFAULT_WINDOWS = (OrderWindow(300, 10_000), OrderWindow(1200, 60_000))


class OrderLimiter:
    """Sliding-window order-count limiter shared by every order sender of one account.

    Counters for metrics: ``acquired_total``, ``throttled`` (acquires that had to wait),
    ``penalties`` (429 / -1015 seen), ``observed_extra`` (placements the exchange counted that we had not).
    """

    def __init__(self, windows: Iterable[OrderWindow] = DEFAULT_WINDOWS, *, sleep: Sleep,
                 new_event: Callable[[], EventLike], clock: Clock = _wall_clock_ms) -> None:
        self.windows = tuple(sorted(windows, key=lambda w: w.interval_ms))
        if not self.windows:
            raise ValueError("at least one order window is required")
        self.clock = clock
        self.sleep = sleep
        self._taken: deque[int] = deque()
        self._blocked_until_ms = 0
        self._exits: deque[object] = deque()
        self._entries: deque[object] = deque()
        self._new_event = new_event
        self._changed = new_event()
        self.acquired_total = 0
        self.throttled = 0
        self.penalties = 0
        self.observed_extra = 0

    @classmethod
    def from_rate_limits(cls, rate_limits: Iterable[Mapping[str, Any]], **kwargs: Any) -> OrderLimiter:
        """Build from ``exchangeInfo.rateLimits``: every ``ORDERS`` entry becomes a window (defaults if none)."""
        windows = []
        for row in rate_limits:
            if row.get("rateLimitType") != "ORDERS":
                continue
            unit = _INTERVAL_MS.get(str(row.get("interval")))
            num, limit = row.get("intervalNum"), row.get("limit")
            if unit is None or not isinstance(num, int) or not isinstance(limit, int):
                raise ValueError(f"malformed ORDERS rate limit: {dict(row)}")
            windows.append(OrderWindow(limit, unit * num))
        return cls(windows or DEFAULT_WINDOWS, **kwargs)

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def blocked_until_ms(self) -> int:
        """No placement before this time (0 without a penalty)."""
        return self._blocked_until_ms

    @property
    def waiting(self) -> tuple[int, int]:
        """Queued ``(exits, entries)``."""
        return len(self._exits), len(self._entries)

    def count(self, interval_ms: int) -> int:
        """Placements taken in the last ``interval_ms`` (``now − interval < t ≤ now``)."""
        now = self.clock()
        return sum(1 for t in self._taken if t > now - interval_ms)

    def wait_ms(self) -> int:
        """How long until one more placement is allowed (0: now)."""
        now = self.clock()
        self._prune(now)
        wait = max(0, self._blocked_until_ms - now)
        taken = list(self._taken)
        for w in self.windows:
            inside = [t for t in taken if t > now - w.interval_ms]
            if len(inside) >= w.limit:
                # the slot frees when the (len − limit + 1)-th oldest inside leaves the window
                oldest_to_leave = inside[len(inside) - w.limit]
                wait = max(wait, oldest_to_leave + w.interval_ms - now)
        return wait

    def _prune(self, now: int) -> None:
        horizon = now - self.windows[-1].interval_ms
        while self._taken and self._taken[0] <= horizon:
            self._taken.popleft()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = self._new_event()

    # -- acquire ---------------------------------------------------------------------------------------------

    async def acquire(self, *, exit: bool = False) -> None:
        """Wait for a free slot in every window, then take it; exits go ahead of every queued entry."""
        queue = self._exits if exit else self._entries
        token = object()
        queue.append(token)
        waited = False
        try:
            while True:
                my_turn = queue[0] is token and (exit or not self._exits)
                wait = self.wait_ms() if my_turn else None
                if wait == 0:
                    self._taken.append(self.clock())
                    self.acquired_total += 1
                    self.throttled += int(waited)
                    return
                waited = True
                await self._wait(wait)
        finally:
            queue.remove(token)
            self._notify()

    async def _wait(self, wait_ms: int | None) -> None:
        """The head sleeps until its slot frees; the others until some waiter leaves the queue."""
        if wait_ms is None:
            await self._changed.wait()
        else:
            await self.sleep(wait_ms / 1000.0)

    # -- exchange feedback ---------------------------------------------------------------------------------

    def observe(self, headers: Mapping[str, str]) -> None:
        """Fold in ``X-MBX-ORDER-COUNT-10S`` / ``-1M``: when the exchange counts more, record the excess as now."""
        now = self.clock()
        self._prune(now)
        extra = 0
        for name, interval in HEADER_WINDOWS.items():
            value = headers.get(name)
            if value is None or not value.isdigit():
                continue
            ours = sum(1 for t in self._taken if t > now - interval)
            extra = max(extra, int(value) - ours)
        if extra > 0:
            self._taken.extend([now] * extra)
            self.observed_extra += extra

    def penalise(self, *, retry_after_s: float | None = None, message: str = "") -> int:
        """A 429 / -1015 ``TOO_MANY_ORDERS``: block placements; return the end of the block (epoch ms).

        The end is ``Retry-After`` when given, else one full window of the limit the message names
        ("… orders per MINUTE" → the minute window), else the shortest window.
        """
        now = self.clock()
        self.penalties += 1
        if retry_after_s is not None:
            until = now + int(retry_after_s * 1000)
        else:
            upper = message.upper()
            interval = self.windows[0].interval_ms
            if "MINUTE" in upper or "1M" in upper:
                interval = max(interval, *(w.interval_ms for w in self.windows if w.interval_ms <= 60_000))
            until = now + interval
        self._blocked_until_ms = max(self._blocked_until_ms, until)
        return self._blocked_until_ms
