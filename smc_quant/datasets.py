"""Loading the real market data kept beside the project (``../shared/data`` by default).

The directory comes from ``SMC_DATA_DIR`` (default ``../shared/data`` relative to the working
directory). Kline files are CSV (optionally gzip) with the header
``open_time_ms,open,high,low,close,volume``.

The files carry OHLCV only. Where the wire protocol needs the other kline fields (quote volume,
trade count, taker-buy volumes) :func:`derived_fields` derives them deterministically from the real
OHLCV, and everything that says so (emulator, tests) uses this one function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from smc_quant.domain.series import KlineSeries

__all__ = ["KlineSeries", "data_dir", "derived_fields", "kline_files", "load_exchange_info", "load_klines",
           "read_klines"]

DEFAULT_DATA_DIR = "../shared/data"
KLINES_2023_1M = "klines/binance-usdm-2023/1m"
EXCHANGE_INFO = "exchange/binance-usdm-exchangeInfo-2024-10-02.json"
LEVERAGE_TIERS = "exchange/binance-leverage-tiers-2024-10.ccxt.json"



def data_dir() -> Path:
    """The shared data directory, from ``SMC_DATA_DIR`` or the default."""
    return Path(os.environ.get("SMC_DATA_DIR", DEFAULT_DATA_DIR)).resolve()


def read_klines(path: Path, symbol: str | None = None) -> KlineSeries:
    """Read one kline CSV(.gz) file; the symbol defaults to the file name's first ``_``/``.`` part."""
    frame = pl.read_csv(
        path,
        schema_overrides={"open_time_ms": pl.Int64, "open": pl.Float64, "high": pl.Float64,
                          "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64},
    ).sort("open_time_ms")
    name = symbol or path.name.split(".")[0].split("_")[0]
    return KlineSeries(
        name,
        frame["open_time_ms"].to_numpy().astype(np.int64),
        frame["open"].to_numpy().astype(np.float64),
        frame["high"].to_numpy().astype(np.float64),
        frame["low"].to_numpy().astype(np.float64),
        frame["close"].to_numpy().astype(np.float64),
        frame["volume"].to_numpy().astype(np.float64),
    )


def kline_files(folder: str = KLINES_2023_1M, root: Path | None = None) -> list[Path]:
    """Sorted kline files of one data folder."""
    base = (root or data_dir()) / folder
    return sorted(p for p in base.iterdir() if p.name.endswith((".csv", ".csv.gz")))


def load_klines(folder: str = KLINES_2023_1M, root: Path | None = None) -> dict[str, KlineSeries]:
    """Every series of a data folder, keyed by symbol."""
    series = (read_klines(p) for p in kline_files(folder, root))
    return {s.symbol: s for s in series}


def load_exchange_info(root: Path | None = None) -> dict[str, Any]:
    """The real ``GET /fapi/v1/exchangeInfo`` response kept in the data folder."""
    with open((root or data_dir()) / EXCHANGE_INFO, "rb") as fh:
        info: dict[str, Any] = json.load(fh)
    return info


def derived_fields(o: float, h: float, low: float, c: float, v: float) -> tuple[float, int, float, float]:
    """Quote volume, trade count, taker-buy base and quote volume derived from real OHLCV.

    quote_volume = v * (h + l + c) / 3 (typical price); trades = max(1, round(v ** 0.5 * 10)) when
    v > 0 else 0; taker-buy base = v * clamp((c - l) / (h - l), 0.05, 0.95) (0.5 when h == l);
    taker-buy quote = taker-buy base * typical price. Rounded to 8 decimals like the wire.
    """
    typical = (h + low + c) / 3.0
    share = 0.5 if h == low else min(0.95, max(0.05, (c - low) / (h - low)))
    taker = v * share
    trades = round((v**0.5) * 10) if v > 0 else 0
    return round(v * typical, 8), max(trades, 1 if v > 0 else 0), round(taker, 8), round(taker * typical, 8)
