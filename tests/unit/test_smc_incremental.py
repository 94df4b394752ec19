"""Property test on every real 1m symbol: the incremental path equals the batch path at every bar."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smc_quant.datasets import KlineSeries, load_klines
from smc_quant.errors import DataRejected
from smc_quant.features import N_FEATURES, FeatureEngineer
from smc_quant.smc import EngineBank, SymbolEngine
from smc_quant.smc.events import E_SYM

F64 = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def series(shared_data: Path) -> dict[str, KlineSeries]:
    """All 18 real Binance USDT-M 1m series."""
    return load_klines(root=shared_data)


@pytest.fixture(scope="module")
def batch(series: dict[str, KlineSeries]) -> dict[str, tuple[F64, F64]]:
    """(features, events) of every symbol by the batch path."""
    fe = FeatureEngineer()
    return {sym: fe.batch(s) for sym, s in series.items()}


def _replay(fe: FeatureEngineer, s: KlineSeries) -> tuple[F64, F64]:
    eng = SymbolEngine(fe.params)
    x = np.empty((len(s), N_FEATURES))
    parts = []
    ot, o, h, low, c, v = s.open_time.tolist(), s.open, s.high, s.low, s.close, s.volume
    for i in range(len(s)):
        parts.append(eng.update(ot[i], o[i], h[i], low[i], c[i], v[i]))
        x[i] = fe.row(eng.state)
    return x, np.concatenate(parts)


def test_symbol_engine_replay_equals_batch_on_every_symbol(
    series: dict[str, KlineSeries], batch: dict[str, tuple[F64, F64]]
) -> None:
    """Candle by candle, every symbol's events and feature rows equal the batch path exactly."""
    fe = FeatureEngineer()
    assert len(series) == 18
    for sym, s in series.items():
        x, ev = _replay(fe, s)
        bx, bev = batch[sym]
        assert bev.shape[0] > 1000, sym
        np.testing.assert_array_equal(ev, bev, err_msg=sym)
        np.testing.assert_array_equal(x, bx, err_msg=sym)


def _minutes(series: dict[str, KlineSeries]) -> tuple[list[str], npt.NDArray[np.int64], F64]:
    """All candles of all symbols as (row, open_time, o, h, l, c, v), sorted by minute then row."""
    symbols = sorted(series)
    cols = [np.column_stack([np.full(len(series[s]), i), series[s].open_time, series[s].open,
                             series[s].high, series[s].low, series[s].close, series[s].volume])
            for i, s in enumerate(symbols)]
    allc = np.concatenate(cols)
    order = np.lexsort((allc[:, 0], allc[:, 1]))
    return symbols, allc[order, 1].astype(np.int64), allc[order]


def test_minute_close_batches_of_all_symbols_equal_batch_rows(
    series: dict[str, KlineSeries], batch: dict[str, tuple[F64, F64]]
) -> None:
    """Feeding each minute's closes of all 18 symbols in one bank call gives every symbol's batch rows."""
    symbols, ot, allc = _minutes(series)
    fe = FeatureEngineer()
    bank = EngineBank(symbols, fe.params)
    bounds = np.flatnonzero(np.r_[True, ot[1:] != ot[:-1], True])
    got: dict[str, list[F64]] = {s: [] for s in symbols}
    events: dict[int, list[F64]] = {i: [] for i in range(len(symbols))}
    for a, b in itertools.pairwise(bounds):
        rows = allc[a:b, 0].astype(np.int64)
        ev, x = fe.on_close(bank, rows, ot[a:b], allc[a:b, 2], allc[a:b, 3], allc[a:b, 4],
                            allc[a:b, 5], allc[a:b, 6])
        for k, r in enumerate(rows):
            got[symbols[r]].append(x[k])
            events[int(r)].append(ev[ev[:, E_SYM] == r])
    for i, sym in enumerate(symbols):
        np.testing.assert_array_equal(np.array(got[sym]), batch[sym][0], err_msg=sym)
        live = np.concatenate(events[i])
        live[:, E_SYM] = 0
        np.testing.assert_array_equal(live, batch[sym][1], err_msg=sym)


