"""ICTScalper on real Binance 1m candles: the rules per row, causality, one signal per setup, the model gate."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, read_klines
from smc_quant.domain.trading import Signal
from smc_quant.features import FEATURE_SCHEMA, N_FEATURES, FeatureEngineer
from smc_quant.smc import EngineBank
from smc_quant.strategy import BAR_MS, ICTScalper, ScalperConfig, batch_break_times, find_setups

F64 = npt.NDArray[np.float64]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "LTCUSDT")
COL = {n: i for i, n in enumerate(FEATURE_SCHEMA.names)}
CFG = ScalperConfig()


@pytest.fixture(scope="module")
def real(shared_data: Path) -> dict[str, tuple[KlineSeries, F64]]:
    """Six real symbols, 2023-07-03 → 2023-08-02 (30 days of 1m candles), with their feature rows."""
    out = {}
    for sym in SYMBOLS:
        s = read_klines(shared_data / KLINES_2023_1M / f"{sym}.csv.gz").slice(0, 43_200)
        out[sym] = (s, FeatureEngineer().batch(s)[0])
    return out


def _rule(row: F64, cfg: ScalperConfig) -> int:
    """The entry rules of one row in plain Python: +1 long, −1 short, 0 none (reference for find_setups)."""
    def f(name: str) -> float:
        return float(row[COL[name]])

    breaks = [v for v in (f("bars_since_bos"), f("bars_since_choch")) if not math.isnan(v)]
    if not breaks or not (f("atr_pct") > 0 and math.isfinite(f("atr_pct"))):
        return 0
    b = min(breaks)
    for d, sweep, zones in ((1, "bars_since_sweep_low", ("bull_fvg_dist_atr", "bull_ob_dist_atr")),
                            (-1, "bars_since_sweep_high", ("bear_fvg_dist_atr", "bear_ob_dist_atr"))):
        s = f(sweep)
        if math.isnan(s) or not 0 <= s <= cfg.sweep_window or f("trend_1m") != d:
            continue
        if not 0 < s - b <= cfg.structure_window:
            continue
        if not any(abs(f(z)) <= cfg.zone_tolerance_atr for z in zones if not math.isnan(f(z))):
            continue
        if any(math.isnan(t) or t != d for t in (f("trend_15m"), f("trend_1h"))):  # known and with the trade
            continue
        return d
    return 0


def test_setups_exist_on_both_sides_of_real_data(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """Over 30 days of six real symbols the rules fire for longs and shorts, at a scalper's rate, not every bar."""
    longs = shorts = rows = 0
    for _, x in real.values():
        st = find_setups(x, CFG)
        longs += int((st.sides == 1).sum())
        shorts += int((st.sides == -1).sum())
        rows += x.shape[0]
    assert longs > 0 and shorts > 0
    assert longs + shorts < rows // 50


@pytest.mark.parametrize("cfg", [CFG, ScalperConfig(zone_tolerance_atr=0.5, sweep_window=60)])
def test_find_setups_equals_the_rules_row_by_row(real: dict[str, tuple[KlineSeries, F64]],
                                                 cfg: ScalperConfig) -> None:
    """Every setup row satisfies every rule and every other row fails one (plain-Python recomputation)."""
    for _, x in real.values():
        st = find_setups(x, cfg)
        expected = np.array([_rule(row, cfg) for row in x])
        got = np.zeros(x.shape[0], dtype=np.int64)
        got[st.rows] = st.sides
        assert np.array_equal(got, expected)


