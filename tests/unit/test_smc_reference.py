"""Agreement with the reference library ``smartmoneyconcepts`` (a dev/bench-only dependency).

The library reads future bars, so we compare *what* is detected aligned on the formation bar, not
when. Swings use matching parameters: library ``swing_length=N`` is a window of N−1 bars left and N
right with ties flagged (``swing_left=N−1, swing_right=N, swing_strict_left=False``); the library
then deletes swings by a non-causal alternation clean-up, which :func:`_library_cleanup` re-applies
offline to our causal pivots. See docs/smc.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, read_klines
from smc_quant.smc import SMCParams, detect
from smc_quant.smc.events import (
    E_BOTTOM,
    E_CONFIRMED,
    E_DIR,
    E_FORMED,
    E_TOP,
    K_FVG,
    K_FVG_EXPIRE,
    K_FVG_TOUCH,
    K_SWING,
    select,
)

os.environ.setdefault("SMC_CREDIT", "0")
lib = pytest.importorskip("smartmoneyconcepts").smc
pd = pytest.importorskip("pandas")

F64 = npt.NDArray[np.float64]
REAL = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
N_REAL = 20_000


@pytest.fixture(scope="module")
def eurusd(shared_data: Path) -> KlineSeries:
    """The library's own EURUSD 15m test candles."""
    df = pd.read_csv(shared_data / "smc_reference/EURUSD_15M.csv")
    ot = pd.to_datetime(df["Date"], format="%Y.%m.%d %H:%M:%S").astype("int64").to_numpy() // 1_000_000
    cols = [df[c].to_numpy(np.float64) for c in ("Open", "High", "Low", "Close", "Volume")]
    return KlineSeries("EURUSD", ot.astype(np.int64), *cols)


def _frame(s: KlineSeries) -> object:
    return pd.DataFrame({"open": s.open, "high": s.high, "low": s.low, "close": s.close, "volume": s.volume})


def _real(shared_data: Path, symbol: str) -> KlineSeries:
    return read_klines(shared_data / KLINES_2023_1M / f"{symbol}.csv.gz").slice(0, N_REAL)


def _fvg_agreement(s: KlineSeries, ref: object) -> tuple[float, float]:
    """(formation agreement, touch agreement) of our FVGs with a library fvg() frame.

    Touches are compared on the gaps we still track at the library's touch bar: our active list is
    bounded (the oldest gap expires when 16 are open), the library scans to the end of the frame.
    """
    ev = detect(s, SMCParams(n_timeframes=1))
    ours = {(int(e[E_FORMED]), int(e[E_DIR])): (e[E_TOP], e[E_BOTTOM]) for e in select(ev, K_FVG)}
    touch = {(int(e[E_FORMED]), int(e[E_DIR])): int(e[E_CONFIRMED]) for e in select(ev, K_FVG_TOUCH)}
    expired = {(int(e[E_FORMED]), int(e[E_DIR])): int(e[E_CONFIRMED]) for e in select(ev, K_FVG_EXPIRE)}
    rows = np.flatnonzero(ref["FVG"].notna().to_numpy())
    theirs = {(int(i), int(ref["FVG"].iat[i])): (ref["Top"].iat[i], ref["Bottom"].iat[i]) for i in rows}
    same = sum(1 for k, v in theirs.items() if ours.get(k) == v)
    mit = {k: int(ref["MitigatedIndex"].iat[k[0]]) for k in theirs}
    tracked = [k for k in theirs if k not in expired or 0 < mit[k] < expired[k]]
    agree = sum(1 for k in tracked if touch.get(k, 0) == mit[k])
    assert len(tracked) > 0.9 * len(theirs)
    return same / len(set(ours) | set(theirs)), agree / len(tracked)


def _library_cleanup(flags: npt.NDArray[np.int64], h: F64, low: F64) -> npt.NDArray[np.int64]:
    """The library's alternation clean-up (offline, non-causal) applied to pivot flags."""
    sw = np.where(flags == 0, np.nan, flags.astype(np.float64))
    while True:
        pos = np.flatnonzero(~np.isnan(sw))
        if len(pos) < 2:
            break
        cur, nxt = sw[pos[:-1]], sw[pos[1:]]
        rm = np.zeros(len(pos), dtype=bool)
        hh, ll = (cur == 1) & (nxt == 1), (cur == -1) & (nxt == -1)
        rm[:-1] |= (hh & (h[pos[:-1]] < h[pos[1:]])) | (ll & (low[pos[:-1]] > low[pos[1:]]))
        rm[1:] |= (hh & (h[pos[:-1]] >= h[pos[1:]])) | (ll & (low[pos[:-1]] <= low[pos[1:]]))
        if not rm.any():
            break
        sw[pos[rm]] = np.nan
    return np.nan_to_num(sw).astype(np.int64)


