"""Failure paths of the market-data plane that used to freeze a symbol or silence a shard, on real parts (the
emulator over loopback, the REST client, PostgreSQL, the cluster's supervisor):

- a backfill that fails in an unexpected way is retried, one that keeps failing or is refused is given up —
  its held candles released, the symbol flowing again — instead of holding the symbol forever;
- backfilled rows pass the same firewall as streamed candles;
- a feed task that dies is logged and restarted, and one that keeps dying fails ``/health``;
- a symbol's freshness counts from when it joined the running feed (a slot started late, a listing again)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs

from shards.cluster import ClusterManager
from shards.feed import Backfill
from smc_quant.domain.candles import MINUTE_MS, Candle
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.rest import BinanceRestClient
from smc_quant.ops.health import cluster_health
from smc_quant.store.candles import CandleRepository
from tests.integration.cluster_kit import settings_for, stored_candles

pytestmark = pytest.mark.integration
HISTORY = 20
KLINES = "/fapi/v1/klines"


def _emulator(data: Path, *symbols: str) -> Emulator:
    return Emulator(EmulatorConfig(data_dir=data, symbols=symbols or ("BTCUSDT", "ETHUSDT"), speed=120.0,
                                   updates_per_candle=1, history_minutes=60, max_minutes=12, start_paused=True))


@asynccontextmanager
async def running(emu: Emulator, dsn: str, pool: asyncpg.Pool, *, wrap: Callable[[Backfill], Backfill] | None = None,
                  cluster: dict[str, Any] | None = None, **feed: Any) -> AsyncIterator[tuple[ClusterManager,
                                                                                             BinanceRestClient]]:
    """One shard of ``emu``'s symbols run by a ClusterManager, as the service runs it: bootstrap of ``HISTORY``
    bars over the real REST client (no retries of its own: each backfill attempt is one request), ``wrap``
    around that fetch to inject a fault at the seam."""
    async with aiohttp.ClientSession() as session:
        rest = BinanceRestClient(session, emu.rest_url, WeightGovernor(2400, 0.1), retries=0)

        async def fetch(symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
            return await rest.closed_klines(symbol, interval, start_ms, end_ms, now_ms=end_ms + MINUTE_MS)

        settings = settings_for(emu, dsn, shards=1, cluster=cluster, bootstrap_candles=HISTORY, **feed)
        manager = ClusterManager(settings, symbols=emu.symbols, session=session, repository=CandleRepository(pool),
                                 backfill=wrap(fetch) if wrap else fetch)
        await manager.seed()
        manager.start()
        try:
            await manager.wait_subscribed()
            yield manager, rest
        finally:
            await manager.stop()


async def _replay_until(emu: Emulator, cluster: ClusterManager, minute: int) -> None:
    """Replay until every symbol accepted the candle of ``minute`` (from the replay's start), then pause."""
    emu.resume()
    await asyncio.wait_for(cluster.wait_until(emu.start_ms + minute * MINUTE_MS), 30)
    emu.pause()


def _times(cluster: ClusterManager, symbol: str) -> list[int]:
    return [int(t) for t in cluster.feeds[0].store.ring(symbol).arrays()[0]]


async def test_an_unexpected_backfill_error_is_retried_and_the_symbol_flows(shared_data: Path, pg_dsn: str,
                                                                            pool: asyncpg.Pool) -> None:
    """BTCUSDT's first history fetch raises a KeyError (a parsing bug, say): logged as an error with the symbol,
    counted, retried after the backoff; its history and live candles then arrive in order, as ETHUSDT's do. (The
    backfill task used to die of it — "Task exception was never retrieved" — holding BTCUSDT's candles forever.)"""
    calls: Counter[str] = Counter()

    def wrap(fetch: Backfill) -> Backfill:
        async def backfill(symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
            calls[symbol] += 1
            if symbol == "BTCUSDT" and calls[symbol] == 1:
                raise KeyError("k")
            return await fetch(symbol, interval, start_ms, end_ms)
        return backfill

    async with _emulator(shared_data) as emu, running(emu, pg_dsn, pool, wrap=wrap) as (cluster, _):
        with capture_logs() as logs:
            await _replay_until(emu, cluster, 2)
        m = cluster.metrics[0]
        assert (m.backfill_unexpected, m.backfills_abandoned, m.gaps_unfilled) == (1, 0, 0)
        [failed] = [e for e in logs if e["event"] == "backfill_failed"]
        assert (failed["log_level"], failed["symbol"], failed["attempt"], failed["error"]) == (
            "error", "BTCUSDT", 1, "KeyError: 'k'")
        assert calls == {"BTCUSDT": 2, "ETHUSDT": 1}
        for symbol in emu.symbols:
            assert _times(cluster, symbol) == [emu.start_ms + k * MINUTE_MS for k in range(-HISTORY, 3)], symbol


async def test_backfilled_rows_pass_the_firewall(shared_data: Path, pg_dsn: str, pool: asyncpg.Pool) -> None:
    """Five broken rows in the history answer: the three unreadable ones are left out by the REST client, the NaN
    close and the high below its low are rejected by the feed's firewall and counted by reason, like streamed
    candles; the other rows, and the live candles after them, are stored and analysed (the NaN row used to reach
    the store and the analyzer, where it cost the whole minute of every symbol of the shard)."""
    async with _emulator(shared_data, "BTCUSDT") as emu, running(emu, pg_dsn, pool) as (cluster, rest):
        emu.faults.malformed_rows(5)  # rows 1, 3, 5, 7, 9 of the history
        await _replay_until(emu, cluster, 2)
        await cluster.wait_persisted()
        m = cluster.metrics[0]
        assert rest.rows_rejected == {"malformed": 3}
        assert dict(m.rejected) == {"bad_price": 1, "high_below_low": 1}
        lost = {emu.start_ms + (k - HISTORY) * MINUTE_MS for k in (1, 3, 5, 7, 9)}
        wanted = [t for t in (emu.start_ms + k * MINUTE_MS for k in range(-HISTORY, 3)) if t not in lost]
        assert _times(cluster, "BTCUSDT") == wanted and m.gaps_unfilled == 5
        stored = (await stored_candles(pg_dsn))["BTCUSDT"]
        assert [c.open_time for c in stored] == wanted and all(math.isfinite(c.close) for c in stored)
        assert stored == [emu.market.candle("BTCUSDT", t) for t in wanted]
        analysis = cluster.analyzers[0].stats
        assert analysis.candles == len(wanted) and analysis.rejected_candles == analysis.rejected_batches == 0


async def test_a_backfill_that_keeps_failing_is_given_up_and_the_symbol_flows(shared_data: Path, pg_dsn: str,
                                                                              pool: asyncpg.Pool) -> None:
    """/klines answers 503 for good: each symbol's history fetch is tried ``backfill_attempts`` (3) times, then
    given up — one error line each, counted — and its held first live candle is released: the symbols flow from
    the replay's start, without history, instead of never again."""
    async with _emulator(shared_data) as emu, running(emu, pg_dsn, pool, backfill_attempts=3) as (cluster, _):
        emu.faults.http_error(503, count=1_000_000, path=KLINES)
        before = emu.stats["klines_requests"]
        with capture_logs() as logs:
            await _replay_until(emu, cluster, 2)
        m = cluster.metrics[0]
        assert (m.backfills_abandoned, m.backfill_errors, m.backfill_unexpected) == (2, 6, 0)
        assert emu.stats["klines_requests"] - before == 6
        abandoned = sorted((e for e in logs if e["event"] == "backfill_abandoned"), key=lambda e: e["symbol"])
        assert [(e["symbol"], e["log_level"], e["attempts"], e["minutes"]) for e in abandoned] == [
            (s, "error", 3, HISTORY) for s in ("BTCUSDT", "ETHUSDT")]
        assert all("HTTP 503" in e["error"] and e["held"] >= 1 for e in abandoned)
        for symbol in emu.symbols:
            assert _times(cluster, symbol) == [emu.start_ms + k * MINUTE_MS for k in range(3)], symbol


async def test_a_refused_backfill_is_given_up_at_once(shared_data: Path, pg_dsn: str, pool: asyncpg.Pool) -> None:
    """A gap the exchange refuses (400, a VenueRejected: the same request would be refused again) is given up after
    that one request — it used to be retried forever, holding a backfill slot and the symbol's candles — and the
    symbol flows on past the missing minutes, which are counted."""
    async with (_emulator(shared_data) as emu,
                running(emu, pg_dsn, pool, streams_per_connection=1) as (cluster, _)):
        await _replay_until(emu, cluster, 0)
        btc = cluster.feeds[0].connections[0].streams
        assert btc == ("btcusdt@kline_1m",)
        emu.faults.stall(True, streams=btc)
        emu.resume()
        await emu.wait_minutes(4)
        emu.pause()
        emu.faults.stall(False, streams=btc)
        emu.faults.http_error(400, count=1, path=KLINES)
        before = emu.stats["klines_requests"]
        with capture_logs() as logs:
            await _replay_until(emu, cluster, 6)
        m = cluster.metrics[0]
        assert emu.stats["klines_requests"] - before == 1
        [given_up] = [e for e in logs if e["event"] == "backfill_abandoned"]
        assert (given_up["symbol"], given_up["attempts"], given_up["error"]) == (
            "BTCUSDT", 1, "VenueRejected: GET /fapi/v1/klines: HTTP 400 code -1121: Invalid symbol.")
        assert m.backfills_abandoned == 1 and m.gaps_unfilled == given_up["minutes"] > 0
        times = _times(cluster, "BTCUSDT")
        assert times[-1] == emu.start_ms + 6 * MINUTE_MS and times == sorted(set(times))


async def test_freshness_counts_from_when_a_symbol_joined_the_running_feed(shared_data: Path, pg_dsn: str,
                                                                           pool: asyncpg.Pool) -> None:
    """Until its first candle, a symbol is judged fresh from when it joined the running feed: a shard started an hour
    into the process (a worker's slot taken over) is healthy, not stale at once; a symbol listed again is judged
    from its listing again, not from its last candle before it settled."""
    async with _emulator(shared_data) as emu, running(emu, pg_dsn, pool) as (cluster, _):
        m = cluster.metrics[0]

        def health(window_s: float = 90.0, now: float | None = None) -> tuple[bool, dict[str, Any]]:
            at = time.monotonic() if now is None else now
            return cluster_health([m], now=at, started=at - 3600.0, window_s=window_s, fraction=0.99)

        ok, body = health()
        assert ok and body["shards"][0]["fresh"] == 2, "no candle yet, but the feed has just started"
        await _replay_until(emu, cluster, 0)
        await cluster.follow(["BTCUSDT"])  # ETHUSDT settles…
        followed = await cluster.follow(["BTCUSDT", "ETHUSDT"])  # …and is listed again
        assert followed.restored == ("ETHUSDT",)
        now = time.monotonic()
        since_candle, since_listed = now - m.last_final_mono["ETHUSDT"], now - m.joined_mono["ETHUSDT"]
        assert since_listed < since_candle
        _, body = health(window_s=(since_candle + since_listed) / 2, now=now)  # judged from its listing again
        assert body["shards"][0]["fresh"] == 1  # ETHUSDT; BTCUSDT's last candle is as old as ETHUSDT's


async def test_a_dead_feed_is_logged_and_restarted_and_one_that_keeps_dying_fails_health(
        shared_data: Path, pg_dsn: str, pool: asyncpg.Pool) -> None:
    """The feed's task dies (an input its worker cannot handle): the supervisor logs it with the error and restarts
    it, and the symbols flow again (the gap backfilled). Dying again past ``max_task_restarts`` (1), it stays down:
    ``/health`` fails at once naming the shard and why — before, the task died silently and nothing restarted it."""
    async with (_emulator(shared_data) as emu,
                running(emu, pg_dsn, pool, cluster={"max_task_restarts": 1}, workers=1) as (cluster, _)):
        [feed], m = cluster.feeds, cluster.metrics[0]

        def health() -> tuple[bool, dict[str, Any]]:
            return cluster_health([m], now=time.monotonic(), started=time.monotonic(), window_s=90.0, fraction=0.99)

        await _replay_until(emu, cluster, 0)
        with capture_logs() as logs:
            feed.queue.put_nowait((0, None))  # type: ignore[arg-type]  # the worker raises on it
            await _replay_until(emu, cluster, 3)
        assert (m.feed_crashes, m.down, cluster.failure) == (1, None, None)
        [crashed] = [e for e in logs if e["event"] == "task_crashed"]
        assert (crashed["task"], crashed["log_level"]) == ("shard-0", "error")
        assert crashed["error"] == "TypeError: a bytes-like object is required, not 'NoneType'"
        assert [e["task"] for e in logs if e["event"] == "task_restarted"] == ["shard-0"]
        for symbol in emu.symbols:
            assert _times(cluster, symbol) == [emu.start_ms + k * MINUTE_MS for k in range(-HISTORY, 4)], symbol
        assert health()[0]

        with capture_logs() as logs:
            feed.queue.put_nowait((0, None))  # type: ignore[arg-type]
            await asyncio.wait_for(cluster.failed.wait(), 10)
        assert cluster.failure == "task shard-0 crashed 2 times in 300s"
        assert [e["task"] for e in logs if e["event"] == "supervisor_giving_up"] == ["shard-0"]
        ok, body = health()
        assert not ok and body["stale_shards"] == [0]
        assert body["shards"][0]["down"] == "TypeError: a bytes-like object is required, not 'NoneType'"


@pytest.mark.parametrize(("backoff_max_s", "resets"), [(30.0, 0), (0.001, 3)], ids=["cut_soon", "lived"])
async def test_the_reconnect_backoff_starts_over_only_after_a_socket_that_lived(
        shared_data: Path, backoff_max_s: float, resets: int) -> None:
    """The emulator cuts the market socket (1001) right after a frame on it, three times. Sockets that lived
    less than the longest wait keep backing off — the backoff is not started over (it once was after any data
    frame, so an edge that cuts every socket at once was reconnected to every half second); sockets that lived
    longer than it (here 1 ms) start it over each time."""
    from shards.connection import StreamConnection
    from smc_quant.ops.metrics import FeedMetrics
    from smc_quant.settings import FeedSettings

    started: list[int] = []
    reconnecting = asyncio.Event()

    def backoff() -> Iterator[float]:  # each delay is taken once the ended socket was judged: a sync point
        started.append(1)

        def delays() -> Iterator[float]:
            while True:
                reconnecting.set()
                yield 0.01

        return delays()

    emu = _emulator(shared_data, "BTCUSDT")
    await emu.start()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    try:
        async with aiohttp.ClientSession() as session:
            settings = FeedSettings(backoff_initial_s=backoff_max_s, backoff_max_s=backoff_max_s)
            conn = StreamConnection(session=session, base_url=emu.ws_market_base, streams=["btcusdt@kline_1m"],
                                    queue=queue, metrics=FeedMetrics(shard=0), settings=settings, backoff=backoff,
                                    logger=structlog.get_logger())
            task = asyncio.create_task(conn.run())
            emu.resume()
            try:
                for _ in range(3):
                    await asyncio.wait_for(queue.get(), 10)  # a frame on this socket …
                    reconnecting.clear()
                    emu.faults.close_all(1001)  # … and the server cuts it
                    await asyncio.wait_for(reconnecting.wait(), 10)
                    while not queue.empty():  # what the cut socket delivered; nothing more comes from it
                        queue.get_nowait()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await emu.stop()
    assert len(started) == 1 + resets
