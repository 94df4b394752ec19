"""Per-shard minute analysis: closed candles → SMC engine (one bank per shard) → one feature batch.

Every accepted 1m candle is appended to a pending list (O(1)); once every listed symbol of the shard has
closed the minute — or ``grace_s`` after the minute's first close, for symbols still filling a gap —
the pending candles go through :meth:`FeatureEngineer.on_close` in one kernel call and the minute's
feature rows are handed on as one :class:`FeatureBatch`. Candles reach the engine in order per symbol
(the feed's continuity check guarantees it), so the live rows equal the batch path's rows.

A candle the engine would refuse (the feed's firewall should have stopped it) is dropped from its minute,
counted (``rejected_candles``) and logged; the other symbols' rows of that minute go on. A sink that raises
is logged and counted (``sink_errors``); the batch still reaches the other sinks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import structlog

from shards.supervisor import callable_name, describe_error, traceback_tail
from smc_quant.domain.candle_store import CandleStore
from smc_quant.domain.candles import Candle
from smc_quant.errors import DataRejected
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer, warm_up
from smc_quant.smc.engine import EngineBank

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """The feature rows of the symbols of one shard updated by one minute's closes."""

    shard: int
    open_time: int
    symbols: tuple[str, ...]
    open_times: I64
    """Open time of the candle each row was computed after (a symbol filling a gap may lag)."""
    features: F64
    events: F64
    compute_s: float
    schema_version: str = FEATURE_SCHEMA.version
    closes: F64 | None = None
    """Close of the candle each row was computed after (the signal's reference price)."""
    break_times: F64 | None = None
    """Open time of each row's latest 1m structure break (NaN before one): the setup identity the strategy
    keys signals on (``ICTScalper.on_batch(..., break_open_times=...)``), exact across missing candles."""


@dataclass(slots=True)
class AnalysisStats:
    batches: int = 0
    rows: int = 0
    candles: int = 0
    last_compute_s: float = 0.0
    max_compute_s: float = 0.0
    late_flushes: int = 0
    rejected_batches: int = 0
    rejected_candles: int = 0
    sink_errors: int = 0
    warm_candles: int = 0
    sinks: list[Callable[[FeatureBatch], None]] = field(default_factory=list)