def test_exits_follow_the_atr_formula(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """stop% = clamp(1.5 × atr%, 0.3, 2) and target% = 1.5 × stop% for every setup; break age is the latest break."""
    x = real["SOLUSDT"][1]
    st = find_setups(x, CFG)
    assert len(st) > 0
    for k, i in enumerate(st.rows):
        stop = min(max(1.5 * x[i, COL["atr_pct"]], 0.3), 2.0)
        assert st.stop_pct[k] == pytest.approx(stop)
        assert st.target_pct[k] == pytest.approx(1.5 * stop)
        assert st.break_bars[k] == np.nanmin(x[i, [COL["bars_since_bos"], COL["bars_since_choch"]]])


def test_find_setups_is_causal(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """find_setups on the rows before t equals the full run restricted to rows before t."""
    _, x = real["BTCUSDT"]
    full = find_setups(x, CFG)
    for t in (1, 5_000, 17_321, 30_000, x.shape[0] - 1):
        part = find_setups(x[:t], CFG)
        keep = full.rows < t
        assert np.array_equal(part.rows, full.rows[keep])
        assert np.array_equal(part.sides, full.sides[keep])
        assert np.array_equal(part.stop_pct, full.stop_pct[keep])


def _replay(real: dict[str, tuple[KlineSeries, F64]], scalper: ICTScalper, conf: float | None,
            minutes: int | None = None) -> list[Signal]:
    """Feed the scalper minute by minute (real open times; every symbol with that minute in one batch)."""
    signals = []
    index = {s: {int(t): i for i, t in enumerate(series.open_time)} for s, (series, _) in real.items()}
    for minute in sorted(set().union(*index.values()))[:minutes]:
        syms = [s for s in real if minute in index[s]]
        rows = [index[s][minute] for s in syms]
        ot = np.full(len(syms), minute, dtype=np.int64)
        x = np.stack([real[s][1][i] for s, i in zip(syms, rows, strict=True)])
        p = None if conf is None else np.full(len(syms), conf)
        closes = {s: Decimal(repr(float(real[s][0].close[i]))) for s, i in zip(syms, rows, strict=True)}
        signals += scalper.on_batch(syms, ot, x, p, model_version=7, close_prices=closes, now_ms=minute + BAR_MS)
    return signals


def test_minute_by_minute_replay_yields_one_signal_per_setup_key(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """Live batches give exactly one signal per (symbol, side, break bar), with the batch run's exits and the close."""
    keys: dict[str, int] = {}
    for sym, (s, x) in real.items():
        st = find_setups(x, CFG)
        for k, i in enumerate(st.rows):
            side = "LONG" if st.sides[k] > 0 else "SHORT"
            key = f"{sym}:{side}:{int(s.open_time[i]) - int(st.break_bars[k]) * BAR_MS}"
            keys.setdefault(key, int(i))  # first row of each setup
    scalper = ICTScalper(CFG)
    signals = _replay(real, scalper, 0.9)
    assert sorted(sig.signal_id for sig in signals) == sorted(keys)
    for sig in signals:
        s, x = real[sig.symbol]
        i = keys[sig.signal_id]
        assert sig.open_time == s.open_time[i]
        assert sig.price == Decimal(repr(float(s.close[i])))
        assert np.array_equal(np.array(sig.features), x[i], equal_nan=True)
        assert sig.stop_pct == pytest.approx(min(max(1.5 * x[i, COL["atr_pct"]], 0.3), 2.0))
        assert sig.confidence == 0.9 and sig.model_version == 7 and sig.schema_version == FEATURE_SCHEMA.version
        assert sig.setup.startswith("sweep>") and sig.setup.endswith(sig.signal_id.rsplit(":", 1)[1])
    assert scalper.stats.duplicates > 0  # setups lasting several bars were seen again and suppressed
    assert scalper.remembered <= len(real) * 2 * (CFG.sweep_window + 2)  # bounded by the age pruning


def test_no_model_or_low_confidence_gives_no_signal(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """Without a model nothing is emitted; at a confidence below 0.55 neither."""
    none = ICTScalper(CFG)
    assert _replay(real, none, None, 15_000) == []
    assert none.stats.unscored_batches == none.stats.batches > 0
    assert none.stats.setups > 0  # seen, with no model to score them
    low = ICTScalper(CFG)
    assert _replay(real, low, 0.5499, 15_000) == []
    assert low.stats.below_confidence == low.stats.setups > 0
    m = low.stats.metrics()
    assert m["strategy_best_confidence"] == 0.5499 and m["strategy_setups"] == float(low.stats.setups)
    assert none.stats.metrics()["strategy_best_confidence"] == 0.0


def test_a_setup_below_threshold_fires_later_when_confidence_rises(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """A setup refused on its first bar fires on a later bar of the same window, once, with the same id."""
    s, x = real["SOLUSDT"]
    st = find_setups(x, CFG)
    ot = s.open_time[st.rows] - st.break_bars.astype(np.int64) * BAR_MS
    multi = [k for k in range(len(st) - 1) if ot[k] == ot[k + 1] and st.sides[k] == st.sides[k + 1]]
    assert multi, "need a setup spanning two bars"
    k = multi[0]
    scalper = ICTScalper(CFG)
    rows = [int(st.rows[k]), int(st.rows[k + 1]), int(st.rows[k + 1])]
    got = []
    for i, conf in zip(rows, (0.4, 0.8, 0.95), strict=True):
        got += scalper.on_batch(["SOLUSDT"], s.open_time[i:i + 1], x[i:i + 1], np.array([conf]),
                                close_prices=[Decimal("20.5")], now_ms=int(s.open_time[i]) + BAR_MS)
    assert [g.open_time for g in got] == [int(s.open_time[rows[1]])]
    assert got[0].confidence == 0.8 and got[0].price == Decimal("20.5")


def test_bad_input_is_refused_clearly() -> None:
    """Wrong shapes raise; a bad close or a NaN score is a counted rejection; a bad config raises."""
    scalper = ICTScalper(CFG)
    with pytest.raises(ValueError, match="shapes"):
        scalper.on_batch(["A"], np.array([0]), np.zeros((1, 3)), np.array([0.9]), close_prices=[Decimal(1)], now_ms=0)
    with pytest.raises(ValueError, match="invalid ScalperConfig"):
        ScalperConfig(min_stop_pct=3.0, max_stop_pct=2.0)
    with pytest.raises(ValueError, match="windows"):
        ScalperConfig(sweep_window=0)
    row = np.full((2, N_FEATURES), np.nan)
    for r, sym in enumerate(("A", "B")):  # a textbook long setup on both rows
        row[r, [COL["trend_1m"], COL["trend_15m"], COL["trend_1h"]]] = 1.0
        row[r, [COL["bars_since_bos"], COL["bars_since_sweep_low"], COL["bull_fvg_dist_atr"], COL["atr_pct"]]] = (
            2.0, 6.0, 0.0, 0.2)
        assert _rule(row[r], CFG) == 1, sym
    out = scalper.on_batch(["A", "B"], np.array([600_000, 600_000]), row, np.array([0.9, math.nan]),
                           close_prices={"A": Decimal("-1"), "B": Decimal("2")}, now_ms=660_000)
    assert out == []
    assert scalper.stats.rejected == {"bad_close": 1, "unscored": 1}
    assert scalper.stats.metrics()["strategy_rejected"] == 2.0
    assert scalper.stats.best_confidence == 0.9  # the NaN score did not count
    out = scalper.on_batch(["A"], np.array([600_000]), row[:1], np.array([0.9]), close_prices=[Decimal("3")],
                           now_ms=660_000)
    assert [o.signal_id for o in out] == ["A:LONG:480000"]
    assert out[0].setup == "sweep>bos>fvg@480000"
    assert out[0].stop_pct == pytest.approx(0.3) and out[0].target_pct == pytest.approx(0.45)


def test_an_unknown_higher_timeframe_trend_holds_no_setup(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """A restart warmed from 1500 real candles (the service's ring) leaves trend_1h unknown for hours; rows
    that pass every other rule then — here all against the full history's 1h trend — hold no setup."""
    s, full = real["BTCUSDT"]
    t0, warm = 3720, 1500
    x = FeatureEngineer().batch(s.slice(t0 - warm, t0 + 1440))[0][warm:]
    unknown = np.isnan(x[:, COL["trend_1h"]])
    assert unknown.any() and not np.isnan(full[t0:t0 + 1440, COL["trend_1h"]]).any()
    passing = []
    for d in (1, -1):  # the rows whose only unmet rule is the unknown trend
        y = x.copy()
        y[unknown, COL["trend_1h"]] = d
        st = find_setups(y, CFG)
        passing += [int(r) for r, side in zip(st.rows, st.sides, strict=True) if unknown[r] and side == d]
    assert passing, "precondition: the unknown trend is what stands between these rows and a setup"
    assert (full[t0 + np.array(passing), COL["trend_1h"]] == -x[passing, COL["trend_1m"]]).all()
    st = find_setups(x, CFG)
    assert not set(st.rows.tolist()) & set(passing)
    assert (x[st.rows, COL["trend_1h"]] == st.sides).all() and (x[st.rows, COL["trend_15m"]] == st.sides).all()
    row = np.full((2, N_FEATURES), np.nan)  # a textbook long, with one higher-timeframe trend unknown each
    row[:, [COL["trend_1m"], COL["trend_15m"], COL["trend_1h"]]] = 1.0
    row[:, [COL["bars_since_bos"], COL["bars_since_sweep_low"], COL["bull_fvg_dist_atr"], COL["atr_pct"]]] = (
        2.0, 6.0, 0.0, 0.2)
    assert len(find_setups(row, CFG)) == 2
    row[0, COL["trend_15m"]] = row[1, COL["trend_1h"]] = np.nan
    assert len(find_setups(row, CFG)) == 0


def test_a_missing_candle_does_not_make_a_setup_fire_twice(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """Real BTCUSDT with one candle of a three-bar setup missing, fed live: the row after the gap keys on the same
    break candle (kept in the engine state), so the setup fires once and is then a counted duplicate."""
    s, x = real["BTCUSDT"]
    st = find_setups(x, CFG)
    brk = batch_break_times(s.open_time, st)
    j = next(j for j in range(len(st) - 2)
             if st.rows[j + 2] == st.rows[j] + 2 and brk[j] == brk[j + 2] and st.sides[j] == st.sides[j + 2])
    r = int(st.rows[j])
    keep = np.ones(len(s), dtype=bool)
    keep[r + 1] = False  # a minute the backfill could not fetch
    gap = KlineSeries(s.symbol, s.open_time[keep], s.open[keep], s.high[keep], s.low[keep], s.close[keep],
                      s.volume[keep])
    fe = FeatureEngineer()
    bank = EngineBank([s.symbol], fe.params)
    fe.batch(gap.slice(0, r), state=bank.states[0])
    scalper, signals, one = ICTScalper(CFG), [], np.zeros(1, dtype=np.int64)
    for i in (r, r + 1):  # the setup's first row, then the row after the missing candle
        cut = slice(i, i + 1)
        _, row = fe.on_close(bank, one, gap.open_time[cut], gap.open[cut], gap.high[cut], gap.low[cut],
                             gap.close[cut], gap.volume[cut])
        assert len(find_setups(row, CFG)) == 1
        signals += scalper.on_batch([s.symbol], gap.open_time[cut], row, np.array([0.9]),
                                    close_prices=[Decimal(repr(float(gap.close[i])))], now_ms=int(gap.open_time[i]),
                                    break_open_times=fe.break_times(bank.states, one))
    side = "LONG" if st.sides[j] > 0 else "SHORT"
    assert [sig.signal_id for sig in signals] == [f"{s.symbol}:{side}:{brk[j]}"]
    assert scalper.stats.duplicates == 1


def test_a_remembered_setup_is_forgotten_only_once_it_cannot_hold(real: dict[str, tuple[KlineSeries, F64]]) -> None:
    """Memory is pruned by the setup's own rows, not by the clock: a 40-minute gap inside a setup's window does not
    make it fire again; a newer break, or the break aging past the sweep window, forgets it."""
    row = np.full((1, N_FEATURES), np.nan)  # a textbook long: break 2 bars ago, sweep 6 bars ago
    row[0, [COL["trend_1m"], COL["trend_15m"], COL["trend_1h"]]] = 1.0
    row[0, [COL["bars_since_bos"], COL["bars_since_sweep_low"], COL["bull_fvg_dist_atr"], COL["atr_pct"]]] = (
        2.0, 6.0, 0.0, 0.2)
    scalper = ICTScalper(CFG)

    def feed(t: int, b: float, sweep: float, brk: int) -> list[Signal]:
        x = row.copy()
        x[0, COL["bars_since_bos"]], x[0, COL["bars_since_sweep_low"]] = b, sweep
        return scalper.on_batch(["A"], np.array([t]), x, np.array([0.9]), close_prices=[Decimal(3)], now_ms=t,
                                break_open_times=np.array([brk]))

    t = 600_000
    assert [sig.signal_id for sig in feed(t, 2, 6, t - 2 * BAR_MS)] == ["A:LONG:480000"]
    assert feed(t + 41 * BAR_MS, 3, 7, t - 2 * BAR_MS) == []  # next candle, 40 minutes missing: same setup
    assert scalper.stats.duplicates == 1 and scalper.remembered == 1
    scalper.on_batch(["A"], np.array([t + 80 * BAR_MS]), row, None, close_prices=[Decimal(3)], now_ms=t,
                     break_open_times=np.array([t - 2 * BAR_MS]))
    assert scalper.remembered == 1  # 80 minutes on, still the same break at b = 2: it may hold, kept
    no_setup = row.copy()
    no_setup[0, COL["bars_since_bos"]] = CFG.sweep_window
    scalper.on_batch(["A"], np.array([t + 90 * BAR_MS]), no_setup, None, close_prices=[Decimal(3)], now_ms=t,
                     break_open_times=np.array([t - 2 * BAR_MS]))
    assert scalper.remembered == 0  # b ≥ sweep_window: that break can no longer hold a setup
    assert len(feed(t + 100 * BAR_MS, 2, 6, t + 98 * BAR_MS)) == 1
    scalper.on_batch(["A"], np.array([t + 101 * BAR_MS]), row, None, close_prices=[Decimal(3)], now_ms=t,
                     break_open_times=np.array([t + 100 * BAR_MS]))
    assert scalper.remembered == 0  # a newer break
