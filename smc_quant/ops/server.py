"""The ops HTTP endpoint (aiohttp): ``/health`` (the market data and, where the process trades, the trading side:
``smc_quant.ops.health``), ``/ready`` and ``/metrics`` (Prometheus text).

Nothing here reads settings secrets; bodies carry counters and shard numbers only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from smc_quant.ops.health import TradingState, cluster_health, trading_health
from smc_quant.ops.metrics import FeedMetrics

QueueDepth = Callable[[int], int]


class FeedCollector(Collector):
    """Reads the shards' plain counters at scrape time."""

    def __init__(self, shards: Sequence[FeedMetrics], queue_depth: QueueDepth, extra: Callable[[], dict[str, float]]):
        self._shards = shards
        self._queue_depth = queue_depth
        self._extra = extra

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = {
            "frames": "WebSocket data frames received",
            "finals": "final kline frames seen",
            "accepted": "closed candles accepted into the store",
            "queue_drops": "frames dropped because the shard queue was full",
            "reconnects": "WebSocket reconnects",
            "stalls": "connections recycled for silence",
            "wrong_route_alarms": "silent subscriptions on a non-/market route",
            "gaps_detected": "candle gaps detected",
            "candles_backfilled": "candles fetched over REST to fill gaps",
            "gaps_unfilled": "minutes still missing after backfill",
            "backfill_errors": "failed gap fetches (retried)",
            "backfill_unexpected": "gap fetches that failed in an unexpected way (logged as errors)",
            "backfills_abandoned": "gaps given up: held candles released, the gap left missing",
            "listener_errors": "candle listeners that raised (the other listeners still got the candle)",
            "feed_crashes": "times the shard's feed task died (restarted by its supervisor)",
            "persisted": "candles written to PostgreSQL",
            "persist_errors": "failed PostgreSQL batches (retried)",
        }
        for name, doc in counters.items():
            fam = CounterMetricFamily(f"smc_feed_{name}", doc, labels=["shard"])
            for m in self._shards:
                fam.add_metric([str(m.shard)], getattr(m, name))
            yield fam
        rejected = CounterMetricFamily("smc_feed_rejected", "inputs rejected, by reason", labels=["shard", "reason"])
        depth = GaugeMetricFamily("smc_feed_queue_depth", "frames waiting in the shard queue", labels=["shard"])
        lag = GaugeMetricFamily("smc_feed_lag_seconds", "age of the stalest current symbol's last final candle",
                                labels=["shard"])
        now = time.monotonic()
        for m in self._shards:
            for reason, n in m.rejected.items():
                rejected.add_metric([str(m.shard), reason], n)
            depth.add_metric([str(m.shard)], self._queue_depth(m.shard))
            lag.add_metric([str(m.shard)], m.lag_s(now))  # the shard's current symbols only
        yield from (rejected, depth, lag)
        for name, value in self._extra().items():
            yield GaugeMetricFamily(f"smc_{name}", name.replace("_", " "), value=value)


class OpsServer:
    """Serves the three ops routes for a set of shards."""

    def __init__(
        self,
        shards: Sequence[FeedMetrics],
        *,
        window_s: float,
        fraction: float,
        queue_depth: QueueDepth,
        ready: Callable[[], bool],
        extra: Callable[[], dict[str, float]] = dict,
        trading: Callable[[], TradingState | None] = lambda: None,
    ) -> None:
        self._shards = shards
        self._trading = trading
        self._window_s = window_s
        self._fraction = fraction
        self._ready = ready
        self._started = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FeedCollector(shards, queue_depth, extra))
        self.app = web.Application()
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/ready", self._ready_route)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def health(self, now: float | None = None) -> tuple[bool, dict[str, object]]:
        """The ``/health`` verdict and body at monotonic ``now``: the shards' freshness (``stale``) and, where this
        process trades, the trading verdict (``impaired``); either one → 503."""
        now = time.monotonic() if now is None else now
        ok, body = cluster_health(self._shards, now=now, started=self._started, window_s=self._window_s,
                                  fraction=self._fraction)
        state = self._trading()
        if state is not None:
            trading_ok, body["trading"] = trading_health(state, now=now, started=self._started)
            if ok and not trading_ok:
                body["status"] = "impaired"
            ok = ok and trading_ok
        return ok, body

    async def _health(self, _: web.Request) -> web.Response:
        ok, body = self.health()
        return web.json_response(body, status=200 if ok else 503)

    async def _ready_route(self, _: web.Request) -> web.Response:
        ok = self._ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