class MinuteAnalyzer:
    """Feeds one shard's closed candles to its engine bank and emits a feature batch per minute."""

    def __init__(self, shard: int, symbols: Sequence[str], *, grace_s: float = 2.0,
                 engineer: FeatureEngineer | None = None, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self.shard = shard
        self._log = logger or structlog.get_logger().bind(shard=shard)
        self.engineer = engineer or FeatureEngineer()
        self.bank = EngineBank(list(symbols), self.engineer.params)
        self.stats = AnalysisStats()
        self.latest: FeatureBatch | None = None
        self._grace_s = grace_s
        self._pending: list[tuple[int, int, float, float, float, float, float]] = []
        self._minute = -1
        self._closed = 0
        self._counted = [True] * len(self.bank.symbols)
        """Per row: does the minute wait for this symbol (``False``: the exchange stopped listing it)."""
        self._expected = len(self.bank.symbols)
        self._timer: asyncio.TimerHandle | None = None

    def subscribe(self, sink: Callable[[FeatureBatch], None]) -> None:
        """Call ``sink`` with every feature batch (the strategy attaches here)."""
        self.stats.sinks.append(sink)

    def add(self, symbols: Sequence[str]) -> list[str]:
        """Symbols new to the shard (a new listing): fresh engine rows, and the minute waits for them too. Their
        history reaches the engine as the feed's backfill accepts it, in order, like any gap. Returns those added."""
        rows = self.bank.add(symbols)
        self._counted.extend([True] * len(rows))
        self._expected += len(rows)
        return [self.bank.symbols[r] for r in rows]

    def follow(self, listed: Iterable[str]) -> None:
        """Wait each minute only for the symbols the exchange lists now: a delisted one's stream falls silent and
        would otherwise hold every minute of the shard until ``grace_s`` (a late flush); one listed again is
        waited for again. Its candles, if any still come, are analysed as before."""
        now = set(listed)
        self._counted = [s in now for s in self.bank.symbols]
        self._expected = sum(self._counted)

    def warm(self, store: CandleStore) -> int:
        """Compile the kernels, then run every symbol's stored history through the engine (before live data)."""
        warm_up(self.engineer.params)
        total = 0
        for symbol, row in self.bank.index.items():
            times, values = store.ring(symbol).arrays()
            if not len(times):
                continue
            rows = np.full(len(times), row, dtype=np.int64)
            self.bank.update(rows, times, values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy(),
                             values[:, 3].copy(), values[:, 4].copy())
            total += len(times)
        self.stats.warm_candles = total
        return total

    def on_candle(self, candle: Candle, _completed: list[Candle]) -> None:
        """Feed listener: queue one accepted candle; flush when the minute is complete."""
        row = self.bank.index.get(candle.symbol)
        if row is None:
            return
        self._pending.append((row, candle.open_time, candle.open, candle.high, candle.low, candle.close,
                              candle.volume))
        if candle.open_time > self._minute:
            self._minute, self._closed = candle.open_time, 0
            self._arm_timer()
        elif self._timer is None:  # a late candle (after the minute's flush): within the grace, not a minute later
            self._arm_timer()
        if candle.open_time == self._minute and self._counted[row]:
            self._closed += 1
            if self._closed == self._expected:
                self.flush()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self._grace_s, self._late_flush)

    def _late_flush(self) -> None:
        self._timer = None
        if self._pending:
            self.stats.late_flushes += 1
            self.flush()

    def flush(self) -> FeatureBatch | None:
        """Run everything pending through the engine now and hand on the minute's feature rows."""
        if not self._pending:
            return None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        started = time.perf_counter()
        cols = self._valid(np.array(self._pending, dtype=np.float64))
        self._pending.clear()
        if not len(cols):
            return None
        rows = cols[:, 0].astype(np.int64)
        times = cols[:, 1].astype(np.int64)
        try:
            events = self.bank.update(rows, times, cols[:, 2].copy(), cols[:, 3].copy(), cols[:, 4].copy(),
                                      cols[:, 5].copy(), cols[:, 6].copy())
        except DataRejected as exc:  # the feed's firewall should make this unreachable; count, never crash
            self.stats.rejected_batches += 1
            self._log.error("analysis_batch_rejected", reason=exc.reason, candles=len(rows))
            return None
        unique, last_from_end = np.unique(rows[::-1], return_index=True)
        row_times = times[::-1][last_from_end]
        row_closes = cols[::-1, 5][last_from_end]
        features = self.engineer.rows(self.bank.states, unique)
        breaks = self.engineer.break_times(self.bank.states, unique)
        elapsed = time.perf_counter() - started
        batch = FeatureBatch(self.shard, int(times.max()), tuple(self.bank.symbols[i] for i in unique), row_times,
                             features, events, elapsed, closes=row_closes, break_times=breaks)
        s = self.stats
        s.batches += 1
        s.rows += len(unique)
        s.candles += len(rows)
        s.last_compute_s = elapsed
        s.max_compute_s = max(s.max_compute_s, elapsed)
        self.latest = batch
        for sink in s.sinks:
            try:
                sink(batch)
            except Exception as exc:  # one consumer's failure must not starve the others of the minute
                s.sink_errors += 1
                self._log.error("batch_sink_failed", sink=callable_name(sink), open_time=batch.open_time,
                                error=describe_error(exc), traceback=traceback_tail(exc, 2000))
        return batch

    def _valid(self, cols: F64) -> F64:
        """The pending rows the engine takes; any other is dropped, counted and logged (see the module docstring)."""
        bad = self.bank.invalid(cols[:, 2], cols[:, 3], cols[:, 4], cols[:, 5], cols[:, 6])
        if not bad.any():
            return cols
        self.stats.rejected_candles += int(bad.sum())
        self._log.error("analysis_candles_rejected", candles=int(bad.sum()),
                        symbols=[self.bank.symbols[int(r)] for r in cols[bad, 0]],
                        open_times=[int(t) for t in cols[bad, 1]])
        return cols[~bad]
