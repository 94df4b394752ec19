"""The health verdict: a shard is healthy while ≥ 99% of its symbols have a fresh final candle.

Freshness is judged on arrival (monotonic) time: a symbol is fresh while its last accepted final
candle arrived within ``window_s`` (interval + grace). Symbols that have not produced a candle yet
count from the moment the shard started, so a new service is healthy for one window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smc_quant.ops.metrics import FeedMetrics


@dataclass(frozen=True, slots=True)
class ShardHealth:
    shard: int
    symbols: int
    fresh: int
    healthy: bool
    oldest_age_s: float


def shard_health(m: FeedMetrics, *, now: float, started: float, window_s: float, fraction: float) -> ShardHealth:
    """Judge one shard from its counters at monotonic time ``now``."""
    ages = [now - m.last_final_mono.get(s, started) for s in m.symbols]
    fresh = sum(1 for a in ages if a <= window_s)
    healthy = not m.symbols or fresh >= fraction * len(m.symbols)
    return ShardHealth(m.shard, len(m.symbols), fresh, healthy, round(max(ages, default=0.0), 3))


def cluster_health(
    shards: Sequence[FeedMetrics], *, now: float, started: float, window_s: float, fraction: float
) -> tuple[bool, dict[str, object]]:
    """Overall verdict and the JSON body of ``/health``."""
    verdicts = [shard_health(m, now=now, started=started, window_s=window_s, fraction=fraction) for m in shards]
    ok = all(v.healthy for v in verdicts)
    body: dict[str, object] = {
        "status": "ok" if ok else "stale",
        "stale_shards": [v.shard for v in verdicts if not v.healthy],
        "shards": [
            {"shard": v.shard, "symbols": v.symbols, "fresh": v.fresh, "healthy": v.healthy,
             "oldest_age_s": v.oldest_age_s}
            for v in verdicts
        ],
    }
    return ok, body
