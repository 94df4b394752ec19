"""Candle readers for backtests: our CSV format, freqtrade data folders and Binance public-data dumps.

Every reader returns :class:`~smc_quant.domain.series.KlineSeries` (1m, sorted by open time, duplicates
dropped — the first row of a duplicated minute wins). Formats recognised by file name:

- ours: ``<SYMBOL>[_anything].csv[.gz]`` with the header ``open_time_ms,open,high,low,close,volume``;
- freqtrade: ``<BASE>_<QUOTE>[_<SETTLE>]-1m[-futures].feather`` (columns ``date`` (datetime, UTC) and OHLCV;
  read through polars' IPC reader, no pyarrow needed) or ``.json`` (a list of ``[ms, o, h, l, c, v]`` rows);
  ``BTC_USDT_USDT`` becomes ``BTCUSDT``;
- Binance public data (data.binance.vision): ``<SYMBOL>-1m-<YYYY-MM[-DD]>.csv`` or ``.zip`` holding one such
  CSV, twelve columns, with or without a header row (older dumps have none); an open time above 10¹⁴ is in
  microseconds (the 2025+ spot dumps) and is converted to ms. Several files of one symbol are concatenated.

A folder may be given at any depth the project uses: the shared data root (``…/shared/data``; its
``klines/binance-usdm-2023/1m`` is used), a freqtrade ``user_data/data/binance`` folder (its ``futures``
sub-folder is searched too) or a folder of files. Bad input raises :class:`BacktestDataError` naming the file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from smc_quant.datasets import KLINES_2023_1M
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.series import KlineSeries

__all__ = ["BacktestDataError", "find_kline_files", "load_folder", "parse_time", "read_binance_csv",
           "read_freqtrade", "read_ours", "symbol_of", "window"]

_OURS = re.compile(r"^([A-Z0-9]+)(?:_[^.]*)?\.csv(?:\.gz)?$")
_FREQTRADE = re.compile(r"^([A-Z0-9]+(?:_[A-Z0-9]+){1,2})-1m(?:-(?:futures|mark|spot))?\.(feather|json)$")
_BINANCE = re.compile(r"^([A-Z0-9]+)-1m-\d{4}-\d{2}(?:-\d{2})?\.(csv|zip)$")
_BINANCE_COLS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                 "taker_buy_volume", "taker_buy_quote_volume", "ignore")


class BacktestDataError(ValueError):
    """A candle file or folder the backtest cannot use; the message names it and the reason."""


def symbol_of(path: Path) -> tuple[str, str] | None:
    """``(symbol, format)`` of a 1m kline file name, format one of ``ours``/``freqtrade``/``binance``; else None."""
    name = path.name
    if m := _FREQTRADE.match(name):
        parts = m.group(1).split("_")
        return parts[0] + parts[1], "freqtrade"
    if m := _BINANCE.match(name):
        return m.group(1), "binance"
    if m := _OURS.match(name):
        return m.group(1), "ours"
    return None


def _series(symbol: str, t: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray,
            v: np.ndarray) -> KlineSeries:
    """Sorted, de-duplicated, checked columns as a series."""
    t = np.asarray(t, dtype=np.int64)
    cols = [np.asarray(a, dtype=np.float64) for a in (o, h, low, c, v)]
    order = np.argsort(t, kind="stable")
    t = t[order]
    keep = np.ones(len(t), dtype=np.bool_)
    keep[1:] = t[1:] != t[:-1]
    t = t[keep]
    cols = [a[order][keep] for a in cols]
    if len(t) and (not np.all(np.isfinite(np.stack(cols))) or np.any(t % MINUTE_MS)):
        raise BacktestDataError(f"{symbol}: non-finite prices or open times off the minute grid")
    return KlineSeries(symbol, t, *cols)


def read_ours(path: Path, symbol: str | None = None) -> KlineSeries:
    """Our CSV(.gz) format (see the module docstring)."""
    try:
        frame = pl.read_csv(path, schema_overrides={"open_time_ms": pl.Int64, "open": pl.Float64,
                                                    "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                                                    "volume": pl.Float64})
        cols = [frame[c].to_numpy() for c in ("open_time_ms", "open", "high", "low", "close", "volume")]
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BacktestDataError(f"{path}: not a kline CSV ({type(exc).__name__}: {exc})") from exc
    name = symbol or (symbol_of(path) or (path.name.split(".")[0].split("_")[0], ""))[0]
    return _series(name, *cols)


def _binance_frame(raw: bytes, path: Path) -> list[np.ndarray]:
    first = raw.split(b"\n", 1)[0]
    header = not first[:1].isdigit()
    try:
        frame = pl.read_csv(io.BytesIO(raw), has_header=header, new_columns=list(_BINANCE_COLS),
                            schema_overrides={c: pl.Float64 for c in _BINANCE_COLS[1:6]} | {"open_time": pl.Int64},
                            columns=list(range(6)))
    except pl.exceptions.PolarsError as exc:
        raise BacktestDataError(f"{path}: not a Binance kline CSV ({exc})") from exc
    cols = [frame[c].to_numpy() for c in _BINANCE_COLS[:6]]
    t = cols[0].astype(np.int64)
    cols[0] = np.where(t > 10**14, t // 1000, t)  # microsecond dumps → ms
    return cols


def read_binance_csv(paths: Sequence[Path], symbol: str) -> KlineSeries:
    """Binance public-data kline dumps (``.csv`` or ``.zip``, with or without header) of one symbol."""
    parts: list[list[np.ndarray]] = []
    for path in paths:
        if path.suffix == ".zip":
            try:
                with zipfile.ZipFile(path) as zf:
                    names = [n for n in zf.namelist() if n.endswith(".csv")]
                    if len(names) != 1:
                        raise BacktestDataError(f"{path}: expected one CSV inside, found {len(names)}")
                    raw = zf.read(names[0])
            except zipfile.BadZipFile as exc:
                raise BacktestDataError(f"{path}: bad zip ({exc})") from exc
        else:
            raw = path.read_bytes()
        parts.append(_binance_frame(raw, path))
    if not parts:
        raise BacktestDataError(f"{symbol}: no files")
    return _series(symbol, *(np.concatenate([p[k] for p in parts]) for k in range(6)))


def read_freqtrade(path: Path, symbol: str | None = None) -> KlineSeries:
    """A freqtrade candle file (feather or json, see the module docstring)."""
    name = symbol or (symbol_of(path) or ("", ""))[0] or path.stem
    try:
        if path.suffix == ".json":
            rows = json.loads(path.read_bytes())
            arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
            return _series(name, arr[:, 0].astype(np.int64), *(arr[:, k] for k in range(1, 6)))
        frame = pl.read_ipc(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise BacktestDataError(f"{path}: not a freqtrade candle file ({type(exc).__name__}: {exc})") from exc
    date = frame["date"]
    if date.dtype == pl.Datetime or isinstance(date.dtype, pl.Datetime):
        t = date.dt.epoch("ms").to_numpy()
    else:
        t = date.cast(pl.Int64).to_numpy()
    return _series(name, t, *(frame[c].cast(pl.Float64).to_numpy() for c in ("open", "high", "low", "close",
                                                                              "volume")))


def find_kline_files(folder: Path) -> dict[str, tuple[str, list[Path]]]:
    """Symbol → (format, files) of every recognised 1m kline file of ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if (folder / KLINES_2023_1M).is_dir():
        folder = folder / KLINES_2023_1M
    if not folder.is_dir():
        raise BacktestDataError(f"{folder}: not a folder")
    candidates: list[Path] = sorted(p for p in folder.iterdir() if p.is_file())
    if (folder / "futures").is_dir():
        candidates += sorted(p for p in (folder / "futures").iterdir() if p.is_file())
    found: dict[str, tuple[str, list[Path]]] = {}
    for path in candidates:
        parsed = symbol_of(path)
        if parsed is None:
            continue
        sym, fmt = parsed
        if sym in found and found[sym][0] != fmt:
            continue  # the first format seen for a symbol wins (a folder should hold one)
        found.setdefault(sym, (fmt, []))[1].append(path)
    if not found:
        raise BacktestDataError(f"{folder}: no 1m kline files (ours, freqtrade or Binance public data)")
    return found


