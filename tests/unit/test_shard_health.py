"""A shard's market-data verdict: one silent symbol is not an outage, a silent socket is."""

from __future__ import annotations

import pytest

from smc_quant.ops.health import allowed_stale, shard_health
from smc_quant.ops.metrics import FeedMetrics

NOW, WINDOW = 10_000.0, 90.0


def metrics(n: int, stale: int) -> FeedMetrics:
    """A shard of ``n`` symbols, the first ``stale`` of them last heard of two windows ago."""
    symbols = tuple(f"S{i:03d}USDT" for i in range(n))
    m = FeedMetrics(shard=0, symbols=symbols)
    for i, s in enumerate(symbols):
        m.last_final_mono[s] = NOW - (2 * WINDOW if i < stale else 1.0)
    return m


@pytest.mark.parametrize(("n", "stale", "healthy"), [
    (81, 1, True),    # SHARD_COUNT=4 with 323 symbols: one paused contract was a 503 for the whole service
    (81, 2, False),
    (323, 3, True), (323, 4, False),  # the 99 % share itself, unchanged
    (2, 1, True), (1, 1, False),  # a shard of one has no symbol to spare
    (81, 81, False),  # a silent socket
])
def test_one_stale_symbol_is_tolerated_in_a_shard_of_two_or_more(n: int, stale: int, healthy: bool) -> None:
    verdict = shard_health(metrics(n, stale), now=NOW, started=NOW - 3600, window_s=WINDOW, fraction=0.99)
    assert (verdict.fresh, verdict.healthy) == (n - stale, healthy)


def test_the_allowance_is_the_fractions_share_and_never_below_one() -> None:
    assert [allowed_stale(n, 0.99) for n in (0, 1, 2, 99, 100, 199, 200, 323)] == [0, 0, 1, 1, 1, 1, 2, 3]
    assert allowed_stale(81, 0.9) == 8 and allowed_stale(81, 1.0) == 1