def test_bank_row_warmed_by_batch_continues_live_like_one_batch(series: dict[str, KlineSeries],
                                                                 batch: dict[str, tuple[F64, F64]]) -> None:
    """Warming a bank row with the batch path on history, then feeding live candles, equals one batch."""
    s = series["ETHUSDT"]
    fe = FeatureEngineer()
    bank = EngineBank(["BTCUSDT", "ETHUSDT"], fe.params)
    cut = len(s) - 500
    warm_x, _ = fe.batch(s.slice(0, cut), state=bank.states[1])
    rows = np.array([1], dtype=np.int64)
    live = [fe.on_close(bank, rows, s.open_time[i:i + 1], s.open[i:i + 1], s.high[i:i + 1],
                        s.low[i:i + 1], s.close[i:i + 1], s.volume[i:i + 1])[1][0] for i in range(cut, len(s))]
    np.testing.assert_array_equal(np.vstack([warm_x, np.array(live)]), batch["ETHUSDT"][0])
    assert np.isnan(fe.rows(bank.states, np.array([0], dtype=np.int64))).all()


def test_inputs_of_other_dtypes_are_coerced_not_recompiled(series: dict[str, KlineSeries]) -> None:
    """Python lists, int32 rows and Python scalars give the same state as float64/int64 arrays."""
    s = series["XRPUSDT"].slice(0, 300)
    typed, loose = EngineBank(["XRPUSDT"]), EngineBank(["XRPUSDT"])
    single = SymbolEngine()
    for i in range(len(s)):
        args = (s.open_time[i:i + 1], s.open[i:i + 1], s.high[i:i + 1], s.low[i:i + 1], s.close[i:i + 1],
                s.volume[i:i + 1])
        typed.update(np.zeros(1, dtype=np.int64), *args)
        loose.update(np.zeros(1, dtype=np.int32), *[a.tolist() for a in args])
        single.update(*[a.tolist()[0] for a in args])
    assert np.isfinite(typed.states).sum() > 1000
    np.testing.assert_array_equal(loose.states, typed.states)
    np.testing.assert_array_equal(single.state, typed.states[0])


@pytest.mark.parametrize("bad", [{"h": float("nan")}, {"low": float("inf")}, {"h": 0.0}, {"v": -1.0}])
def test_bad_candles_are_rejected_before_any_state_changes(series: dict[str, KlineSeries],
                                                           bad: dict[str, float]) -> None:
    """A NaN/inf price, high below low or negative volume raises DataRejected and changes nothing."""
    s = series["BTCUSDT"]
    candle = {"o": s.open[0], "h": s.high[0], "low": s.low[0], "c": s.close[0], "v": s.volume[0], **bad}
    bank, eng = EngineBank(["A", "B"]), SymbolEngine()
    before = bank.states.copy()
    with pytest.raises(DataRejected, match="bad_candle"):
        bank.update(np.array([0, 1]), np.array([s.open_time[0]] * 2),
                    *[np.array([getattr(s, f)[0], x]) for f, x in
                      zip(("open", "high", "low", "close", "volume"), candle.values(), strict=True)])
    with pytest.raises(DataRejected, match="bad_candle"):
        eng.update(int(s.open_time[0]), *candle.values())
    np.testing.assert_array_equal(bank.states, before)
    np.testing.assert_array_equal(eng.state, SymbolEngine().state)


def test_unknown_bank_rows_are_rejected(series: dict[str, KlineSeries]) -> None:
    """A row index outside the bank raises DataRejected instead of writing out of bounds."""
    s = series["BTCUSDT"]
    with pytest.raises(DataRejected, match="unknown_row"):
        EngineBank(["A"]).update(np.array([1]), s.open_time[:1], s.open[:1], s.high[:1], s.low[:1],
                                 s.close[:1], s.volume[:1])
