"""Frames of one replay step (one minute, one update), serialized once and shared by every socket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from smc_quant.domain.candles import INTERVAL_MS, MINUTE_MS
from smc_quant.exchange.emulator.frames import (
    Bar,
    combined,
    fmt,
    in_candle_path,
    kline_body,
    merge,
    raw_kline,
    with_derived,
    ws_text_frame,
)
from smc_quant.exchange.emulator.intervals import Aggregator, parse_stream
from smc_quant.exchange.emulator.market import Market
from smc_quant.funding import next_funding_ms

MARK_PRICE_STREAMS = frozenset({"!markPrice@arr", "!markPrice@arr@1s"})
"""All symbols' mark price and funding, one push per replay step (Binance: every 3 s or 1 s)."""


def stream_name(symbol: str) -> str:
    """The kline stream of ``symbol`` as clients subscribe to it."""
    return f"{symbol.lower()}@kline_1m"


@dataclass(slots=True)
class Minute:
    """One replayed minute: the in-candle path and event bodies of every source series."""

    open_ms: int
    paths: dict[str, list[Bar]]
    bodies: dict[str, list[str]]


@dataclass(slots=True)
class Step:
    """Ready-to-write frames of one step, keyed by stream name; raw frames are built on demand."""

    minute: Minute
    update: int
    event_ms: int
    final: bool
    combined: dict[str, bytes] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict)


class StepBuilder:
    """Builds :class:`Minute` and :class:`Step` objects for the served symbols."""

    def __init__(self, market: Market, updates: int, funding: Callable[[str], Decimal] = lambda _s: Decimal("0.0001"),
                 funding_interval_ms: int = 8 * 3_600_000) -> None:
        self._market = market
        self._updates = updates
        self._funding = {s: str(funding(s)) for s in market.symbols}
        self._funding_interval_ms = funding_interval_ms
        self._symbols = {stream_name(s): s for s in market.symbols}
        self._lower = {s.lower(): s for s in market.symbols}
        self._agg = Aggregator(market)

    @property
    def streams(self) -> dict[str, str]:
        """Stream name → symbol for every served symbol."""
        return self._symbols

    def minute(self, m: int) -> Minute:
        """Minute number ``m`` of the replay."""
        open_ms = self._market.start_ms + m * MINUTE_MS
        paths: dict[str, list[Bar]] = {}
        bodies: dict[str, list[str]] = {}
        for src in self._market.series:
            i = self._market.index(src, open_ms)
            if i is None:
                continue
            prec = self._market.precision[src]
            path = in_candle_path(self._market.bar(src, i), self._updates, prec)
            first_trade = (open_ms // MINUTE_MS) * 10_000
            last = len(path) - 1
            paths[src] = path
            bodies[src] = [
                kline_body(with_derived(b), first_trade, u == last, prec) for u, b in enumerate(path)
            ]
        return Minute(open_ms, paths, bodies)

    def step(self, minute: Minute, update: int, wanted: set[str], raw_wanted: set[str]) -> Step:
        """Frames of ``update`` (``updates_per_candle`` = the final frame) for the wanted streams."""
        final = update == self._updates
        event_ms = minute.open_ms + (MINUTE_MS * (update + 1)) // (self._updates + 1)
        step = Step(minute, update, event_ms, final)
        source_of = self._market.source_of
        longer: dict[tuple[str, str], tuple[int, str] | None] = {}
        for stream in wanted | raw_wanted:
            if stream in MARK_PRICE_STREAMS:
                raw = self._mark_prices(minute, update, event_ms)
                if stream in wanted:
                    step.combined[stream] = ws_text_frame(combined(stream, raw).encode())
                if stream in raw_wanted:
                    step.raw[stream] = ws_text_frame(raw.encode())
                continue
            sym = self._symbols.get(stream)
            if sym is not None:
                bodies = minute.bodies.get(source_of[sym])
                if bodies is None:
                    continue
                raw = raw_kline(sym, event_ms, minute.open_ms, bodies[update])
            else:
                target = self._longer_target(stream)
                if target is None:
                    continue
                sym, interval = target
                key = (source_of[sym], interval)
                if key not in longer:
                    longer[key] = self._longer_body(minute, update, *key)
                built = longer[key]
                if built is None:
                    continue
                raw = raw_kline(sym, event_ms, built[0], built[1], interval, INTERVAL_MS[interval])
            if stream in wanted:
                step.combined[stream] = ws_text_frame(combined(stream, raw).encode())
            if stream in raw_wanted:
                step.raw[stream] = ws_text_frame(raw.encode())
        return step

    def _mark_prices(self, minute: Minute, update: int, event_ms: int) -> str:
        """A ``!markPrice@arr`` payload: every served symbol with a candle this minute; the mark, index and
        settle prices are the in-candle price, ``T`` the next multiple of the funding interval."""
        nxt = next_funding_ms(event_ms, self._funding_interval_ms)
        items = []
        for sym in self._market.symbols:
            src = self._market.source_of[sym]
            path = minute.paths.get(src)
            if path is None:
                continue
            p = fmt(path[update].close, self._market.precision[src].price)
            items.append(f'{{"e":"markPriceUpdate","E":{event_ms},"s":"{sym}","p":"{p}","ap":"{p}","i":"{p}",'
                         f'"P":"{p}","r":"{self._funding[sym]}","T":{nxt}}}')
        return "[" + ",".join(items) + "]"

    def _longer_target(self, stream: str) -> tuple[str, str] | None:
        parsed = parse_stream(stream)
        if parsed is None or parsed[1] == "1m" or parsed[0] not in self._lower:
            return None
        return self._lower[parsed[0]], parsed[1]

    def _longer_body(self, minute: Minute, update: int, src: str, interval: str) -> tuple[int, str] | None:
        """Window open time and event body of a longer kline at this step (closed minutes + this one)."""
        path = minute.paths.get(src)
        if path is None:
            return None
        length = INTERVAL_MS[interval]
        window = minute.open_ms - minute.open_ms % length
        k = merge(self._agg.closed(src, length, window, minute.open_ms), with_derived(path[update]))
        closes = update == self._updates and minute.open_ms + MINUTE_MS == window + length
        prec = self._market.precision[src]
        return window, kline_body(k, (window // MINUTE_MS) * 10_000, closes, prec)
