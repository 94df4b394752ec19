"""/metrics' feed lag is the age of the stalest current symbol's last final candle."""

from __future__ import annotations

import time

import pytest

from smc_quant.ops.metrics import FeedMetrics
from smc_quant.ops.server import FeedCollector


def _lag(m: FeedMetrics) -> float:
    families = {f.name: f for f in FeedCollector([m], lambda _s: 0, dict).collect()}
    [sample] = families["smc_feed_lag_seconds"].samples
    return float(sample.value)


def test_a_retired_symbol_no_longer_counts_for_the_lag() -> None:
    """A symbol delisted a day ago (its last candle is a day old) made the lag read 86 400 s for ever."""
    now = time.monotonic()
    m = FeedMetrics(shard=0)
    m.symbols = ("BTCUSDT", "GONEUSDT")
    m.last_final_mono.update({"BTCUSDT": now - 5.0, "GONEUSDT": now - 86_400.0})
    assert _lag(m) >= 86_400.0
    m.symbols = ("BTCUSDT",)  # the universe refresh retired it
    assert 5.0 <= _lag(m) < 60.0


def test_the_lag_rule_counts_current_symbols_only_and_is_zero_before_the_first_candle() -> None:
    """One rule for /metrics and the heartbeat: the age of the stalest current symbol's last final candle."""
    now = time.monotonic()
    m = FeedMetrics(shard=0, symbols=("BTCUSDT", "ETHUSDT"))
    assert m.lag_s(now) == 0.0  # no candle yet
    m.last_final_mono.update({"BTCUSDT": now - 5.0, "ETHUSDT": now - 2.0, "GONEUSDT": now - 777_600.0})
    assert m.lag_s(now) == pytest.approx(5.0)  # GONEUSDT, retired 9 days ago, is not a lag
