"""Plain per-shard counters, cheap on the hot path, exported to Prometheus only at scrape time."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class FeedMetrics:
    """Everything one shard counts. Mutated only by the shard's own tasks (one event loop)."""

    shard: int
    symbols: tuple[str, ...] = ()
    frames: int = 0
    finals: int = 0
    accepted: int = 0
    queue_drops: int = 0
    queue_depth_max: int = 0
    reconnects: int = 0
    connections_open: int = 0
    stalls: int = 0
    wrong_route_alarms: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    gaps_detected: int = 0
    candles_backfilled: int = 0
    gaps_unfilled: int = 0
    backfill_errors: int = 0
    """Failed gap fetches (each retried with backoff)."""
    backfill_unexpected: int = 0
    """Among them, failures of no expected kind (a bug, an unreadable answer): logged as errors."""
    backfills_abandoned: int = 0
    """Gaps given up (refused by the exchange, or still failing after ``backfill_attempts``): their held candles
    were released, the gap stays missing."""
    listener_errors: int = 0
    """Candle listeners (analysis, trading) that raised; the candle still reached the others."""
    feed_crashes: int = 0
    """Times the shard's feed task died (restarted by the supervisor)."""
    down: str | None = None
    """Why the shard's feed is not running (its last crash), ``None`` while it runs; ``/health`` fails on it."""
    persisted: int = 0
    persist_errors: int = 0
    last_final_mono: dict[str, float] = field(default_factory=dict)
    """Monotonic time at which each symbol's latest accepted final candle arrived."""
    last_open_time: dict[str, int] = field(default_factory=dict)
    """Open time (ms) of each symbol's latest accepted candle."""
    joined_mono: dict[str, float] = field(default_factory=dict)
    """Monotonic time at which each symbol joined the running feed (its start, a new listing, a listing again):
    a symbol with no candle since is judged fresh from then (``smc_quant.ops.health``)."""
    latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=200_000))
    """Frame received → candle in the store, for the latest accepted candles."""

    def lag_s(self, now: float) -> float:
        """Seconds at monotonic ``now`` since the stalest current symbol's last final candle (0 before the first):
        the shard's lag for ``/metrics`` and the heartbeat. Over ``symbols`` only — a delisted or retired symbol's
        last candle would read as a lag growing for ever."""
        return now - min((self.last_final_mono[s] for s in self.symbols if s in self.last_final_mono), default=now)

    def reject(self, reason: str) -> None:
        """Count one input rejected by the data firewall or the continuity check."""
        self.rejected[reason] += 1
