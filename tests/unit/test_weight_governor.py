"""WeightGovernor on a fake clock: budget, headroom, header folding, 429/418 deadlines."""

from __future__ import annotations

import asyncio

import pytest

from smc_quant.errors import RateLimited
from smc_quant.exchange.governor import WeightGovernor

T0 = 1_700_000_020_000  # 40 s into a minute


class FakeClock:
    """Epoch-ms clock whose sleep advances time instantly and records each wait."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now_ms

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ms += round(seconds * 1000)
        await asyncio.sleep(0)  # a real sleep lets other tasks run; so does this one


def make(limit: int = 100, headroom: float = 0.10) -> tuple[WeightGovernor, FakeClock]:
    clock = FakeClock()
    return WeightGovernor(limit, headroom, clock=clock, sleep=clock.sleep), clock


async def test_acquires_within_budget_without_waiting() -> None:
    """Weight up to limit minus headroom is granted at once and counted."""
    gov, clock = make()
    for _ in range(9):
        await gov.acquire(10)
    assert gov.budget == 90
    assert gov.used_weight == 90
    assert clock.sleeps == []
    assert gov.throttled == 0


async def test_waits_for_the_next_minute_when_the_budget_is_spent() -> None:
    """A request that would eat into the headroom waits until the minute boundary, then starts afresh."""
    gov, clock = make()
    await gov.acquire(85)
    await gov.acquire(10)
    assert clock.sleeps == [20.0]
    assert clock.now_ms == T0 + 20_000
    assert gov.used_weight == 10
    assert gov.throttled == 1
    assert gov.acquired_total == 95


async def test_header_raises_usage_seen_by_the_exchange() -> None:
    """X-MBX-USED-WEIGHT-1M above our own count (other clients on the IP) reduces what is left."""
    gov, clock = make()
    await gov.acquire(5)
    gov.observe(88, sent_at_ms=clock())
    assert gov.used_weight == 88
    await gov.acquire(5)
    assert clock.sleeps == [20.0]


async def test_header_from_a_previous_minute_is_ignored() -> None:
    """A late response sent in the previous minute does not charge the new minute."""
    gov, clock = make()
    sent = clock()
    clock.now_ms += 30_000
    gov.observe(80, sent_at_ms=sent)
    assert gov.used_weight == 0


async def test_429_with_retry_after_blocks_every_caller_until_the_deadline() -> None:
    """After a 429 no acquire returns before Retry-After has passed (so no 418 can follow)."""
    gov, clock = make()
    deadline = gov.penalise(429, 7.0, '{"code":-1003,"msg":"Too many requests"}')
    assert deadline == T0 + 7_000
    await asyncio.gather(gov.acquire(1), gov.acquire(1))
    assert clock.now_ms >= deadline
    assert gov.rate_limited_429 == 1
    assert gov.throttled == 2


async def test_429_without_retry_after_waits_for_the_next_minute() -> None:
    """Without Retry-After the penalty lasts until the next minute boundary."""
    gov, clock = make()
    assert gov.penalise(429, None, "") == T0 + 20_000
    await gov.acquire(1)
    assert clock.now_ms == T0 + 20_000


async def test_418_uses_the_banned_until_time_from_the_body() -> None:
    """A 418 body's "banned until <ms>" sets the deadline, even beyond the next minute."""
    gov, clock = make()
    until = T0 + 125_000
    body = f'{{"code":-1003,"msg":"Way too many requests; IP(***) banned until {until}."}}'
    assert gov.penalise(418, None, body) == until
    await gov.acquire(1)
    assert clock.now_ms == until
    assert gov.banned_418 == 1


async def test_418_takes_the_later_of_body_and_retry_after() -> None:
    """When both a ban time and Retry-After are given, the later deadline wins."""
    gov, _ = make()
    assert gov.penalise(418, 300.0, f"banned until {T0 + 1000}") == T0 + 300_000


async def test_a_shorter_penalty_never_shortens_a_running_one() -> None:
    """A second, shorter penalty keeps the earlier, later deadline."""
    gov, _ = make()
    gov.penalise(418, 120.0, "")
    assert gov.penalise(429, 1.0, "") == T0 + 120_000


