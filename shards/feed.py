"""ShardFeed: one shard's symbols from WebSocket frames to the candle store and PostgreSQL.

Sockets (:class:`StreamConnection`, ≤ 200 streams each) put frames on one bounded queue; worker tasks
drain it synchronously: parse and firewall each frame, keep only final candles, check continuity per
symbol, and hand accepted candles to the :class:`CandleStore` (in memory) and the :class:`CandleSink`
(PostgreSQL). A gap pauses that symbol (later candles are held) while a budgeted REST backfill fetches
the missing bars; then everything is released in order.

Failure policy, so one fault never freezes a symbol or silences the shard:

- a backfill retries failures with the reconnect backoff (an unexpected one is logged as an error and counted in
  ``backfill_unexpected``) for ``backfill_attempts`` fetches, and gives up at once on a refusal by the exchange
  (``VenueRejected``: the same request would be refused again). Given up, the held candles are released and the
  gap stays missing, counted (``backfills_abandoned``, ``gaps_unfilled``) and logged as ``backfill_abandoned``;
- backfilled candles pass the same value firewall as streamed ones (``check_candle``, counted by reason);
- a listener that raises is logged (``listener_failed``) and counted; the candle still reaches the others;
- anything else that kills :meth:`ShardFeed.run` is recorded in ``metrics.down`` (``/health`` fails on it) and
  re-raised for the supervisor (``ClusterManager``) to log and restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aiohttp
import structlog

from shards.backoff import BackoffFactory, exponential_backoff
from shards.connection import Frame, StreamConnection
from shards.sink import CandleSink
from shards.supervisor import callable_name, describe_error, traceback_tail
from smc_quant.domain.candle_store import CandleStore
from smc_quant.domain.candles import Candle, interval_ms
from smc_quant.domain.continuity import ACCEPTED, Continuity, Gap, Verdict
from smc_quant.errors import DataRejected, TemporaryError, VenueRejected
from smc_quant.exchange.schemas import KlineUpdate, check_candle, parse_frame
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.settings import FeedSettings

Backfill = Callable[[str, str, int, int], Awaitable[list[Candle]]]
"""``(symbol, interval, start_ms, end_ms) -> closed candles`` — the REST /klines fetcher."""
CandleListener = Callable[[Candle, list[Candle]], None]
"""Called for each accepted 1m candle with the higher-timeframe bars it completed."""
TRANSIENT = (TemporaryError, aiohttp.ClientError, OSError, TimeoutError)
"""Backfill failures expected from the network and the exchange (retried with a warning)."""
_clock_ns = time.perf_counter_ns
_monotonic = time.monotonic


class ShardFeed:
    """Runs one shard: connections, workers, backfills and the sink, until cancelled."""

    def __init__(
        self,
        *,
        shard: int,
        symbols: Sequence[str],
        session: aiohttp.ClientSession,
        market_base: str,
        settings: FeedSettings,
        sink: CandleSink,
        backfill: Backfill,
        metrics: FeedMetrics | None = None,
        backoff: BackoffFactory | None = None,
        logger: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.shard = shard
        self.symbols = tuple(sorted(symbols))
        self.settings = settings
        self.metrics = metrics or FeedMetrics(shard=shard)
        self.metrics.symbols = self.symbols
        self.store = CandleStore(self.symbols, settings.ring_size)
        self.continuity = Continuity(interval_ms(settings.interval), settings.bootstrap_candles)
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=settings.queue_size)
        self.listeners: list[CandleListener] = []
        self._session = session
        self._market_base = market_base
        self._sink = sink
        self._backfill = backfill
        self._backoff = backoff or (lambda: exponential_backoff(settings.backoff_initial_s, settings.backoff_max_s))
        self._log = logger or structlog.get_logger().bind(shard=shard)
        self._known = frozenset(self.symbols)
        self._interval = settings.interval
        self._backfills: set[asyncio.Task[None]] = set()
        self._stopping = False
        """Set by :meth:`stop_backfills`: no gap starts a fetch any more."""
        self._backfill_slots = asyncio.Semaphore(8)
        self._waiters: list[tuple[int, set[str], asyncio.Future[None]]] = []
        self._group: asyncio.TaskGroup | None = None
        self.connections: list[StreamConnection] = []
        for chunk in self._chunks(self._stream(s) for s in self.symbols):
            self._connect(chunk)

    def _stream(self, symbol: str) -> str:
        return f"{symbol.lower()}@kline_{self._interval}"

    def _chunks(self, streams: Iterable[str]) -> list[list[str]]:
        listed, size = list(streams), self.settings.streams_per_connection
        return [listed[i : i + size] for i in range(0, len(listed), size)]

    def _connect(self, streams: Sequence[str]) -> StreamConnection:
        """A connection for ``streams``; started now if the shard runs (else by :meth:`run`)."""
        conn = StreamConnection(session=self._session, base_url=self._market_base, streams=streams, queue=self.queue,
                                metrics=self.metrics, settings=self.settings, backoff=self._backoff,
                                logger=self._log.bind(conn=len(self.connections)))
        self.connections.append(conn)
        if self._group is not None:
            self._group.create_task(conn.run())
        return conn

    async def add(self, symbols: Iterable[str]) -> list[str]:
        """Take symbols new to the shard while it runs (a new listing), as if they had been there from the start:
        stored, checked for continuity (their first candle fetches ``bootstrap_candles`` of history first),
        handed to the listeners and counted for freshness. Their streams go on the last connection while it
        has room — subscribed on its open socket — and on new connections beyond. Returns those added."""
        new = sorted(set(symbols) - self._known)
        if not new:
            return []
        joined = _monotonic()
        self.metrics.joined_mono.update(dict.fromkeys(new, joined))  # fresh for one window from now
        self.symbols = tuple(sorted(self.symbols + tuple(new)))
        self._known = frozenset(self.symbols)
        self.metrics.symbols = tuple(sorted(set(self.metrics.symbols) | set(new)))
        streams = [self._stream(s) for s in new]
        last = self.connections[-1] if self.connections else None
        room = self.settings.streams_per_connection - len(last.streams) if last is not None else 0
        if last is not None and room > 0:
            await last.add(streams[:room])
            streams = streams[room:]
        for chunk in self._chunks(streams):
            self._connect(chunk)
        self._log.warning("symbols_added", symbols=new, connections=len(self.connections))
        return new

    def seed(self, history: dict[str, list[Candle]]) -> None:
        """Warm start: load each symbol's stored candles into the store and the continuity check."""
        for symbol, candles in history.items():
            if symbol not in self._known:
                continue
            for c in candles:
                self.store.add(c)
            if candles:
                self.continuity.seed(symbol, candles[-1].open_time)
                self.metrics.last_open_time[symbol] = candles[-1].open_time

    async def run(self) -> None:
        """Run sockets and workers until cancelled; a crash is recorded in ``metrics.down`` and re-raised."""
        self._log.info("shard_start", symbols=len(self.symbols), connections=len(self.connections))
        started = _monotonic()
        for symbol in self.symbols:  # a slot started late, a restart after a crash: fresh from their first run
            self.metrics.joined_mono.setdefault(symbol, started)
        self.metrics.down = None
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for conn in self.connections:
                    group.create_task(conn.run())
                for _ in range(self.settings.workers):
                    group.create_task(self._work())
        except Exception as exc:
            self.metrics.feed_crashes += 1
            self.metrics.down = describe_error(exc)
            raise
        finally:
            self._group = None

    async def _work(self) -> None:
        queue = self.queue
        get, handle = queue.get_nowait, self._handle
        while True:
            handle(await queue.get())
            while queue.qsize():
                handle(get())

    @property
    def backfills_in_flight(self) -> tuple[asyncio.Task[None], ...]:
        """The gap fetches running now (a snapshot)."""
        return tuple(self._backfills)

    async def stop_backfills(self) -> int:
        """Cancel the gap fetches in flight and wait for them (shutdown: before the HTTP session closes,
        which would otherwise fail each one with an unretrieved error); how many there were. The candles
        they held stay unreleased and unsaved: the next start sees the same gap and fetches it again. From here on
        no gap starts a fetch (the shutdown's drain may find one in a queued candle: it too is held, and fetched by
        the next start — a fetch started then ran on, unowned, into a drained sink and a closing session)."""
        self._stopping = True
        tasks = tuple(self._backfills)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def drain(self) -> None:
        """Process every frame still queued (shutdown: stop intake first, then drain)."""
        while not self.queue.empty():
            self._handle(self.queue.get_nowait())

    def _handle(self, item: Frame) -> None:
        recv_ns, raw = item
        try:
            update = parse_frame(raw)
        except DataRejected as exc:
            self.metrics.reject(exc.reason)
            return
        if not (isinstance(update, KlineUpdate) and update.final):
            return
        metrics = self.metrics
        metrics.finals += 1
        candle = update.candle
        if candle.symbol not in self._known:
            metrics.reject("unknown_symbol")
            return
        if candle.interval != self._interval:
            metrics.reject("wrong_interval")
            return
        offered = self.continuity.offer(candle)
        if offered is ACCEPTED:
            self._accept(candle, recv_ns)
            return
        verdict, gap = offered
        if verdict is Verdict.ACCEPT:
            self._accept(candle, recv_ns)
        elif verdict is Verdict.GAP:
            assert gap is not None
            self._start_backfill(gap)
        elif verdict is not Verdict.HELD:
            metrics.reject(verdict.value)

    def _accept(self, candle: Candle, recv_ns: int | None = None) -> None:
        completed = self.store.add(candle)
        m = self.metrics
        if recv_ns is not None:
            m.latency_ns.append(_clock_ns() - recv_ns)
        self._sink.add(candle)
        m.accepted += 1
        symbol = candle.symbol
        m.last_final_mono[symbol] = _monotonic()
        m.last_open_time[symbol] = candle.open_time
        for listener in self.listeners:
            try:
                listener(candle, completed)
            except Exception as exc:  # one listener's failure must neither stop the shard nor starve the others
                self._listener_failed(listener, candle, exc)
        if self._waiters:
            self._progress(symbol, candle.open_time)

    def _listener_failed(self, listener: CandleListener, candle: Candle, exc: Exception) -> None:
        self.metrics.listener_errors += 1
        self._log.error("listener_failed", listener=callable_name(listener), symbol=candle.symbol,
                        open_time=candle.open_time, error=describe_error(exc), traceback=traceback_tail(exc, 2000))

    def _start_backfill(self, gap: Gap) -> None:
        self.metrics.gaps_detected += 1
        if self._stopping:
            return
        task = asyncio.create_task(self._run_backfill(gap), name=f"backfill-{gap.symbol}")
        self._backfills.add(task)
        task.add_done_callback(self._backfill_done)

    def _backfill_done(self, task: asyncio.Task[None]) -> None:
        self._backfills.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:  # past every guard: never unretrieved
            self.metrics.backfill_unexpected += 1
            self._log.error("backfill_crashed", task=task.get_name(), error=describe_error(exc),
                            traceback=traceback_tail(exc))

    async def _run_backfill(self, gap: Gap) -> None:
        fetched = await self._fetch_gap(gap)
        if fetched is None:  # given up: release what is held, the gap stays missing
            fetched = []
            self.metrics.backfills_abandoned += 1
        fetched = self._firewall(fetched)
        done = self.continuity.complete(gap.symbol, fetched, gap.end_ms)
        ordered, missing = done.released, done.missing
        self.metrics.gaps_unfilled += missing
        wanted = {c.open_time for c in fetched}
        for candle in ordered:
            if candle.open_time in wanted:
                self.metrics.candles_backfilled += 1
            self._accept(candle)
        self._log.debug("gap_filled", symbol=gap.symbol, start=gap.start_ms, end=gap.end_ms,
                       fetched=len(fetched), unfilled=missing)
        if done.gap is not None:  # a final lost while this gap was fetched: fetch it, the later ones stay held
            self._start_backfill(done.gap)

    async def _fetch_gap(self, gap: Gap) -> list[Candle] | None:
        """The gap's candles, or ``None`` once given up (see the module docstring). A backfill slot is held per
        fetch, not while waiting to retry, so a failing gap does not hold up the others."""
        delays = self._backoff()
        attempts = self.settings.backfill_attempts
        for attempt in range(1, attempts + 1):
            try:
                async with self._backfill_slots:
                    return await self._backfill(gap.symbol, self._interval, gap.start_ms, gap.end_ms)
            except VenueRejected as exc:
                self.metrics.backfill_errors += 1
                self._abandon(gap, attempt, exc)
                return None
            except TRANSIENT as exc:
                self.metrics.backfill_errors += 1
                failure: Exception = exc
                self._log.warning("backfill_retry", symbol=gap.symbol, attempt=attempt, error=repr(exc))
            except Exception as exc:  # a bug, an answer nobody expected: loud, but retried like the others
                self.metrics.backfill_errors += 1
                self.metrics.backfill_unexpected += 1
                failure = exc
                self._log.error("backfill_failed", symbol=gap.symbol, start=gap.start_ms, end=gap.end_ms,
                                attempt=attempt, error=describe_error(exc), traceback=traceback_tail(exc, 2000))
            if attempt < attempts:
                await asyncio.sleep(next(delays))
        self._abandon(gap, attempts, failure)
        return None

    def _abandon(self, gap: Gap, attempts: int, exc: Exception) -> None:
        self._log.error("backfill_abandoned", symbol=gap.symbol, start=gap.start_ms, end=gap.end_ms,
                        minutes=gap.count(self.continuity.interval_ms), attempts=attempts, error=describe_error(exc),
                        held=self.continuity.held_count(gap.symbol), recovery="held candles released, gap left missing")

    def _firewall(self, candles: list[Candle]) -> list[Candle]:
        """The backfilled candles that pass the stream's value checks; the others are counted by reason."""
        clean = []
        for candle in candles:
            try:
                check_candle(candle)
            except DataRejected as exc:
                self.metrics.reject(exc.reason)
                continue
            clean.append(candle)
        return clean

    def _progress(self, symbol: str, open_time: int) -> None:
        finished = False
        for target, pending, _ in self._waiters:
            if open_time >= target and symbol in pending:
                pending.discard(symbol)
                finished = finished or not pending
        if finished:
            keep = []
            for waiter in self._waiters:
                if waiter[1]:
                    keep.append(waiter)
                elif not waiter[2].done():
                    waiter[2].set_result(None)
            self._waiters = keep

    async def wait_subscribed(self) -> None:
        """Return once every connection of this shard has its subscriptions acknowledged."""
        await asyncio.gather(*(c.subscribed.wait() for c in self.connections))

    async def wait_until(self, open_time: int) -> None:
        """Return once every symbol has accepted its candle with ``open_time`` (or a later one)."""
        pending = {s for s in self.symbols if self.metrics.last_open_time.get(s, -1) < open_time}
        if not pending:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((open_time, pending, fut))
        await fut
