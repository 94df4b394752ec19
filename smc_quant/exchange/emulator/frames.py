"""Kline payloads as Binance sends them, built once per (symbol, minute, update) as WebSocket frames.

Pure: numbers to wire strings, the deterministic in-candle path, and server-to-client text frames
(unmasked, FIN set) ready to be written to any number of sockets unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from smc_quant.datasets import derived_fields


def fmt(x: float, decimals: int) -> str:
    """``x`` with ``decimals`` digits like Binance, or the shortest exact form if that would round it."""
    text = f"{x:.{decimals}f}"
    if float(text) == x:
        return text
    short = repr(x)
    return format(Decimal(short), "f") if "e" in short or "E" in short else short


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


@dataclass(frozen=True, slots=True)
class Bar:
    """An OHLCV state of one candle: partial (in-candle update) or the real, final one."""

    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Precision:
    """Decimals used on the wire for prices and base volumes of one source series."""

    price: int
    qty: int


def in_candle_path(bar: Bar, updates: int, prec: Precision) -> list[Bar]:
    """``updates`` partial states of ``bar`` and then ``bar`` itself.

    The price walks open → low → high → close (open → high → low → close when the candle is
    bearish), so every partial stays inside the real range, high/low only widen, and the volume grows
    linearly to the real volume. Deterministic.
    """
    first, second = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
    points = (bar.open, first, second, bar.close)
    out: list[Bar] = []
    for u in range(1, updates + 1):
        frac = u / (updates + 1)
        seg = min(int(frac * 3), 2)
        local = frac * 3 - seg
        price = points[seg] + (points[seg + 1] - points[seg]) * local
        price = min(max(round(price, prec.price), bar.low), bar.high)
        seen = (*points[: seg + 1], price)
        volume = min(round(bar.volume * frac, prec.qty), bar.volume)
        out.append(Bar(bar.open, max(seen), min(seen), price, volume))
    out.append(bar)
    return out


@dataclass(frozen=True, slots=True)
class Kline:
    """A bar with the fields the data files lack: quote volume, trades, taker-buy base and quote volume."""

    bar: Bar
    quote: float
    trades: int
    taker_base: float
    taker_quote: float


def with_derived(bar: Bar) -> Kline:
    """``bar`` with :func:`smc_quant.datasets.derived_fields`."""
    return Kline(bar, *derived_fields(bar.open, bar.high, bar.low, bar.close, bar.volume))


def merge(a: Kline | None, b: Kline) -> Kline:
    """``a`` followed by ``b`` as one longer kline (sums, extremes, first open, last close)."""
    if a is None:
        return b
    x, y = a.bar, b.bar
    bar = Bar(x.open, max(x.high, y.high), min(x.low, y.low), y.close, x.volume + y.volume)
    return Kline(
        bar,
        a.quote + b.quote,
        a.trades + b.trades,
        a.taker_base + b.taker_base,
        a.taker_quote + b.taker_quote,
    )


def kline_body(k: Kline, first_trade: int, final: bool, prec: Precision) -> str:
    """The ``"f":…,"B":"0"}}`` tail of a kline event, shared by every symbol mapped on one series."""
    bar, n = k.bar, k.trades
    f, last = (first_trade, first_trade + n - 1) if n > 0 else (-1, -1)
    p, dq = prec.price, prec.qty
    return (
        f'"f":{f},"L":{last},"o":"{fmt(bar.open, p)}","c":"{fmt(bar.close, p)}",'
        f'"h":"{fmt(bar.high, p)}","l":"{fmt(bar.low, p)}","v":"{fmt(bar.volume, dq)}",'
        f'"n":{n},"x":{"true" if final else "false"},"q":"{fmt(k.quote, 8)}","V":"{fmt(k.taker_base, dq)}",'
        f'"Q":"{fmt(k.taker_quote, 8)}","B":"0"}}}}'
    )


def raw_kline(
    symbol: str, event_ms: int, open_ms: int, body: str, interval: str = "1m", length_ms: int = 60_000
) -> str:
    """A raw ``<symbol>@kline_<interval>`` event (what ``/ws/…`` connections receive)."""
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{symbol}","k":{{"t":{open_ms},"T":{open_ms + length_ms - 1},'
        f'"s":"{symbol}","i":"{interval}",{body}'
    )


def combined(stream: str, raw: str) -> str:
    """The combined-stream wrapper (what ``/stream`` connections receive)."""
    return f'{{"stream":"{stream}","data":{raw}}}'


def rest_row(open_ms: int, k: Kline, prec: Precision, length_ms: int = 60_000) -> list[object]:
    """One ``GET /fapi/v1/klines`` row."""
    bar, p, dq = k.bar, prec.price, prec.qty
    return [
        open_ms,
        fmt(bar.open, p),
        fmt(bar.high, p),
        fmt(bar.low, p),
        fmt(bar.close, p),
        fmt(bar.volume, dq),
        open_ms + length_ms - 1,
        fmt(k.quote, 8),
        k.trades,
        fmt(k.taker_base, dq),
        fmt(k.taker_quote, 8),
        "0",
    ]
