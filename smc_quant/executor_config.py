"""The executor's configuration and counters, shared with the reconciler that works on its book."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal

from smc_quant.domain.trading import ZERO
from smc_quant.persist import FIRST_DELAY_S


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    queue_size: int = 1024
    exit_check_interval_s: float = 15.0
    reconcile_interval_s: float = 180.0
    taker_fee: Decimal = Decimal("0.0005")
    """Used only to estimate a fee the exchange did not report (flagged in the log)."""
    dedupe_window_ms: int = 86_400_000
    """Signal ids created this recently are reloaded at start to refuse duplicates."""
    dedupe_max: int = 100_000
    max_drawdown_pct: Decimal = ZERO
    """Halt and flatten once the equity is this far below its peak (:func:`smc_quant.risk.drawdown_pct`); 0: off."""
    store_retry_s: float = FIRST_DELAY_S
    """First pause between attempts of a fill, trade or position write (doubling; :mod:`smc_quant.persist`)."""
    stop_wait_s: float = 8.0
    """At stop, how long writes still being retried may take before they are given up (and logged)."""
    max_signal_age_ms: int = 0
    """Skip a signal whose candle closed longer ago than this (``stale_signal``); 0: off."""
    alarm_repeat_s: float = 3600.0
    """The same alarm (reconciliation's, the order manager's) is notified at most once in this many seconds."""


@dataclass(slots=True)
class ExecutorStats:
    signals: int = 0
    signals_dropped: int = 0
    duplicates: int = 0
    opened: int = 0
    skipped: int = 0
    rotations: int = 0
    closed: int = 0
    forced_exits: int = 0
    events: int = 0
    fills: int = 0
    reconciliations: int = 0
    repairs: int = 0
    alarms: int = 0
    alarms_not_repeated: int = 0
    """Alarms not notified again: the same text was told less than ``alarm_repeat_s`` ago."""
    errors: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    funding_unknown: int = 0
    """Signals judged without a funding quote (stream off, symbol not quoted yet, or its quote stale)."""
    flattened: int = 0
    """Positions closed by the operator's flatten requests."""
    funding_settlements: int = 0
    """``ACCOUNT_UPDATE`` events with reason ``FUNDING_FEE`` taken into the max-drawdown PnL."""
    fee_sources: dict[str, int] = field(default_factory=dict)
    """Fills whose commission was not in USDT, by how it was counted (``converted``, ``estimated``)."""

    def metrics(self) -> dict[str, float]:
        """Every counter as ``executor_<name>``, ``executor_skipped_<reason>`` for every risk reason seen and
        ``executor_fees_<source>`` for fills charged in another asset than USDT."""
        out = {f"executor_skipped_{reason}": float(n) for reason, n in sorted(self.skip_reasons.items())}
        out.update({f"executor_fees_{source}": float(n) for source, n in sorted(self.fee_sources.items())})
        out.update({f"executor_{f.name}": float(getattr(self, f.name)) for f in fields(self)
                    if f.name not in ("skip_reasons", "fee_sources")})
        return out


__all__ = ["ExecutorConfig", "ExecutorStats"]
