"""The health verdicts behind ``/health``: the market data, and the trading side.

Market data: a shard is healthy while its feed runs and ≥ 99% of its symbols have a fresh final candle — one stale
symbol is tolerated in any shard of two or more (:func:`allowed_stale`).
Freshness is judged on arrival (monotonic) time: a symbol is fresh while its last accepted final candle arrived
within ``window_s`` (interval + grace). A symbol with no candle yet counts from when it joined the running feed
(``FeedMetrics.joined_mono``: the feed's start — a worker's slot taken over late included — or, for a new
listing, its subscription; one listed again counts from then too), so a new service, slot or listing is
healthy for one window. A feed that died (``FeedMetrics.down``: crashed, not yet restarted, or given up by its
supervisor) makes its shard unhealthy at once, the reason in the body. :class:`MarketWatch` tells the chat when a
shard turns stale by this rule and when every shard is fresh again (run at the service's heartbeat).

Trading (:func:`trading_health`): impaired while the executor cannot see or repair its account —

- ``user_stream_down``: live, the user-data stream (fills, exits at the exchange, funding) has been
  disconnected for more than ``stream_grace_s`` (60 s: a reconnect takes well under a second);
- ``reconcile_failing``: no reconciliation (positions and exchange-side stops checked against the exchange
  and the database) has succeeded for ``reconcile_misses`` (2.5) intervals — the exchange's REST or
  PostgreSQL is out of reach, so nothing repairs a missing stop;
- ``signal_bus_down``: the multi-process executor has not reached Redis for more than ``stream_grace_s``: no
  signal arrives, and no marks (the paper account's prices, the drawdown guard's marks);
- ``database_down``: PostgreSQL has not answered the executor's probe (its lock check, every 30 s) for more than
  ``stream_grace_s``: no entry goes out (its order journal row cannot be written first), and fills, trades and
  positions are retried for ~15 s, then dropped with a log line;
- ``clock_skew``: live, the exchange's clock and ours differ by more than ``CLOCK_SKEW_LIMIT_MS`` (1 s; the
  offset is in the body as ``clock_offset_ms`` and in ``/metrics``). Signing corrects for it, but the signal age,
  the funding window and the UTC day run on our clock: minutes off skipped every signal as stale, or let an entry
  pay a funding it should have avoided, unseen. Fix the host's time sync (NTP).

A halt (operator's, max drawdown, account mode) is reported, not unhealthy: it is a decision, and exits and
protection go on.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smc_quant.ops.metrics import FeedMetrics


@dataclass(frozen=True, slots=True)
class ShardHealth:
    shard: int
    symbols: int
    fresh: int
    healthy: bool
    oldest_age_s: float
    down: str | None = None
    silent_s: float = 0.0
    """Age of the stalest symbol the rule cannot spare (the ``allowed_stale + 1``-th oldest): over the window exactly
    when the shard is stale for want of fresh symbols, and then how long its data has been missing (a dead socket:
    since its last candle; a symbol silent for days, spared, does not count). Not in the ``/health`` body."""


def _since(m: FeedMetrics, symbol: str, started: float) -> float:
    """Where ``symbol``'s age is measured from: its last final candle, or when it joined if that is later (or if
    it has none); ``started`` (the ops server's start) for a symbol of a feed that never ran."""
    last, joined = m.last_final_mono.get(symbol), m.joined_mono.get(symbol)
    if last is None:
        return started if joined is None else joined
    return last if joined is None else max(last, joined)


def allowed_stale(n: int, fraction: float) -> int:
    """How many of a shard's ``n`` symbols may be stale with the shard still healthy: the share ``1 − fraction``
    allows, and at least one in a shard of two or more. One silent symbol (a contract paused, a gap fetched for
    longer than the grace) is not an outage of the feed, which silences all of them; at 99 % a shard under 100
    symbols (81 each at ``SHARD_COUNT=4``) had no room, and one such symbol made the whole service answer 503."""
    return max(math.floor((1.0 - fraction) * n + 1e-9), min(1, n - 1))


def shard_health(m: FeedMetrics, *, now: float, started: float, window_s: float, fraction: float) -> ShardHealth:
    """Judge one shard from its counters at monotonic time ``now``."""
    ages = [now - _since(m, s, started) for s in m.symbols]
    fresh = sum(1 for a in ages if a <= window_s)
    spared = allowed_stale(len(ages), fraction)
    healthy = m.down is None and len(ages) - fresh <= spared
    silent = heapq.nlargest(spared + 1, ages)[-1] if len(ages) > spared else 0.0
    return ShardHealth(m.shard, len(m.symbols), fresh, healthy, round(max(ages, default=0.0), 3), m.down,
                       round(silent, 3))


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
             "oldest_age_s": v.oldest_age_s, "down": v.down}
            for v in verdicts
        ],
    }
    return ok, body


