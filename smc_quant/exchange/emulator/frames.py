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


def kline_body(bar: Bar, first_trade: int, final: bool, prec: Precision) -> str:
    """The ``"f":…,"B":"0"}}`` tail of a kline event, shared by every symbol mapped on one series."""
    q, n, v_buy, q_buy = derived_fields(bar.open, bar.high, bar.low, bar.close, bar.volume)
    f, last = (first_trade, first_trade + n - 1) if n > 0 else (-1, -1)
    p, dq = prec.price, prec.qty
    return (
        f'"f":{f},"L":{last},"o":"{fmt(bar.open, p)}","c":"{fmt(bar.close, p)}",'
        f'"h":"{fmt(bar.high, p)}","l":"{fmt(bar.low, p)}","v":"{fmt(bar.volume, dq)}",'
        f'"n":{n},"x":{"true" if final else "false"},"q":"{fmt(q, 8)}","V":"{fmt(v_buy, dq)}",'
        f'"Q":"{fmt(q_buy, 8)}","B":"0"}}}}'
    )


def raw_kline(symbol: str, event_ms: int, open_ms: int, body: str) -> str:
    """A raw ``<symbol>@kline_1m`` event (what ``/ws/…`` connections receive)."""
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{symbol}","k":{{"t":{open_ms},"T":{open_ms + 59_999},'
        f'"s":"{symbol}","i":"1m",{body}'
    )


def combined(stream: str, raw: str) -> str:
    """The combined-stream wrapper (what ``/stream`` connections receive)."""
    return f'{{"stream":"{stream}","data":{raw}}}'


def rest_row(open_ms: int, bar: Bar, prec: Precision) -> list[object]:
    """One ``GET /fapi/v1/klines`` row."""
    q, n, v_buy, q_buy = derived_fields(bar.open, bar.high, bar.low, bar.close, bar.volume)
    p, dq = prec.price, prec.qty
    return [
        open_ms,
        fmt(bar.open, p),
        fmt(bar.high, p),
        fmt(bar.low, p),
        fmt(bar.close, p),
        fmt(bar.volume, dq),
        open_ms + 59_999,
        fmt(q, 8),
        n,
        fmt(v_buy, dq),
        fmt(q_buy, 8),
        "0",
    ]
