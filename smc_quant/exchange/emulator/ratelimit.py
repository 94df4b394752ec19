"""REST request weight: per-IP fixed one-minute windows (wall clock), 429 when over, 418 bans."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def klines_weight(limit: int) -> int:
    """Weight of ``GET /fapi/v1/klines`` for ``limit`` rows (1/2/5/10)."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of charging one request: ``status`` 200, 429 or 418, and the weight used so far."""

    status: int
    used: int
    retry_after_s: int = 0
    banned_until_ms: int = 0


@dataclass(slots=True)
class _Window:
    minute: int = -1
    used: int = 0
    rejected: int = 0
    banned_until: float = 0.0


class WeightLimiter:
    """Charges request weight per IP; over the limit answers 429, and bans after repeated 429s."""

    def __init__(
        self, limit: int, ban_after_429s: int, ban_seconds: float, clock: Callable[[], float]
    ) -> None:
        self._limit = limit
        self._ban_after = ban_after_429s
        self._ban_seconds = ban_seconds
        self._clock = clock
        self._ips: dict[str, _Window] = {}
        self.total_used = 0

    def used(self, ip: str) -> int:
        """Weight used by ``ip`` in the current minute."""
        w = self._window(ip, self._clock())
        return w.used

    def _window(self, ip: str, now: float) -> _Window:
        w = self._ips.setdefault(ip, _Window())
        minute = int(now // 60)
        if w.minute != minute:
            w.minute, w.used, w.rejected = minute, 0, 0
        return w

    def charge(self, ip: str, weight: int) -> Verdict:
        """Charge ``weight`` to ``ip`` unless it is banned or over the limit."""
        now = self._clock()
        w = self._window(ip, now)
        if now < w.banned_until:
            return Verdict(418, w.used, math.ceil(w.banned_until - now), int(w.banned_until * 1000))
        if w.used + weight > self._limit:
            w.rejected += 1
            if w.rejected > self._ban_after:
                w.banned_until = now + self._ban_seconds
                return Verdict(418, w.used, math.ceil(self._ban_seconds), int(w.banned_until * 1000))
            return Verdict(429, w.used, max(1, math.ceil(60 - now % 60)))
        w.used += weight
        self.total_used += weight
        return Verdict(200, w.used)
