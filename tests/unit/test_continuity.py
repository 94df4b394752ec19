"""Per-symbol continuity: order, duplicates, gaps held and released in order."""

from __future__ import annotations

import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.continuity import Continuity, Gap, Verdict
from tests.builders import candles_of

MIN = 60_000


@pytest.fixture
def btc(shared_data):  # type: ignore[no-untyped-def]
    return candles_of(read_klines(shared_data / KLINES_2023_1M / "BTCUSDT.csv.gz"), 0, 20)


def test_in_order_candles_are_accepted(btc) -> None:  # type: ignore[no-untyped-def]
    """Consecutive candles are all accepted and duplicates/out-of-order ones rejected."""
    c = Continuity(MIN)
    assert [c.offer(x)[0] for x in btc[:5]] == [Verdict.ACCEPT] * 5
    assert c.offer(btc[4])[0] is Verdict.DUPLICATE
    assert c.offer(btc[2])[0] is Verdict.OUT_OF_ORDER


def test_gap_holds_later_candles_until_backfill(btc) -> None:  # type: ignore[no-untyped-def]
    """A gap returns its exact range, holds later candles, and completes in order with nothing missing."""
    c = Continuity(MIN)
    c.offer(btc[0])
    verdict, gap = c.offer(btc[4])
    assert verdict is Verdict.GAP
    assert gap == Gap("BTCUSDT", btc[1].open_time, btc[3].open_time)
    assert gap.count(MIN) == 3
    assert c.offer(btc[5])[0] is Verdict.HELD
    assert c.offer(btc[5])[0] is Verdict.DUPLICATE
    done = c.complete("BTCUSDT", btc[1:4], gap.end_ms)
    assert [x.open_time for x in done.released] == [x.open_time for x in btc[1:6]]
    assert done.missing == 0 and done.gap is None
    assert c.offer(btc[6])[0] is Verdict.ACCEPT


def test_unfillable_gap_is_counted(btc) -> None:  # type: ignore[no-untyped-def]
    """When the backfill returns nothing, the held candles are released and the hole is counted."""
    c = Continuity(MIN)
    c.seed("BTCUSDT", btc[0].open_time)
    _, gap = c.offer(btc[3])
    done = c.complete("BTCUSDT", [], gap.end_ms)
    assert [x.open_time for x in done.released] == [btc[3].open_time]
    assert done.missing == 2 and done.gap is None


def test_a_final_lost_while_a_gap_is_fetched_is_fetched_too(btc) -> None:  # type: ignore[no-untyped-def]
    """Gap 1–2 held from 3; a reconnect during that fetch loses 4, so 5 and 6 arrive held. The fetch brings 1–2:
    1–3 are released and 4 is asked for as a new gap, 5–6 held until it comes — then 4–6 in order, nothing
    missing. It used to release 1–6 over the hole and reject 4 as out of order when it came: lost for good."""
    c = Continuity(MIN)
    c.seed("BTCUSDT", btc[0].open_time)
    _, gap = c.offer(btc[3])
    assert gap == Gap("BTCUSDT", btc[1].open_time, btc[2].open_time)
    assert [c.offer(x)[0] for x in (btc[5], btc[6])] == [Verdict.HELD] * 2
    done = c.complete("BTCUSDT", btc[1:3], gap.end_ms)
    assert [x.open_time for x in done.released] == [x.open_time for x in btc[1:4]]
    assert done.missing == 0 and done.gap == Gap("BTCUSDT", btc[4].open_time, btc[4].open_time)
    assert c.holding("BTCUSDT") and c.held_count("BTCUSDT") == 2
    again = c.complete("BTCUSDT", [btc[4]], done.gap.end_ms)
    assert [x.open_time for x in again.released] == [x.open_time for x in btc[4:7]]
    assert again.missing == 0 and again.gap is None and c.offer(btc[7])[0] is Verdict.ACCEPT


def test_a_symbol_with_no_history_bootstraps_through_a_gap(btc) -> None:  # type: ignore[no-untyped-def]
    """With ``bootstrap``, a symbol's first candle asks for the bars before it and is held until they
    arrive; a listing younger than the window counts nothing missing, a hole inside what came does."""
    c = Continuity(MIN, bootstrap=10)
    verdict, gap = c.offer(btc[12])
    assert verdict is Verdict.GAP
    assert gap == Gap("BTCUSDT", btc[2].open_time, btc[11].open_time)
    assert c.offer(btc[13])[0] is Verdict.HELD
    done = c.complete("BTCUSDT", btc[5:12], gap.end_ms)  # history starts at bar 5: a young listing
    assert [x.open_time for x in done.released] == [x.open_time for x in btc[5:14]]
    assert done.missing == 0
    assert c.offer(btc[14])[0] is Verdict.ACCEPT

    c = Continuity(MIN, bootstrap=10)
    c.offer(btc[12])
    assert c.complete("BTCUSDT", btc[2:7] + btc[9:12], btc[11].open_time).missing == 2


def test_bootstrap_applies_only_to_symbols_without_history(btc) -> None:  # type: ignore[no-untyped-def]
    """A seeded symbol continues from its last stored candle; without bootstrap a new one starts at once."""
    c = Continuity(MIN, bootstrap=10)
    c.seed("BTCUSDT", btc[3].open_time)
    assert c.offer(btc[4])[0] is Verdict.ACCEPT
    assert Continuity(MIN).offer(btc[12])[0] is Verdict.ACCEPT
    with pytest.raises(ValueError, match="bootstrap"):
        Continuity(MIN, bootstrap=-1)
