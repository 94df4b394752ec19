"""RulesRefresh: an order refused on a stale rule reads exchangeInfo at once; a burst costs one read."""

from __future__ import annotations

import asyncio

from shards.rules_refresh import RulesRefresh


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_read_per_incident_and_again_after_the_interval() -> None:
    clock, gate, reads = Clock(), asyncio.Event(), []

    async def refresh() -> None:
        reads.append(clock.now)
        await gate.wait()

    rules = RulesRefresh(refresh, min_interval_s=30.0, clock=clock)
    assert rules.request(-1111) is True  # the stop's first refusal: a read starts now
    await asyncio.sleep(0)  # let the read task begin (a yield, not a wait)
    assert reads == [1000.0]
    assert rules.request(-1111) is False and rules.request(-4014) is False  # the same incident, read running
    gate.set()
    await rules.idle()
    clock.now += 29.9
    assert rules.request(-1111) is False  # within the interval of the last read's start
    clock.now += 0.1
    assert rules.request(-4023) is True  # later: a new read
    await rules.idle()
    assert reads == [1000.0, 1030.0]
    assert (rules.requests, rules.runs, rules.failures) == (5, 2, 0)
    assert rules.metrics() == {"rules_refresh_requests": 5.0, "rules_refresh_runs": 2.0, "rules_refresh_failures": 0.0}


async def test_a_failed_read_is_counted_and_the_next_request_reads_again() -> None:
    clock = Clock()

    async def refresh() -> None:
        raise ConnectionResetError("exchange gone")

    rules = RulesRefresh(refresh, min_interval_s=30.0, clock=clock)
    assert rules.request(-1111)
    await rules.idle()  # the failure is logged, not raised
    assert rules.failures == 1
    clock.now += 30
    assert rules.request(-1111)
    await rules.idle()
    assert (rules.runs, rules.failures) == (2, 2)


async def test_stop_cancels_a_read_in_flight() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def refresh() -> None:
        started.set()
        await never.wait()

    rules = RulesRefresh(refresh, clock=Clock())
    rules.request(-1121)
    await started.wait()
    await rules.stop()
    await rules.idle()  # returns: nothing runs any more
    assert (rules.runs, rules.failures) == (1, 0)