async def test_a_penalty_longer_than_max_wait_raises_instead_of_waiting() -> None:
    """acquire(max_wait_s=…) refuses at once during a long ban, and waits out a short penalty."""
    gov, clock = make()
    gov.penalise(418, None, f"banned until {T0 + 3_600_000}")
    with pytest.raises(RateLimited) as caught:
        await gov.acquire(1, max_wait_s=90)
    assert (caught.value.status, caught.value.retry_at_ms) == (418, T0 + 3_600_000)
    assert clock.sleeps == []
    clock.now_ms = T0 + 3_600_000 - 5_000
    await gov.acquire(1, max_wait_s=90)
    assert clock.now_ms == T0 + 3_600_000


async def test_a_ban_that_comes_while_a_caller_waits_is_refused_not_slept_through() -> None:
    """A caller waiting for the next minute (or queued behind one) when a 418 ban of an hour arrives: it is
    refused at once with the ban's deadline, like a caller arriving during the ban — not held for the hour."""
    gov, clock = make()
    await gov.acquire(85)
    waiting = asyncio.create_task(gov.acquire(10, max_wait_s=90))
    queued = asyncio.create_task(gov.acquire(1, max_wait_s=90))
    await asyncio.sleep(0)  # the first is in its minute wait, the second queued behind it
    assert clock.sleeps == [20.0]
    gov.penalise(418, None, f"banned until {T0 + 3_600_000}")
    for task in (waiting, queued):
        with pytest.raises(RateLimited) as caught:
            await task
        assert caught.value.retry_at_ms == T0 + 3_600_000
    assert clock.sleeps == [20.0]


async def test_set_limit_follows_exchange_info() -> None:
    """The limit read from rateLimits changes the budget."""
    gov, _ = make()
    gov.set_limit(2400)
    assert gov.budget == 2160


async def test_a_weight_above_the_budget_is_a_bug() -> None:
    """Asking for more than one minute's budget can never succeed and fails at once."""
    gov, _ = make()
    with pytest.raises(ValueError, match="outside"):
        await gov.acquire(91)



class SilentRedis:
    """A loopback server that accepts connections, reads what the client sends and never answers: a Redis that
    hangs (a long fork, a partition without RST). ``accepted`` gets one item per connection."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[int] = asyncio.Queue()
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SilentRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted.put_nowait(len(self._writers))
        while await reader.read(65536):  # read everything, answer nothing, until the client hangs up
            pass

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()


async def test_a_hung_shared_redis_never_holds_up_weighted_requests() -> None:
    """The cluster-wide budget's Redis accepts the connection and never answers (a client with no socket timeout,
    as `run`'s was): concurrent acquires each wait at most the short cap, in parallel — not forever, one after the
    other behind the governor's lock; the breaker then keeps Redis out of the path (local accounting only) for
    30 s of the governor's clock, after which the shared budget is tried again."""
    import redis.asyncio as aioredis
    from structlog.testing import capture_logs

    from smc_quant.exchange.governor import SharedWeightBudget

    async with SilentRedis() as server:
        client = aioredis.from_url(server.url)
        clock = FakeClock()
        gov = WeightGovernor(100, 0.0, clock=clock, sleep=clock.sleep,
                             shared=SharedWeightBudget(client, lambda minute: f"w:{minute}"))
        try:
            with capture_logs() as logs:
                await asyncio.wait_for(asyncio.gather(*(gov.acquire(5) for _ in range(3))), 5)
            assert [await asyncio.wait_for(server.accepted.get(), 5) for _ in range(3)] == [1, 2, 3]  # in parallel
            assert gov.used_weight == 15 and clock.sleeps == [] and gov.throttled == 0
            assert gov.shared_failures == 3 and gov.shared_skipped == 0
            [trip] = [e for e in logs if e["event"] == "rest_weight_shared_unavailable"]  # one line per trip
            assert trip["local_only_s"] == 30.0
            # the breaker is open: no Redis call at all, no wait
            await asyncio.wait_for(asyncio.gather(*(gov.acquire(5) for _ in range(3))), 5)
            assert gov.shared_skipped == 3 and gov.used_weight == 30 and server.accepted.empty()
            clock.now_ms += 30_000  # the pause is over (a new minute too): Redis is asked again, and fails again
            await asyncio.wait_for(gov.acquire(5), 5)
            assert await asyncio.wait_for(server.accepted.get(), 5) == 4
            assert gov.shared_failures == 4 and gov.shared_skipped == 3 and gov.used_weight == 5
        finally:
            await gov.close()
            await client.aclose()
