"""ClusterManager: splits the universe into ``SHARD_COUNT`` shards and runs them in this process.

Each shard gets a stable slice of the symbols (:mod:`shards.assignment`), its own feed, queue and
sink; all share the HTTP session, the REST client (and so one weight budget) and the database pool.
Feeds and sinks run under a :class:`Supervisor`: one that dies is logged (``task_crashed``, with its traceback)
and restarted with backoff; crashing more than ``cluster.max_task_restarts`` times within
``cluster.crash_window_s`` it stays down, its shard unhealthy in ``/health`` (``FeedMetrics.down``), and
:attr:`ClusterManager.failure` says why (a shard worker then restarts the slot from PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import aiohttp
import structlog

from shards.analysis import MinuteAnalyzer
from shards.assignment import assign, shard_of
from shards.feed import Backfill, ShardFeed
from shards.sink import CandleSink, CandleWriter
from shards.supervisor import Supervisor
from smc_quant.domain.candles import Candle, interval_ms
from smc_quant.errors import DataRejected
from smc_quant.exchange.schemas import check_candle
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.settings import Settings
from smc_quant.tasks import within


class CandleHistory(CandleWriter, Protocol):
    """What the cluster needs from the candle repository."""

    async def latest(self, symbols: Sequence[str], interval: str, per_symbol: int) -> dict[str, list[Candle]]: ...


MAX_HOLE_REPAIRS = 64
"""Holes of the warm-start window fetched per start, all shards of the process together (the rest: at the next
starts)."""
HOLE_REPAIR_BUDGET_S = 5.0
"""The whole repair of one start at most this long: a worker seeds a slot inside its lease loop (15 s leases), and
the service's trading waits for the seed (a REST that hangs, or holes the exchange never fills, cost no more)."""


@dataclass(slots=True)
class _RepairBudget:
    """What is left of one start's hole repair: its deadline (monotonic seconds) and fetches."""

    deadline: float
    fetches: int


def _valid(candle: Candle) -> bool:
    try:
        check_candle(candle)
    except DataRejected:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Followed:
    """What :meth:`ClusterManager.follow` changed: symbols taken on, no longer counted, counted again."""

    added: tuple[str, ...]
    retired: tuple[str, ...]
    restored: tuple[str, ...]


