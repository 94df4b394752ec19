"""The replayed market: which symbols are served, which real series each one shows, and its candles.

Without mapping every served symbol shows its own real series. With ``map_to_exchange_info`` every
symbol of the real exchangeInfo is served: a symbol that has a series of its own shows it, every
other symbol shows one of the real series, assigned round-robin in exchangeInfo order (so e.g.
``1000PEPEUSDT`` may carry BTCUSDT's 2023 prices). Mapped data is real data under another name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from smc_quant.datasets import KlineSeries, derived_fields, load_exchange_info, read_klines
from smc_quant.domain.candles import MINUTE_MS, Candle
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.frames import Bar, Precision
from smc_quant.exchange.exchange_info import borrowed_filters, candle_decimals


def _series_files(folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    return {p.name.split(".")[0].split("_")[0]: p for p in files}


class Market:
    """Served symbols, their source series, wire precision and exchangeInfo entries."""

    def __init__(self, config: EmulatorConfig) -> None:
        info = load_exchange_info(config.data_dir)
        self._info = info
        entries = {s["symbol"]: s for s in info["symbols"]}
        files = _series_files(config.data_dir / config.interval_folder)
        wanted = tuple(s.upper() for s in config.symbols)
        if config.map_to_exchange_info:
            served = [s for s in entries if not wanted or s in wanted]
            sources = sorted(files)
            mapping, k = {}, 0
            for sym in served:
                if sym in files:
                    mapping[sym] = sym
                else:
                    mapping[sym], k = sources[k % len(sources)], k + 1
        else:
            unknown = [s for s in wanted if s not in files]
            if unknown:
                raise ValueError(f"no kline data for {', '.join(unknown)} in {config.interval_folder}")
            mapping = {s: s for s in (wanted or tuple(files))}
        self.source_of: dict[str, str] = mapping
        self.symbols: tuple[str, ...] = tuple(mapping)
        self.series: dict[str, KlineSeries] = {
            src: read_klines(files[src], src) for src in sorted(set(mapping.values()))
        }
        self.precision = {src: self._precision(src, entries) for src in self.series}
        self._entries = {sym: self._entry(sym, entries) for sym in self.symbols}
        self.start_ms, self.n_minutes = self._window(config)

    def _precision(self, src: str, entries: dict[str, Any]) -> Precision:
        if src in entries:
            return Precision(int(entries[src]["pricePrecision"]), int(entries[src]["quantityPrecision"]))
        return Precision(*candle_decimals(self.series[src]))

    def _entry(self, sym: str, entries: dict[str, Any]) -> dict[str, Any]:
        if sym in entries:
            return dict(entries[sym])
        template: dict[str, Any] = copy.deepcopy(entries.get("BTCUSDT") or next(iter(entries.values())))
        prec = self.precision[self.source_of[sym]]
        base = sym.removesuffix("USDT")
        template.update(
            symbol=sym, pair=sym, baseAsset=base, pricePrecision=prec.price, quantityPrecision=prec.qty
        )
        template["filters"] = borrowed_filters(template["filters"], self.series[self.source_of[sym]])
        return template

    def _window(self, config: EmulatorConfig) -> tuple[int, int]:
        firsts = [int(s.open_time[0]) for s in self.series.values()]
        lasts = [int(s.open_time[-1]) for s in self.series.values()]
        if config.start_time_ms is not None:
            start = config.start_time_ms
        else:
            start = max(firsts) + config.history_minutes * MINUTE_MS
        start -= start % MINUTE_MS
        n = max(0, (min(lasts) - start) // MINUTE_MS + 1)
        if config.max_minutes is not None:
            n = min(n, config.max_minutes)
        return start, n

    def index(self, src: str, open_ms: int) -> int | None:
        """Row of ``open_ms`` in source series ``src``, or ``None`` where the data has no candle."""
        s = self.series[src]
        i = (open_ms - int(s.open_time[0])) // MINUTE_MS
        if 0 <= i < len(s) and int(s.open_time[i]) == open_ms:
            return int(i)
        j = int(np.searchsorted(s.open_time, open_ms))
        return j if j < len(s) and int(s.open_time[j]) == open_ms else None

    def bar(self, src: str, i: int) -> Bar:
        """Row ``i`` of series ``src`` as a bar."""
        s = self.series[src]
        return Bar(float(s.open[i]), float(s.high[i]), float(s.low[i]), float(s.close[i]), float(s.volume[i]))

    def candle(self, symbol: str, open_ms: int) -> Candle | None:
        """The real candle ``symbol`` shows at ``open_ms``, with the derived fields."""
        src = self.source_of[symbol]
        i = self.index(src, open_ms)
        if i is None:
            return None
        b = self.bar(src, i)
        q, n, vb, qb = derived_fields(b.open, b.high, b.low, b.close, b.volume)
        return Candle(symbol, "1m", open_ms, b.open, b.high, b.low, b.close, b.volume, q, n, vb, qb)

    def schedule_delisting(self, symbol: str, at_ms: int) -> None:
        """Announce ``symbol``'s delisting as Binance does: its ``deliveryDate`` becomes the delisting time (the
        status stays TRADING until then)."""
        self._entries[symbol] = {**self._entries[symbol], "deliveryDate": at_ms}

    def settle_delisting(self, symbol: str) -> None:
        """The delisting took place: ``symbol`` is listed as SETTLING, as the real document lists delisted
        perpetuals (its candles keep replaying: the emulator does not stop a series)."""
        self._entries[symbol] = {**self._entries[symbol], "status": "SETTLING"}

    def list_again(self, symbol: str) -> None:
        """``symbol`` trades (again): status TRADING, as when a halt is lifted or an announced listing opens."""
        self._entries[symbol] = {**self._entries[symbol], "status": "TRADING"}

    def hold_listing(self, symbol: str) -> None:
        """``symbol`` is announced but does not trade yet (status PENDING_TRADING, as Binance lists an upcoming
        perpetual): a client's universe leaves it out until :meth:`list_again` opens it (its candles replay all
        along: the emulator does not stop a series)."""
        self._entries[symbol] = {**self._entries[symbol], "status": "PENDING_TRADING"}

    def set_filter(self, symbol: str, filter_type: str, **values: str) -> list[dict[str, Any]]:
        """Change fields of one of ``symbol``'s exchangeInfo filters (e.g. ``PRICE_FILTER`` ``tickSize``), as
        Binance does from time to time; returns the symbol's new filter list. Only the served document changes:
        :meth:`Emulator.set_filter` also makes the account check orders against it."""
        entry = copy.deepcopy(self._entries[symbol])
        found = [f for f in entry["filters"] if f["filterType"] == filter_type]
        if not found:
            raise KeyError(f"{symbol} has no {filter_type}")
        found[0].update(values)
        self._entries[symbol] = entry
        return list(entry["filters"])

    def exchange_info(self, server_time: int, weight_limit: int) -> dict[str, Any]:
        """The real exchangeInfo document restricted to (or extended with) the served symbols."""
        out = {k: v for k, v in self._info.items() if k != "symbols"}
        out["serverTime"] = server_time
        out["rateLimits"] = [
            dict(r, limit=weight_limit) if r["rateLimitType"] == "REQUEST_WEIGHT" else r
            for r in self._info["rateLimits"]
        ]
        out["symbols"] = [self._entries[s] for s in self.symbols]
        return out