@dataclass(frozen=True, slots=True)
class TradingState:
    """What the trading stack reports for ``/health`` (monotonic seconds)."""

    halted: str | None
    positions: int
    last_reconciled: float | None
    """When the last reconciliation succeeded; ``None`` before the first."""
    reconcile_interval_s: float
    stream_down_since: float | None = None
    """Live: when the user-data stream lost its socket (``None`` while connected, or with no stream: paper)."""
    bus_down_since: float | None = None
    """Multi-process executor: when Redis stopped answering (``None`` while it answers, or with no bus)."""
    store_down_since: float | None = None
    """When PostgreSQL stopped answering the executor's probe (``None`` while it answers, or with no database)."""
    clock_offset_ms: int | None = None
    """Live: the exchange's clock minus ours, from the signing's time sync (``None`` before one, or not live)."""


STREAM_GRACE_S = 60.0
RECONCILE_MISSES = 2.5
CLOCK_SKEW_LIMIT_MS = 1000


def trading_health(t: TradingState, *, now: float, started: float, stream_grace_s: float = STREAM_GRACE_S,
                   reconcile_misses: float = RECONCILE_MISSES) -> tuple[bool, dict[str, object]]:
    """The trading verdict at monotonic ``now`` and its part of the ``/health`` body (see the module docstring;
    before the first reconciliation the clock runs from ``started``)."""
    down = 0.0 if t.stream_down_since is None else max(0.0, now - t.stream_down_since)
    since = max(0.0, now - (t.last_reconciled if t.last_reconciled is not None else started))
    bus_down = 0.0 if t.bus_down_since is None else max(0.0, now - t.bus_down_since)
    store_down = 0.0 if t.store_down_since is None else max(0.0, now - t.store_down_since)
    problems = []
    if store_down > stream_grace_s:
        problems.append("database_down")
    if down > stream_grace_s:
        problems.append("user_stream_down")
    if bus_down > stream_grace_s:
        problems.append("signal_bus_down")
    if since > reconcile_misses * t.reconcile_interval_s:
        problems.append("reconcile_failing")
    if t.clock_offset_ms is not None and abs(t.clock_offset_ms) > CLOCK_SKEW_LIMIT_MS:
        problems.append("clock_skew")
    body: dict[str, object] = {
        "status": "impaired" if problems else "ok",
        "problems": problems,
        "halted": t.halted,
        "positions": t.positions,
        "user_stream_down_s": round(down, 3),
        "seconds_since_reconcile": round(since, 3),
        "signal_bus_down_s": round(bus_down, 3),
        "database_down_s": round(store_down, 3),
    }
    if t.clock_offset_ms is not None:
        body["clock_offset_ms"] = t.clock_offset_ms
    return not problems, body


class HealthWatch:
    """The trading verdict as messages, on changes only: one when it turns impaired (or its problems change),
    one when it is healthy again — so a trader without an uptime monitor hears of it too."""

    def __init__(self) -> None:
        self.problems: tuple[str, ...] = ()

    def update(self, body: Mapping[str, object]) -> str | None:
        """The message for the verdict ``body`` (:func:`trading_health`), or ``None`` when nothing changed."""
        raw = body["problems"]
        problems = tuple(str(p) for p in raw) if isinstance(raw, list | tuple) else ()
        if problems == self.problems:
            return None
        self.problems = problems
        if not problems:
            return "TRADING OK again · the user-data stream is connected and reconciliation succeeds"
        return "TRADING IMPAIRED · " + "; ".join(_describe(p, body) for p in problems)


def _describe(problem: str, body: Mapping[str, object]) -> str:
    if problem == "user_stream_down":
        return (f"user-data stream down {_seconds(body, 'user_stream_down_s'):.0f} s: fills, exchange-side exits "
                "and funding go unseen")
    if problem == "reconcile_failing":
        return (f"no reconciliation for {_seconds(body, 'seconds_since_reconcile') / 60:.1f} min: the exchange or "
                "PostgreSQL is out of reach, a missing stop would not be put back")
    if problem == "signal_bus_down":
        return (f"Redis out of reach for {_seconds(body, 'signal_bus_down_s'):.0f} s: no signals, no marks (exits "
                "at the exchange and reconciliation go on)")
    if problem == "database_down":
        return (f"PostgreSQL out of reach for {_seconds(body, 'database_down_s'):.0f} s: no new entries (the order "
                "journal cannot be written); exits and exchange-side stops go on, fills and trades may not be stored")
    if problem == "clock_skew":
        return (f"this host's clock is {_seconds(body, 'clock_offset_ms') / 1000:+.1f} s off the exchange's (fix its "
                "time sync): signal ages, funding windows and the UTC day are judged on it")
    return problem


