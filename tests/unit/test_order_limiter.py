"""OrderLimiter on a hand-driven clock: sliding windows never exceeded, exits first, header sync, penalties."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from smc_quant.orders.limiter import OrderLimiter, OrderWindow


class ManualClock:
    """Epoch-ms clock that only moves in ``advance``; ``sleep`` parks the caller until its deadline passes."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now = now_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + round(seconds * 1000), next(self._seq), fut))
        await fut

    async def advance(self, ms: int) -> None:
        """Move time forward, waking every sleeper whose deadline passed, and let the loop settle."""
        self.now += ms
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        await settle()


async def settle() -> None:
    """Run the event loop until every ready callback has run (no wall-clock waiting)."""
    for _ in range(50):
        await asyncio.sleep(0)


def limiter(clock: ManualClock, *windows: OrderWindow) -> OrderLimiter:
    return OrderLimiter(windows or (OrderWindow(3, 10_000), OrderWindow(5, 60_000)), clock=clock,
                        sleep=clock.sleep, new_event=asyncio.Event)


def test_from_rate_limits_reads_orders_entries() -> None:
    """exchangeInfo rateLimits: the ORDERS entries (10 s / 1 min) become windows; REQUEST_WEIGHT is ignored."""
    lim = OrderLimiter.from_rate_limits(
        [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
         {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
         {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}],
        sleep=asyncio.sleep, new_event=asyncio.Event)
    assert lim.windows == (OrderWindow(300, 10_000), OrderWindow(1200, 60_000))
    with pytest.raises(ValueError, match="malformed ORDERS"):
        OrderLimiter.from_rate_limits([{"rateLimitType": "ORDERS", "interval": "WEEK", "intervalNum": 1,
                                        "limit": 1}], sleep=asyncio.sleep, new_event=asyncio.Event)


def test_real_exchange_info_limits() -> None:
    """The shipped exchangeInfo's ORDERS limits parse (300/10 s and 1200/min where present)."""
    from smc_quant.datasets import load_exchange_info

    try:
        info = load_exchange_info()
    except FileNotFoundError:
        pytest.skip("exchangeInfo not in the data folder")
    lim = OrderLimiter.from_rate_limits(info.get("rateLimits", []), sleep=asyncio.sleep, new_event=asyncio.Event)
    assert OrderWindow(1200, 60_000) in lim.windows


async def test_free_slots_are_taken_without_waiting() -> None:
    """Under the limit, acquire returns at once and nothing counts as throttled."""
    clock = ManualClock()
    lim = limiter(clock)
    for _ in range(3):
        await lim.acquire()
    assert (lim.acquired_total, lim.throttled, lim.count(10_000)) == (3, 0, 3)
    assert lim.wait_ms() == 10_000


async def test_sliding_windows_are_never_exceeded() -> None:
    """20 entries against 3/10 s and 5/min, time advanced in 1 s steps: every window holds ≤ its limit."""
    clock = ManualClock()
    lim = limiter(clock)
    taken: list[int] = []

    async def one() -> None:
        await lim.acquire()
        taken.append(clock.now)

    tasks = [asyncio.create_task(one()) for _ in range(20)]
    await settle()
    for _ in range(400):
        if len(taken) == 20:
            break
        await clock.advance(1_000)
    await asyncio.gather(*tasks)
    assert len(taken) == 20
    for t in taken:
        assert sum(1 for s in taken if t - 10_000 < s <= t) <= 3
        assert sum(1 for s in taken if t - 60_000 < s <= t) <= 5
    # the minute window is the binding one: 5 at t0, then 5 every minute after
    t0 = taken[0]
    assert [t - t0 for t in taken[:6]] == [0, 0, 0, 10_000, 10_000, 60_000]
    assert lim.throttled == 17


async def test_exit_goes_ahead_of_queued_entries() -> None:
    """With entries already queued for a full window, an exit takes the next free slot."""
    clock = ManualClock()
    lim = limiter(clock, OrderWindow(1, 1_000))
    await lim.acquire()
    order: list[str] = []

    async def one(name: str, exit: bool) -> None:
        await lim.acquire(exit=exit)
        order.append(name)

    entries = [asyncio.create_task(one(f"entry{i}", False)) for i in range(3)]
    await settle()
    assert lim.waiting == (0, 3)
    exit_task = asyncio.create_task(one("exit", True))
    await settle()
    assert lim.waiting == (1, 3)
    for _ in range(4):
        await clock.advance(1_000)
    await asyncio.gather(*entries, exit_task)
    assert order == ["exit", "entry0", "entry1", "entry2"]


async def test_observe_adds_what_the_exchange_counted() -> None:
    """X-MBX-ORDER-COUNT-10S above our count fills the window; lower or malformed values change nothing."""
    clock = ManualClock()
    lim = limiter(clock)
    await lim.acquire()
    lim.observe({"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1M": "x"})
    assert lim.count(10_000) == 1 and lim.observed_extra == 0
    lim.observe({"X-MBX-ORDER-COUNT-10S": "3", "X-MBX-ORDER-COUNT-1M": "3"})
    assert lim.count(10_000) == 3 and lim.observed_extra == 2
    assert lim.wait_ms() == 10_000
    lim.observe({"X-MBX-ORDER-COUNT-1M": "9"})
    assert lim.count(60_000) == 9 and lim.wait_ms() == 60_000


async def test_penalty_blocks_until_its_end() -> None:
    """A -1015 with "per MINUTE" blocks a minute; Retry-After wins when given; a waiter resumes after."""
    clock = ManualClock()
    lim = limiter(clock, OrderWindow(300, 10_000), OrderWindow(1200, 60_000))
    until = lim.penalise(message="Too many new orders; current limit is 1200 orders per MINUTE.")
    assert until == clock.now + 60_000 and lim.penalties == 1
    done = asyncio.Event()

    async def one() -> None:
        await lim.acquire(exit=True)
        done.set()

    task = asyncio.create_task(one())
    await clock.advance(59_999)
    assert not done.is_set()
    await clock.advance(1)
    await task
    assert done.is_set() and lim.throttled == 1
    assert lim.penalise(retry_after_s=2.5) == clock.now + 2_500


async def test_penalty_default_is_shortest_window() -> None:
    """A -1015 naming no interval blocks for the shortest window (10 s)."""
    clock = ManualClock()
    lim = limiter(clock, OrderWindow(300, 10_000), OrderWindow(1200, 60_000))
    assert lim.penalise(message="Too many new orders") == clock.now + 10_000
    assert lim.wait_ms() == 10_000


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """A cancelled acquire frees its place: the next waiter gets the slot, nothing leaks."""
    clock = ManualClock()
    lim = limiter(clock, OrderWindow(1, 1_000))
    await lim.acquire()
    first = asyncio.create_task(lim.acquire())
    second = asyncio.create_task(lim.acquire())
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled() and lim.waiting == (0, 1)
    await clock.advance(1_000)
    await second
    assert lim.acquired_total == 2 and lim.waiting == (0, 0)


def test_window_validation() -> None:
    """A window needs a positive limit and interval; a limiter needs a window."""
    with pytest.raises(ValueError, match="positive"):
        OrderWindow(0, 1000)
    with pytest.raises(ValueError, match="at least one"):
        OrderLimiter((), sleep=asyncio.sleep, new_event=asyncio.Event)