def _swing_agreement(s: KlineSeries, ref_flags: F64, n: int) -> tuple[float, float]:
    """(share of library swings among our pivots, Jaccard after the library clean-up), rows 2N..len−N."""
    p = SMCParams(swing_left=n - 1, swing_right=n, swing_strict_left=False, n_timeframes=1)
    sw = select(detect(s, p), K_SWING)
    flags = np.zeros(len(s), dtype=np.int64)
    lows = sw[sw[:, E_DIR] == -1]
    flags[lows[:, E_FORMED].astype(int)] = -1
    highs = sw[sw[:, E_DIR] == 1]
    flags[highs[:, E_FORMED].astype(int)] = 1  # a bar that is both: the high wins, as in the library
    assert (s.high[highs[:, E_FORMED].astype(int)] == highs[:, E_TOP]).all()
    window = np.zeros(len(s), dtype=bool)
    window[2 * n:len(s) - n] = True
    theirs = np.where(window, np.nan_to_num(ref_flags), 0).astype(np.int64)
    is_high = np.isin(np.arange(len(s)), highs[:, E_FORMED])
    is_low = np.isin(np.arange(len(s)), lows[:, E_FORMED])
    found = np.where(theirs == 1, is_high, np.where(theirs == -1, is_low, False))
    cleaned = np.where(window, _library_cleanup(flags, s.high, s.low), 0)
    both = ((cleaned == theirs) & (theirs != 0)).sum()
    return found.sum() / (theirs != 0).sum(), both / ((cleaned != 0) | (theirs != 0)).sum()


def test_fvg_agrees_with_library_fixture_on_eurusd(eurusd: KlineSeries, shared_data: Path) -> None:
    """On the library's EURUSD fixture, ≥ 99% of FVGs (row, direction, zone) and tracked touches agree."""
    ref = pd.read_csv(shared_data / "smc_reference/fvg_result_data.csv")
    formation, mitigation = _fvg_agreement(eurusd, ref)
    assert formation >= 0.99
    assert mitigation >= 0.99


@pytest.mark.parametrize("symbol", REAL)
def test_fvg_agrees_with_library_on_real_binance(shared_data: Path, symbol: str) -> None:
    """On 20k real Binance 1m candles, ≥ 99% of the library's FVGs and touches are ours, and vice versa."""
    s = _real(shared_data, symbol)
    formation, mitigation = _fvg_agreement(s, lib.fvg(_frame(s)))
    assert formation >= 0.99
    assert mitigation >= 0.99


def test_swings_agree_with_library_fixture_on_eurusd(eurusd: KlineSeries, shared_data: Path) -> None:
    """On the EURUSD fixture (swing_length 5), ≥ 99% of library swings are our pivots, and equal after
    its clean-up."""
    ref = pd.read_csv(shared_data / "smc_reference/swing_highs_lows_result_data.csv")
    found, cleaned = _swing_agreement(eurusd, ref["HighLow"].to_numpy(), 5)
    assert found >= 0.99
    assert cleaned >= 0.99


@pytest.mark.parametrize(("symbol", "n"), [("BTCUSDT", 5), ("ETHUSDT", 10), ("XRPUSDT", 20)])
def test_swings_agree_with_library_on_real_binance(shared_data: Path, symbol: str, n: int) -> None:
    """On 20k real Binance 1m candles, ≥ 99% of library swings are our pivots, and equal after clean-up."""
    s = _real(shared_data, symbol)
    ref = lib.swing_highs_lows(_frame(s), n)["HighLow"].to_numpy()
    found, cleaned = _swing_agreement(s, ref, n)
    assert found >= 0.99
    assert cleaned >= 0.99


def test_default_strict_swings_disagree_only_on_ties(shared_data: Path) -> None:
    """With our default strict-left rule, every library swing we miss has an equal extreme on its left."""
    s = _real(shared_data, "BTCUSDT")
    ref = lib.swing_highs_lows(_frame(s), 5)["HighLow"].to_numpy()
    sw = select(detect(s, SMCParams(swing_left=4, swing_right=5, n_timeframes=1)), K_SWING)
    ours = {(int(e[E_FORMED]), int(e[E_DIR])) for e in sw}
    missed = [(i, int(ref[i])) for i in np.flatnonzero(~np.isnan(ref))[1:-1] if 10 <= i < len(s) - 5
              and (i, int(ref[i])) not in ours]
    x = {1: s.high, -1: s.low}
    assert len(missed) > 10
    assert all((x[d][i - 4:i] == x[d][i]).any() for i, d in missed)
