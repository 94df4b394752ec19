"""BinanceRestClient and WeightGovernor against the in-process emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.errors import RateLimited, TemporaryError, VenueRejected
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.rest import BinanceRestClient, ExchangeUnreachable, WeightGovernor

pytestmark = pytest.mark.integration

WALL_T0_MS = 1_700_000_020_000  # a fixed "wall clock", 40 s into a minute, shared by both sides


class FakeClock:
    """Epoch-ms clock whose sleep advances time at once (and yields); records each wait."""

    def __init__(self, now_ms: int = WALL_T0_MS) -> None:
        self.now_ms = now_ms
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now_ms

    def seconds(self) -> float:
        return self.now_ms / 1000.0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ms += round(seconds * 1000)
        await asyncio.sleep(0)


@dataclass
class Setup:
    emu: Emulator
    clock: FakeClock
    session: aiohttp.ClientSession

    def client(self, limit: int = 2400, retries: int = 0, base_url: str | None = None,
               max_wait_s: float = 90.0) -> BinanceRestClient:
        governor = WeightGovernor(limit, 0.10, clock=self.clock, sleep=self.clock.sleep)
        return BinanceRestClient(self.session, base_url or self.emu.rest_url, governor,
                                 retries=retries, backoff=lambda attempt: 0.25, max_wait_s=max_wait_s)


def emulator_config(root: Path, clock: FakeClock, weight_limit: int = 2400) -> EmulatorConfig:
    first = int(read_klines(root / KLINES_2023_1M / "BTCUSDT.csv.gz").open_time[0])
    return EmulatorConfig(data_dir=root, speed=0, symbols=("BTCUSDT", "ETHUSDT"), start_paused=True,
                          start_time_ms=first + 3000 * MINUTE_MS, weight_limit=weight_limit,
                          clock=clock.seconds)


@pytest.fixture
async def setup(shared_data: Path, request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """A paused emulator whose weight windows follow the same fake clock as the governor."""
    clock = FakeClock()
    limit = getattr(request, "param", 2400)
    emu = Emulator(emulator_config(shared_data, clock, limit))
    await emu.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Setup(emu, clock, session)
    finally:
        await emu.stop()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening, so every connection attempt is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_ping_time_and_exchange_info(setup: Setup) -> None:
    """The three plain endpoints answer; server time is the emulator's replay clock."""
    client = setup.client()
    await client.ping()
    assert await client.server_time() == setup.emu.start_ms
    info = await client.exchange_info()
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert client.governor.acquired_total == 3


async def test_klines_are_the_real_candles_with_every_field(setup: Setup) -> None:
    """Rows parse into candles equal, field by field, to the emulator's real candles."""
    client = setup.client()
    start = setup.emu.start_ms - 50 * MINUTE_MS
    got = await client.klines("ETHUSDT", "1m", start_time=start, limit=20)
    assert [c.open_time for c in got] == [start + i * MINUTE_MS for i in range(20)]
    assert got == [setup.emu.market.candle("ETHUSDT", c.open_time) for c in got]
    assert client.governor.acquired_total == 1


async def test_closed_klines_paginates_and_drops_the_open_bar(setup: Setup) -> None:
    """2,500 closed minutes come back in three weight-5 pages, contiguous, without the open bar."""
    client = setup.client()
    start, now = setup.emu.start_ms - 2500 * MINUTE_MS, await client.server_time()
    got = await client.closed_klines("BTCUSDT", "1m", start, setup.emu.start_ms + 10 * MINUTE_MS, now_ms=now)
    assert len(got) == 2500
    assert [c.open_time for c in got] == [start + i * MINUTE_MS for i in range(2500)]
    assert all(c.close_time <= now for c in got)
    assert client.governor.acquired_total == 1 + 3 * 5


async def test_header_usage_of_another_client_is_respected(setup: Setup) -> None:
    """Weight another client on the same IP spent shows up in our governor through the header."""
    other, ours = setup.client(), setup.client()
    for _ in range(10):
        await other.klines("BTCUSDT", "1m", limit=500)
    await ours.ping()
    assert ours.governor.used_weight == 51


@pytest.mark.parametrize("setup", [60], indirect=True)
async def test_governor_waits_for_the_next_minute_and_never_earns_a_429(setup: Setup) -> None:
    """At a 60/min limit, twelve weight-5 requests all succeed: the governor waits instead of overrunning."""
    client = setup.client(limit=60)
    for _ in range(12):
        await client.klines("BTCUSDT", "1m", limit=500)
    assert client.governor.throttled == 1
    assert setup.clock.sleeps == [20.0]
    assert client.governor.rate_limited_429 == 0
    assert "http_429" not in setup.emu.faults.counters


async def test_503_is_temporary_and_retried_for_gets(setup: Setup) -> None:
    """Two 503s then success: a GET with retries gets its answer after two backoffs."""
    setup.emu.faults.http_error(503, 2)
    client = setup.client(retries=2)
    assert await client.server_time() == setup.emu.start_ms
    assert setup.clock.sleeps == [0.25, 0.25]
    setup.emu.faults.http_error(503, 1)
    with pytest.raises(TemporaryError, match="HTTP 503"):
        await setup.client(retries=0).ping()


