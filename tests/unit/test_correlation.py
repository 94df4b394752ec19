"""Correlation of 1m returns on real 2023 candles: the definition, causality, the ring equals the history."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import numpy as np
import pytest

from smc_quant.correlation import MINUTE_MS, ReturnWindows, SeriesReturns, correlation, dense_closes
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.domain.series import KlineSeries

NAMES = ("BTCUSDT", "ETHUSDT", "USDCUSDT", "DOGEUSDT")


@pytest.fixture(scope="module")
def real(shared_data: Path) -> dict[str, KlineSeries]:
    return {n: read_klines(shared_data / KLINES_2023_1M / f"{n}.csv.gz") for n in NAMES}


def _plain_rho(a: KlineSeries, b: KlineSeries, t: int, minutes: int) -> float:
    """The definition in plain Python: returns of minutes present in both, window ending the minute before t."""
    def returns(s: KlineSeries) -> dict[int, float]:
        close = {int(ot): float(c) for ot, c in zip(s.open_time, s.close, strict=True)}
        end = t - MINUTE_MS
        return {m: math.log(close[m] / close[m - MINUTE_MS])
                for m in range(end - (minutes - 1) * MINUTE_MS, end + 1, MINUTE_MS)
                if m in close and m - MINUTE_MS in close}
    ra, rb = returns(a), returns(b)
    both = sorted(set(ra) & set(rb))
    return statistics.correlation([ra[m] for m in both], [rb[m] for m in both])


def test_btc_and_eth_move_together_usdc_does_not(real: dict[str, KlineSeries]) -> None:
    """ρ equals the plain-Python definition; BTC–ETH is high, BTC–USDC (a stablecoin) near zero."""
    src = SeriesReturns({n: (s.open_time, s.close) for n, s in real.items()}, minutes=120)
    t = int(real["BTCUSDT"].open_time[20_000])
    rho = src.correlations("BTCUSDT", ["ETHUSDT", "USDCUSDT", "DOGEUSDT"], t)
    for name, value in rho.items():
        assert value == pytest.approx(_plain_rho(real["BTCUSDT"], real[name], t, 120), abs=1e-12)
    assert rho["ETHUSDT"] > 0.6 and abs(rho["USDCUSDT"]) < 0.3


def test_the_window_ends_before_the_signal_candle(real: dict[str, KlineSeries]) -> None:
    """Causal: candles opened at the signal's minute or later never change ρ (the history cut there gives the
    same figure), while the window's own candles do."""
    btc, eth = real["BTCUSDT"], real["ETHUSDT"]
    t = int(btc.open_time[30_000])
    full = SeriesReturns({"A": (btc.open_time, btc.close), "B": (eth.open_time, eth.close)})
    keep_b = eth.open_time < t
    cut = SeriesReturns({"A": (btc.open_time[btc.open_time < t], btc.close[btc.open_time < t]),
                         "B": (eth.open_time[keep_b], eth.close[keep_b])})
    assert full.correlations("A", ["B"], t) == cut.correlations("A", ["B"], t)
    bumped = eth.close.copy()
    bumped[int(np.searchsorted(eth.open_time, t - 10 * MINUTE_MS))] *= 1.01
    moved = SeriesReturns({"A": (btc.open_time, btc.close), "B": (eth.open_time, bumped)})
    assert moved.correlations("A", ["B"], t) != full.correlations("A", ["B"], t)


def test_too_little_overlap_or_a_flat_series_gives_no_figure(real: dict[str, KlineSeries]) -> None:
    btc = real["BTCUSDT"]
    t = int(btc.open_time[5_000])
    a = dense_closes(btc.open_time, btc.close, t - MINUTE_MS, 120)
    assert correlation(a, a, 60) == pytest.approx(1.0)
    assert correlation(a, 1 / a, 60) == pytest.approx(-1.0)
    sparse = a.copy()
    sparse[::2] = np.nan  # no two consecutive closes: no return at all
    assert correlation(a, sparse, 1) is None
    assert correlation(a, np.full_like(a, a[0]), 60) is None  # flat: no variance
    holes = a.copy()
    holes[:62] = np.nan  # 58 returns left of 120
    assert correlation(a, holes, 60) is None and correlation(a, holes, 58) == pytest.approx(1.0)
    src = SeriesReturns({"BTCUSDT": (btc.open_time, btc.close)})
    assert src.correlations("BTCUSDT", ["NEWUSDT"], t) == {} and src.correlations("NEWUSDT", ["BTCUSDT"], t) == {}


def test_the_ring_fed_candle_by_candle_equals_the_history(real: dict[str, KlineSeries]) -> None:
    """The service's ring, fed the real candles out of order within each minute, with some never sent, some
    sent twice and an old one re-sent late, gives exactly the history's figure at every minute checked."""
    rng = random.Random(7)
    start = 10_000
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ring = ReturnWindows(minutes=120)
    per_minute: dict[int, list[tuple[str, int, float]]] = {}
    for name, s in real.items():
        i0 = int(np.searchsorted(s.open_time, real["BTCUSDT"].open_time[start]))
        ot, close = s.open_time[i0:i0 + 600], s.close[i0:i0 + 600]
        sent = np.array([rng.random() > 0.03 for _ in range(len(ot))])  # ~3 % of candles never arrive
        kept[name] = (ot[sent], close[sent])
        for o, c in zip(ot[sent], close[sent], strict=True):
            per_minute.setdefault(int(o), []).append((name, int(o), float(c)))
    history = SeriesReturns(kept, minutes=120)
    checked = 0
    for n, minute in enumerate(sorted(per_minute)):
        batch = per_minute[minute]
        rng.shuffle(batch)
        for name, o, c in batch + batch[:1]:
            ring.record(name, o, c)
        if n > 30:  # a late copy of an old candle must not displace anything
            name, o, c = rng.choice(per_minute[sorted(per_minute)[n - 30]])
            ring.record(name, o, c)
        if n >= 100 and n % 7 == 0:
            t = minute + MINUTE_MS  # the next minute's signal: its window ends at this minute
            for sym in NAMES:
                assert ring.correlations(sym, NAMES, t) == history.correlations(sym, NAMES, t)
            checked += 1
    assert checked > 50
    assert ring.correlations("BTCUSDT", ["ETHUSDT"], t)["ETHUSDT"] > 0.5  # a real figure, not an empty dict


def test_extend_keeps_the_newest_ring_full_as_recording_each_would(real: dict[str, KlineSeries]) -> None:
    btc = real["BTCUSDT"]
    one, bulk = ReturnWindows(minutes=120), ReturnWindows(minutes=120)
    for o, c in zip(btc.open_time[:1000], btc.close[:1000], strict=True):
        one.record("BTCUSDT", int(o), float(c))
    bulk.extend("BTCUSDT", btc.open_time[:1000], btc.close[:1000])
    bulk.extend("ETHUSDT", btc.open_time[:3].tolist(), btc.close[:3].tolist())  # plain sequences too
    end = int(btc.open_time[999])
    mine, theirs = one.window("BTCUSDT", end), bulk.window("BTCUSDT", end)
    assert mine is not None and theirs is not None
    np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(theirs, btc.close[1000 - 121:1000])  # no gap there in the real series
    old = bulk.window("BTCUSDT", int(btc.open_time[999 - 200]))
    assert old is not None and np.isnan(old).all()  # older than the ring: gone, never mistaken for current