class ClusterManager:
    """Builds, seeds, runs and drains the shards of one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        symbols: Sequence[str],
        session: aiohttp.ClientSession,
        repository: CandleHistory,
        backfill: Backfill,
        logger: structlog.stdlib.BoundLogger | None = None,
        only: Sequence[int] | None = None,
    ) -> None:
        """``only``: build just these shard indexes of the ``shard_count`` split (a worker's leased slots)."""
        self.settings = settings
        self._repo = repository
        self._backfill = backfill
        self._log = logger or structlog.get_logger()
        feed = settings.feed
        self.assignment = assign(symbols, settings.shard_count)
        self.sinks: list[CandleSink] = []
        self.feeds: list[ShardFeed] = []
        self.analyzers: list[MinuteAnalyzer] = []
        for shard, shard_symbols in enumerate(self.assignment):
            if only is not None and shard not in only:
                continue
            metrics = FeedMetrics(shard=shard)
            log = self._log.bind(shard=shard)
            sink = CandleSink(repository, metrics, flush_interval_s=feed.flush_interval_s,
                              flush_batch=feed.flush_batch, logger=log)
            self.sinks.append(sink)
            shard_feed = ShardFeed(shard=shard, symbols=shard_symbols, session=session,
                                   market_base=settings.venue.ws_market_base, settings=feed, sink=sink,
                                   backfill=backfill, metrics=metrics, logger=log)
            analyzer = MinuteAnalyzer(shard, shard_feed.symbols)
            shard_feed.listeners.append(analyzer.on_candle)
            self.feeds.append(shard_feed)
            self.analyzers.append(analyzer)
        c = settings.cluster
        self._supervisor = Supervisor(max_restarts=c.max_task_restarts, window_s=c.crash_window_s, logger=self._log)

    @property
    def metrics(self) -> list[FeedMetrics]:
        return [f.metrics for f in self.feeds]

    @property
    def failed(self) -> asyncio.Event:
        """Set once a feed or sink crashed too often to be restarted again."""
        return self._supervisor.failed

    @property
    def failure(self) -> str | None:
        """Which task gave up and how often it crashed; ``None`` while every task runs."""
        return self._supervisor.failure

    async def follow(self, listed: Iterable[str]) -> Followed:
        """Keep the running shards on the symbols the exchange lists now (each universe refresh):

        - a symbol new to this process (a new listing) joins at once the shard the assignment gives it — the
          one a restart would give it: its engine rows first, then its stream, subscribed on the shard's open
          socket; its first candle fetches its recent history like any new symbol (``ShardFeed.add``). A
          symbol of a shard this process does not run (a worker's other slots) is left to its owner;
        - one the exchange stopped listing (delisted, settling, halted) stops counting for the shard's
          freshness (``/health``), and the minute's analysis stops waiting for it: its silent stream, which
          stays subscribed, would otherwise hold its shard below the fraction and every minute's batch until
          the grace ran out, until a restart;
        - one listed again counts again."""
        now = set(listed)
        known = {s for feed in self.feeds for s in feed.symbols}
        shards = {feed.shard: (feed, analyzer) for feed, analyzer in zip(self.feeds, self.analyzers, strict=True)}
        joining: dict[int, list[str]] = {}
        for symbol in sorted(now - known):
            joining.setdefault(shard_of(symbol, self.settings.shard_count), []).append(symbol)
        added: list[str] = []
        for shard, symbols in sorted(joining.items()):
            if shard not in shards:
                continue
            feed, analyzer = shards[shard]
            analyzer.add(symbols)  # before the stream: no candle of theirs goes unanalysed
            added += await feed.add(symbols)
            self.assignment[shard] = feed.symbols
        retired: list[str] = []
        restored: list[str] = []
        for feed, analyzer in zip(self.feeds, self.analyzers, strict=True):
            before = set(feed.metrics.symbols)
            feed.metrics.symbols = tuple(s for s in feed.symbols if s in now)
            retired += sorted(before - set(feed.metrics.symbols))
            back = sorted(set(feed.metrics.symbols) - before)
            feed.metrics.joined_mono.update(dict.fromkeys(back, time.monotonic()))  # fresh for a window from now
            restored += back
            analyzer.follow(now)
        return Followed(tuple(sorted(added)), tuple(sorted(retired)), tuple(sorted(restored)))

    def queue_depth(self, shard: int) -> int:
        for feed in self.feeds:
            if feed.shard == shard:
                return feed.queue.qsize()
        return 0

    async def seed(self) -> int:
        """Warm start every shard from PostgreSQL; return the number of candles loaded."""
        loaded = 0
        budget = _RepairBudget(time.monotonic() + HOLE_REPAIR_BUDGET_S, MAX_HOLE_REPAIRS)
        for feed in self.feeds:
            history = await self._repo.latest(feed.symbols, self.settings.feed.interval,
                                              self.settings.feed.warm_start_candles)
            await self._repair_holes(history, budget)
            feed.seed(history)
            loaded += sum(len(v) for v in history.values())
        for feed, analyzer in zip(self.feeds, self.analyzers, strict=True):
            analyzer.warm(feed.store)
        self._log.info("warm_start", candles=loaded, shards=len(self.feeds))
        return loaded

    async def _repair_holes(self, history: dict[str, list[Candle]], budget: _RepairBudget) -> int:
        """Fetch once more the holes inside the warm-start window (``history``, updated in place; the fetched
        candles stored), within the start's ``budget`` (fetches and seconds); how many candles came.

        A gap the feed gave up on (a REST outage longer than its hour of retries) stays a hole in PostgreSQL, and the
        warm start used to read over it at every start for as long as it was in the window: the engine's bars and
        the learner's labels counted across it. A fetch that fails or brings nothing is left for the next start
        (the exchange has no candles for its maintenance windows: those holes stay, a few requests per start)."""
        step = interval_ms(self.settings.feed.interval)
        holes = [(symbol, a.open_time + step, b.open_time - step) for symbol, candles in history.items()
                 for a, b in pairwise(candles) if b.open_time - a.open_time > step]
        found = tried = 0
        for symbol, start, end in holes:
            left = budget.deadline - time.monotonic()
            if budget.fetches <= 0 or left <= 0:
                break
            budget.fetches -= 1
            tried += 1
            try:
                fetched = await within(self._backfill(symbol, self.settings.feed.interval, start, end), left)
                got = [c for c in fetched if c.symbol == symbol and start <= c.open_time <= end and _valid(c)]
                if got:
                    await self._repo.upsert(got)
            except Exception as exc:  # REST or the database unavailable: the warm start goes on, the next tries
                self._log.warning("warm_hole_not_repaired", symbol=symbol, start=start, end=end,
                                  error=f"{type(exc).__name__}: {exc}")
                continue
            if got:
                history[symbol] = sorted([*history[symbol], *got], key=lambda c: c.open_time)
                found += len(got)
        if holes:
            self._log.warning("warm_holes", holes=len(holes), tried=tried, candles_repaired=found)
        return found

    def start(self) -> None:
        """Start every shard's feed and sink as supervised tasks (``shard-N``, ``sink-N``)."""
        for feed, sink in zip(self.feeds, self.sinks, strict=True):
            self._supervisor.spawn(f"shard-{feed.shard}", feed.run)
            self._supervisor.spawn(f"sink-{feed.shard}", sink.run)

    async def stop(self, drain_timeout_s: float | None = None) -> int:
        """Stop intake, then drain: cancel sockets/workers and the gap fetches in flight, process what is
        queued, flush to PostgreSQL.

        The flush gets ``drain_timeout_s`` (default: a fifth of ``cluster.shutdown_timeout_s``, the rest is the
        trading side's: its exits and entries under way come first, missing candles are backfilled); candles still
        unwritten then — PostgreSQL down or blocked — are logged as ``candles_unsaved`` and returned: the
        next start finds those minutes missing after its warm start and backfills them over REST.
        """
        await self._supervisor.stop()
        cancelled = sum(await asyncio.gather(*(feed.stop_backfills() for feed in self.feeds)))
        if cancelled:
            self._log.warning("backfills_cancelled", gaps=cancelled, recovery="fetched again at the next start")
        for feed in self.feeds:
            feed.drain()
        for analyzer in self.analyzers:
            analyzer.flush()
        budget = self.settings.cluster.shutdown_timeout_s / 5 if drain_timeout_s is None else drain_timeout_s
        unsaved = sum(await asyncio.gather(*(sink.drain(budget) for sink in self.sinks)))
        if unsaved:
            self._log.error("candles_unsaved", candles=unsaved, seconds=budget,
                            recovery="backfilled over REST at the next start")
        return unsaved

    async def wait_until(self, open_time: int) -> None:
        """Return once every shard accepted the candle with ``open_time`` for all its symbols."""
        await asyncio.gather(*(f.wait_until(open_time) for f in self.feeds))

    async def wait_subscribed(self) -> None:
        """Return once every connection of every shard is subscribed."""
        await asyncio.gather(*(f.wait_subscribed() for f in self.feeds))

    async def wait_persisted(self) -> None:
        """Return once every sink has nothing pending."""
        await asyncio.gather(*(s.wait_idle() for s in self.sinks))

    def interval_ms(self) -> int:
        return interval_ms(self.settings.feed.interval)