def load_folder(folder: Path, symbols: Iterable[str] | None = None) -> dict[str, KlineSeries]:
    """Every (or the listed) symbol's 1m series of ``folder``, keyed and ordered by symbol."""
    found = find_kline_files(folder)
    wanted = sorted(found) if symbols is None else [s.upper() for s in symbols]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise BacktestDataError(f"{folder}: no 1m candles for {', '.join(missing)}")
    out: dict[str, KlineSeries] = {}
    for sym in wanted:
        fmt, paths = found[sym]
        if fmt == "binance":
            out[sym] = read_binance_csv(paths, sym)
        elif fmt == "freqtrade":
            out[sym] = read_freqtrade(paths[0], sym)
        else:
            out[sym] = _series(sym, *_concat([read_ours(p, sym) for p in paths]))
    return out


def _concat(parts: Sequence[KlineSeries]) -> list[np.ndarray]:
    return [np.concatenate([getattr(s, f) for s in parts])
            for f in ("open_time", "open", "high", "low", "close", "volume")]


def parse_time(text: str | None) -> int | None:
    """``YYYY-MM-DD[THH:MM]`` (UTC) or epoch milliseconds → epoch ms; None stays None."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BacktestDataError(f"bad time {text!r}: use YYYY-MM-DD[THH:MM] (UTC) or epoch ms") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def window(series: KlineSeries, start_ms: int | None, end_ms: int | None) -> KlineSeries:
    """Rows with ``start_ms ≤ open_time < end_ms`` (either bound optional)."""
    lo = 0 if start_ms is None else int(np.searchsorted(series.open_time, start_ms, side="left"))
    hi = len(series) if end_ms is None else int(np.searchsorted(series.open_time, end_ms, side="left"))
    return series.slice(lo, hi)
