"""Per-symbol continuity of closed candles: accept in order, spot duplicates and gaps, hold while filling.

Pure bookkeeping, no I/O. The feed offers every final candle; a gap makes the symbol *hold* later
candles until :meth:`Continuity.complete` receives the backfilled ones, so downstream consumers (the
candle store, the SMC engine) always see each symbol's candles strictly in order.

A symbol with nothing stored (a fresh database, a new listing) has no last candle to measure a gap
from. With ``bootstrap > 0`` its first candle is treated as following a gap of ``bootstrap`` bars, so the
same backfill fetches its recent history before anything is accepted and its engine starts warm; minutes
before the oldest fetched bar (a listing younger than that) are not counted as missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from smc_quant.domain.candles import Candle


class Verdict(Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    GAP = "gap"
    HELD = "held"


ACCEPTED: tuple[Verdict, None] = (Verdict.ACCEPT, None)
"""What :meth:`Continuity.offer` returns for an accepted candle (one shared tuple: the hot path)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing candles of ``symbol`` with open times in ``[start_ms, end_ms]``."""

    symbol: str
    start_ms: int
    end_ms: int

    def count(self, interval_ms: int) -> int:
        return (self.end_ms - self.start_ms) // interval_ms + 1


class Continuity:
    """Tracks the last accepted open time per symbol and the candles held during a backfill."""

    def __init__(self, interval_ms: int, bootstrap: int = 0) -> None:
        if bootstrap < 0:
            raise ValueError("bootstrap must be >= 0 bars")
        self.interval_ms = interval_ms
        self.bootstrap = bootstrap
        self.last: dict[str, int] = {}
        self._held: dict[str, dict[int, Candle]] = {}

    def seed(self, symbol: str, last_open_time: int) -> None:
        """Start ``symbol`` after ``last_open_time`` (warm start from the database)."""
        self.last[symbol] = last_open_time

    def holding(self, symbol: str) -> bool:
        return symbol in self._held

    def held_count(self, symbol: str) -> int:
        """Candles of ``symbol`` held until its gap is filled."""
        return len(self._held.get(symbol, ()))

    def offer(self, candle: Candle) -> tuple[Verdict, Gap | None]:
        """Judge one final candle; on ``GAP`` the caller backfills the returned range."""
        sym, t = candle.symbol, candle.open_time
        last = self.last.get(sym)
        if last is not None and t == last + self.interval_ms and not self._held:  # the common case
            self.last[sym] = t
            return ACCEPTED
        held = self._held.get(sym)
        if held is not None:
            if (last is not None and t <= last) or t in held:
                return Verdict.DUPLICATE, None
            held[t] = candle
            return Verdict.HELD, None
        if last is None and self.bootstrap and t >= self.interval_ms:
            self._held[sym] = {t: candle}
            return Verdict.GAP, Gap(sym, max(0, t - self.bootstrap * self.interval_ms), t - self.interval_ms)
        if last is None or t == last + self.interval_ms:
            self.last[sym] = t
            return ACCEPTED
        if t == last:
            return Verdict.DUPLICATE, None
        if t < last:
            return Verdict.OUT_OF_ORDER, None
        self._held[sym] = {t: candle}
        return Verdict.GAP, Gap(sym, last + self.interval_ms, t - self.interval_ms)

    def complete(self, symbol: str, fetched: list[Candle], fetched_to_ms: int | None = None) -> Completed:
        """Merge backfilled and held candles and release them in order, with the count still missing.

        A hole inside the fetched range (up to ``fetched_to_ms``, the gap's end) was asked for and did not come:
        it is counted missing and passed over. A hole among the candles held *after* that range — a final lost
        while the gap was being fetched (a reconnect across a minute close) — was never asked for: the candles
        after it stay held and :attr:`Completed.gap` names it for the next backfill. (Until 2026-12-07 it was
        passed over too, and the candle, rejected as out of order when it came later, was lost for good.)"""
        held = self._held.pop(symbol, {})
        last = self.last.get(symbol)
        merged = {c.open_time: c for c in fetched if c.symbol == symbol and (last is None or c.open_time > last)}
        merged.update(held)
        ordered = [merged[t] for t in sorted(merged)]
        missing = 0
        prev = last
        for i, c in enumerate(ordered):
            if prev is not None and c.open_time > prev + self.interval_ms:
                hole = prev + self.interval_ms
                if fetched_to_ms is not None and hole > fetched_to_ms:  # never asked for: ask, hold the rest
                    self._held[symbol] = {x.open_time: x for x in ordered[i:]}
                    released = ordered[:i]
                    if released:
                        self.last[symbol] = released[-1].open_time
                    return Completed(released, missing, Gap(symbol, hole, c.open_time - self.interval_ms))
                missing += (c.open_time - prev) // self.interval_ms - 1
            prev = c.open_time
        if ordered:
            self.last[symbol] = ordered[-1].open_time
        return Completed(ordered, missing, None)


@dataclass(frozen=True, slots=True)
class Completed:
    """What :meth:`Continuity.complete` released: candles in order, how many are missing for good, and a hole
    found after the fetched range (``None``: none; the candles after it are still held)."""

    released: list[Candle]
    missing: int
    gap: Gap | None
