"""Candle readers: real 2023 candles written in each foreign format (freqtrade feather/json, Binance public-data
CSV with and without header, zipped, microsecond times) read back equal to the source; bad input → a clear error."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from smc_quant.backtest.data import (
    BacktestDataError,
    find_kline_files,
    load_folder,
    parse_time,
    read_binance_csv,
    read_freqtrade,
    symbol_of,
    window,
)
from smc_quant.datasets import KLINES_2023_1M, load_klines
from smc_quant.domain.series import KlineSeries

N = 3000


@pytest.fixture(scope="module")
def real(shared_data: Path) -> KlineSeries:
    return load_klines()["SOLUSDT"].slice(0, N)


def _equal(a: KlineSeries, b: KlineSeries) -> None:
    assert a.symbol == b.symbol
    for f in ("open_time", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def _binance_lines(s: KlineSeries, time_scale: int = 1) -> list[str]:
    return [f"{int(t) * time_scale},{float(o)!r},{float(h)!r},{float(lo)!r},{float(c)!r},{float(v)!r},"
            f"{int(t) + 59_999},0,1,0,0,0"
            for t, o, h, lo, c, v in zip(s.open_time, s.open, s.high, s.low, s.close, s.volume, strict=True)]


def test_symbol_names_of_every_format() -> None:
    assert symbol_of(Path("BTC_USDT_USDT-1m-futures.feather")) == ("BTCUSDT", "freqtrade")
    assert symbol_of(Path("ETH_USDT-1m.json")) == ("ETHUSDT", "freqtrade")
    assert symbol_of(Path("SOLUSDT-1m-2023-07.zip")) == ("SOLUSDT", "binance")
    assert symbol_of(Path("SOLUSDT-1m-2023-07-03.csv")) == ("SOLUSDT", "binance")
    assert symbol_of(Path("XRPUSDT.csv.gz")) == ("XRPUSDT", "ours")
    assert symbol_of(Path("BTC_USDT_USDT-5m-futures.feather")) is None, "only 1m candles"
    assert symbol_of(Path("notes.txt")) is None


def test_freqtrade_feather_and_json_round_trip(real: KlineSeries, tmp_path: Path) -> None:
    frame = pl.DataFrame({"date": pl.Series(real.open_time).cast(pl.Datetime("ms", "UTC")), "open": real.open,
                          "high": real.high, "low": real.low, "close": real.close, "volume": real.volume})
    feather = tmp_path / "SOL_USDT_USDT-1m-futures.feather"
    frame.write_ipc(feather)
    _equal(read_freqtrade(feather), real)
    js = tmp_path / "SOL_USDT_USDT-1m-futures.json"
    rows = [[int(t), o, h, lo, c, v] for t, o, h, lo, c, v in zip(real.open_time, real.open, real.high, real.low,
                                                                   real.close, real.volume, strict=True)]
    js.write_text(json.dumps(rows))
    _equal(read_freqtrade(js), real)
    futures = tmp_path / "ft" / "futures"
    futures.mkdir(parents=True)
    frame.write_ipc(futures / feather.name)
    _equal(load_folder(tmp_path / "ft")["SOLUSDT"], real)


def test_binance_dumps_with_and_without_header_zipped_and_in_microseconds(real: KlineSeries, tmp_path: Path) -> None:
    head = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume," \
           "taker_buy_quote_volume,ignore\n"
    lines = _binance_lines(real)
    half = len(lines) // 2
    a, b = tmp_path / "SOLUSDT-1m-2023-07.csv", tmp_path / "SOLUSDT-1m-2023-08.zip"
    a.write_text("\n".join(lines[:half]) + "\n")  # old dumps: no header
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SOLUSDT-1m-2023-08.csv", head + "\n".join(lines[half:]) + "\n")
    b.write_bytes(buf.getvalue())
    _equal(read_binance_csv([b, a], "SOLUSDT"), real)
    _equal(load_folder(tmp_path)["SOLUSDT"], real)
    micro = tmp_path / "micro"
    micro.mkdir()
    (micro / "SOLUSDT-1m-2025-01.csv").write_text(head + "\n".join(_binance_lines(real, 1000)) + "\n")
    _equal(load_folder(micro)["SOLUSDT"], real)


def test_our_folder_resolves_from_the_data_root_and_filters_symbols(shared_data: Path) -> None:
    found = find_kline_files(shared_data)
    assert len(found) == 18 and all(fmt == "ours" for fmt, _ in found.values())
    got = load_folder(shared_data, ["btcusdt", "ETHUSDT"])
    assert list(got) == ["BTCUSDT", "ETHUSDT"]
    direct = load_folder(shared_data / KLINES_2023_1M, ["BTCUSDT"])
    _equal(got["BTCUSDT"], direct["BTCUSDT"])


def test_duplicates_dropped_and_order_restored(real: KlineSeries, tmp_path: Path) -> None:
    lines = _binance_lines(real.slice(0, 100))
    (tmp_path / "SOLUSDT-1m-2023-07.csv").write_text("\n".join(lines[50:] + lines[:60]) + "\n")
    _equal(load_folder(tmp_path)["SOLUSDT"], real.slice(0, 100))


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BacktestDataError, match="no 1m kline files"):
        load_folder(tmp_path)
    (tmp_path / "SOLUSDT-1m-2023-07.csv").write_text("this,is\nnot,candles\n")
    with pytest.raises(BacktestDataError, match=r"SOLUSDT-1m-2023-07\.csv"):
        load_folder(tmp_path)
    with pytest.raises(BacktestDataError, match="no 1m candles for DOGEUSDT"):
        load_folder(tmp_path, ["DOGEUSDT"])
    (tmp_path / "SOLUSDT-1m-2023-07.csv").write_text("1688342400001,1,1,1,1,1,0,0,0,0,0,0\n")
    with pytest.raises(BacktestDataError, match="minute grid"):
        load_folder(tmp_path)
    with pytest.raises(BacktestDataError, match="bad time"):
        parse_time("yesterday")
    with pytest.raises(BacktestDataError, match="not a folder"):
        find_kline_files(tmp_path / "missing")


def test_time_window(real: KlineSeries) -> None:
    assert parse_time("2023-07-03") == 1_688_342_400_000
    assert parse_time("2023-07-03T00:05") == 1_688_342_700_000
    assert parse_time("1688342400000") == 1_688_342_400_000 and parse_time(None) is None
    lo, hi = int(real.open_time[10]), int(real.open_time[20])
    w = window(real, lo, hi)
    assert len(w) == 10 and int(w.open_time[0]) == lo and int(w.open_time[-1]) < hi
