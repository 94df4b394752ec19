"""The funding-rate feed: one ``!markPrice@arr`` stream on the ``/market`` route into a :class:`FundingBook`.

One socket per executor (not per shard): the stream lists every symbol every 3 s, so the risk manager knows
each symbol's rate and next funding time without REST polling. The connection (reconnects with backoff,
watchdog, paced SUBSCRIBE, 2026 route check) is the shards' :class:`~shards.connection.StreamConnection`;
this module adds the consumer: parse each frame (a bad item is counted by reason and dropped, the others
are kept) and merge its quotes. When it is down, quotes go stale and the guard stops applying — trading never
waits on it (``executor_funding_unknown`` counts the signals judged without a quote).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog

from shards.backoff import exponential_backoff
from shards.connection import Frame, StreamConnection, market_route
from smc_quant.errors import DataRejected
from smc_quant.funding import FundingBook, parse_mark_prices
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.settings import FeedSettings
from smc_quant.tasks import cancel_and_wait

STREAM = "!markPrice@arr"
QUEUE_SIZE = 64


class FundingFeed:
    """Runs the stream and its consumer until :meth:`stop`; quotes land in ``book``."""

    def __init__(self, *, session: aiohttp.ClientSession, ws_market_base: str, book: FundingBook,
                 settings: FeedSettings, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.book = book
        self.metrics = FeedMetrics(shard=-1)
        self.updates = 0
        self._log = (logger or structlog.get_logger()).bind(component="funding_feed")
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(QUEUE_SIZE)
        self.connection = StreamConnection(
            session=session, base_url=market_route(ws_market_base), streams=[STREAM], queue=self._queue,
            metrics=self.metrics, settings=settings,
            backoff=lambda: exponential_backoff(settings.backoff_initial_s, settings.backoff_max_s),
            logger=self._log)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_quotes: float | None = None
        self.quoted = asyncio.Event()
        """Set once the first frame's quotes are in the book."""

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.connection.run(), name="funding-stream"),
                       asyncio.create_task(self._consume(), name="funding-consumer")]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _consume(self) -> None:
        while True:
            _, frame = await self._queue.get()
            try:
                quotes, rejected = parse_mark_prices(frame)
            except DataRejected as bad_frame:
                rejected, quotes = [bad_frame], []
            for item in rejected:
                self.metrics.reject(item.reason)
                seen = self.metrics.rejected[item.reason]
                if seen == 1 or seen % 1000 == 0:  # a persistent fault pushes every 3 s: log it, not flood
                    self._log.warning("funding_item_rejected", reason=item.reason, error=str(item), count=seen)
            self.updates += self.book.update(quotes)
            if quotes:
                self._last_quotes = time.monotonic()
                self.quoted.set()

    def metrics_dict(self) -> dict[str, float]:
        """For /metrics: quotes merged, symbols known, seconds since the last quotes arrived (−1: none yet; alert
        when it passes ``funding_max_age_s``: the guard has stopped applying), frames, reconnects, rejections."""
        m = self.metrics
        age = -1.0 if self._last_quotes is None else time.monotonic() - self._last_quotes
        return {"funding_quotes": float(self.updates), "funding_symbols": float(len(self.book)), "funding_age_s": age,
                "funding_frames": float(m.frames), "funding_reconnects": float(m.reconnects),
                "funding_rejected": float(sum(m.rejected.values())), "funding_queue_drops": float(m.queue_drops)}


__all__ = ["STREAM", "FundingFeed"]