def _seconds(body: Mapping[str, object], key: str) -> float:
    value = body.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


MARKET_REPEAT_S = 3600.0
"""A market-data outage that lasts is told again at most this often."""
MARKET_CHECK_S = 15.0
"""How often a process judges its shards' market data for the chat (``/health`` judges on each request)."""
MARKET_WARMUP_S = 300.0
"""A shard not yet fresh since it was first judged (a start, a slot taken over: its history still being fetched)
is told stale only this long after, unless its feed is down."""


class MarketWatch:
    """The market-data verdict of ``/health`` (:func:`shard_health`, with the ops server's window and fraction) as
    messages: one when a shard turns stale (which shards, since how long), again at most every ``repeat_s`` while
    any stays stale (a shard newly stale is told at once), one when every shard is fresh again. A shard that recovers
    while another stays stale is told with the final recovery. A shard never fresh since it was first judged is
    told only after ``warmup_s`` (its feed down: at once) — at a start, ``/health`` finds a third of the symbols
    stale while their history is fetched, and every start told an outage. Run every ``MARKET_CHECK_S``."""

    def __init__(self, *, window_s: float, fraction: float, started: float, repeat_s: float = MARKET_REPEAT_S,
                 warmup_s: float = MARKET_WARMUP_S) -> None:
        self.window_s = window_s
        self.fraction = fraction
        self.started = started
        self.repeat_s = repeat_s
        self.warmup_s = warmup_s
        self.verdicts: list[ShardHealth] = []
        """The latest verdict of each shard."""
        self._first_seen: dict[int, float] = {}
        self._fresh_once: set[int] = set()
        self.told: frozenset[int] = frozenset()
        """The shards of the last stale message; empty once told fresh again (or never stale)."""
        self._told_at = -math.inf
        self._began: float | None = None
        """When the current outage began (monotonic): the earliest missing data seen in it."""

    def check(self, shards: Sequence[FeedMetrics], now: float, log: Any,
              notify: Callable[[str, str], None] | None) -> bool:
        """:meth:`update`, a change logged (``market_data_health_changed``) and sent with kind ``health``; whether
        every shard is fresh (by the rule: one still warming up is not)."""
        text = self.update(shards, now)
        ok = all(v.healthy for v in self.verdicts)
        if text is not None:
            (log.error if self.told else log.warning)("market_data_health_changed", stale_shards=sorted(self.told),
                                                      text=text)
            if notify is not None:
                notify(text, "health")
        return ok

    def update(self, shards: Sequence[FeedMetrics], now: float) -> str | None:
        """The message for the shards' verdict at monotonic ``now``, or ``None`` when there is nothing to tell."""
        self.verdicts = verdicts = [shard_health(m, now=now, started=self.started, window_s=self.window_s,
                                                 fraction=self.fraction) for m in shards]
        for gone in set(self._first_seen) - {v.shard for v in verdicts}:  # a slot handed over: judged anew
            del self._first_seen[gone]
            self._fresh_once.discard(gone)
        for v in verdicts:
            self._first_seen.setdefault(v.shard, now)
            if v.healthy:
                self._fresh_once.add(v.shard)
        stale = [v for v in verdicts if not v.healthy and (
            v.down is not None or v.shard in self._fresh_once or now - self._first_seen[v.shard] >= self.warmup_s)]
        if not stale:
            if not self.told:
                return None
            began = now if self._began is None else self._began
            self.told, self._told_at, self._began = frozenset(), -math.inf, None
            return (f"MARKET DATA OK again · every shard ({len(verdicts)}) has fresh candles · the outage began "
                    f"{_span(now - began)} ago")
        began = min(now - v.silent_s if v.down is None else now for v in stale)
        self._began = began if self._began is None else min(self._began, began)
        shards_now = frozenset(v.shard for v in stale)
        if shards_now <= self.told and now - self._told_at < self.repeat_s:
            return None
        self.told, self._told_at = shards_now, now
        return "MARKET DATA STALE · " + " · ".join(_stale(v) for v in stale) + (
            f" · no signals from {'its' if len(stale) == 1 else 'their'} symbols until the candles flow again")


def _stale(v: ShardHealth) -> str:
    if v.down is not None:
        return f"shard {v.shard}: feed down ({v.down[:120]})"
    return f"shard {v.shard}: {v.fresh} of {v.symbols} symbols fresh, no candle for {_span(v.silent_s)}"


def _span(seconds: float) -> str:
    """``45 s``, ``12.5 min``, ``3.2 h``."""
    if seconds < 120:
        return f"{max(0.0, seconds):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