async def test_a_waf_403_is_temporary_and_retried(setup: Setup) -> None:
    """The WAF's 403 (an HTML page) lifts by itself: retried like a 503, never taken as a refusal — a backfill
    refused (4xx) is given up at once, so a 403 read as one lost the gap for good."""
    setup.emu.faults.http_error(403, 1, path="/fapi/v1/time")
    client = setup.client(retries=1)
    assert await client.server_time() == setup.emu.start_ms
    setup.emu.faults.http_error(403, 1)
    with pytest.raises(TemporaryError, match="HTTP 403"):
        await setup.client(retries=0).ping()


async def test_429_raises_rate_limited_and_blocks_until_retry_after(setup: Setup) -> None:
    """A 429 raises RateLimited with the Retry-After deadline, and the next request waits for it."""
    setup.emu.faults.http_error(429, 1)
    client = setup.client()
    with pytest.raises(RateLimited) as caught:
        await client.ping()
    assert (caught.value.status, caught.value.retry_at_ms) == (429, WALL_T0_MS + 1000)
    await client.ping()
    assert setup.clock.now_ms >= WALL_T0_MS + 1000
    assert client.governor.rate_limited_429 == 1
    assert client.governor.throttled == 1


async def test_418_raises_rate_limited_and_counts_a_ban(setup: Setup) -> None:
    """A 418 is a RateLimited with the body's ban time, counted as a ban; nothing is sent before it."""
    setup.emu.faults.http_error(418, 1)
    client = setup.client(max_wait_s=float("inf"))
    with pytest.raises(RateLimited) as caught:
        await client.ping()
    assert caught.value.status == 418
    assert f"banned until {caught.value.retry_at_ms}" in str(caught.value)
    await client.ping()
    assert setup.clock.now_ms >= caught.value.retry_at_ms
    assert client.governor.banned_418 == 1


async def test_a_ban_longer_than_max_wait_is_reported_without_sending(setup: Setup) -> None:
    """While a ban outlasts max_wait_s, requests fail at once with RateLimited and are never sent."""
    setup.emu.faults.http_error(418, 1)
    client = setup.client(retries=3, max_wait_s=0.5)
    with pytest.raises(RateLimited) as first:
        await client.ping()
    sent = setup.emu.stats["rest_requests"]
    with pytest.raises(RateLimited, match="paused until") as second:
        await client.ping()
    assert second.value.retry_at_ms == first.value.retry_at_ms
    assert second.value.status == 418
    assert setup.emu.stats["rest_requests"] == sent
    assert setup.clock.sleeps == []


async def test_unknown_symbol_is_rejected_without_retry(setup: Setup) -> None:
    """A 400 with code -1121 maps to VenueRejected and is not retried."""
    client = setup.client(retries=3)
    with pytest.raises(VenueRejected) as caught:
        await client.klines("NOPEUSDT", "1m", limit=10)
    assert (caught.value.status, caught.value.code) == (400, -1121)
    assert setup.clock.sleeps == []


async def test_unreachable_exchange_raises_exchange_unreachable(setup: Setup, refused_port: int) -> None:
    """A refused connection becomes ExchangeUnreachable naming the base URL, after the retries."""
    url = f"http://127.0.0.1:{refused_port}"
    client = setup.client(retries=1, base_url=url)
    with pytest.raises(ExchangeUnreachable, match=f"cannot reach the exchange at {url}"):
        await client.ping()
    assert setup.clock.sleeps == [0.25]


async def test_a_garbled_answer_is_a_temporary_error_retried_and_counted(setup: Setup) -> None:
    """A 200 whose body is not JSON (cut short) is a TemporaryError, not a decoder's exception: a GET with retries
    gets its answer after one backoff; without, it fails as temporary. Both are counted."""
    setup.emu.faults.garbled(1)
    client = setup.client(retries=1)
    assert await client.server_time() == setup.emu.start_ms
    assert setup.clock.sleeps == [0.25] and client.unreadable == 1
    setup.emu.faults.garbled(1)
    with pytest.raises(TemporaryError, match="HTTP 200 body is not JSON"):
        await setup.client().ping()


async def test_unreadable_kline_rows_are_dropped_and_counted_and_paging_goes_on(setup: Setup) -> None:
    """Five broken rows in the first of three pages: the three unreadable ones (cut short, a price "abc", a null
    open time) are left out and counted; the two readable ones with impossible values (NaN close, high < low) come
    back for the feed's firewall to judge; the next pages are still fetched."""
    client = setup.client()
    start, now = setup.emu.start_ms - 2500 * MINUTE_MS, await client.server_time()
    setup.emu.faults.malformed_rows(5)
    got = await client.closed_klines("BTCUSDT", "1m", start, setup.emu.start_ms + 10 * MINUTE_MS, now_ms=now)
    lost = [start + i * MINUTE_MS for i in (1, 3, 5)]
    assert [c.open_time for c in got] == [t for t in (start + i * MINUTE_MS for i in range(2500)) if t not in lost]
    assert client.rows_rejected == {"malformed": 3}
    assert math.isnan(got[4].close) and got[6].high < got[6].low  # rows 7 and 9
    assert client.governor.acquired_total == 1 + 3 * 5
