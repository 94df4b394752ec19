"""Funding of USDT-M perpetuals: the latest rate and next funding time per symbol, and what a trade pays.

At each funding time (every 8 h on most symbols, 4 h or 1 h on some: read from the exchange, never
assumed) every open position exchanges ``position notional × rate`` with the other side: a positive rate
means longs pay shorts, a negative one shorts pay longs. Our trades live at most ``max_hold`` (2 h), so
a trade crosses at most one funding time (two on a 1 h symbol: only the next one's rate is known, and the guard
prices that one); usually it costs ~0.01 % of notional — a tenth of the round-trip
taker fee — but on a squeezed alt the rate reaches 0.5–2 %, more than the trade's whole target. The risk
manager therefore refuses an entry whose hold window contains the next funding time when its side pays
more than ``max_funding_pct`` (:meth:`smc_quant.risk.RiskManager.evaluate`, reason ``funding``)::

    cost % = dir(side) × rate × 100      (dir: +1 LONG, −1 SHORT; negative = the trade receives funding)
    refuse ⇔ now < next_funding_ms ≤ now + max_hold_ms  and  cost % > max_funding_pct

Source: the ``!markPrice@arr`` stream on the ``/market`` route (every 3 s; one push may list only part of
the symbols, so quotes are merged per symbol). :func:`parse_mark_prices` reads a frame, :class:`FundingBook`
keeps the latest quote per symbol and answers ``None`` for a symbol never quoted or not refreshed for
``max_age_s`` — the guard then does not apply (an unknown rate never blocks trading; it is counted).

Pure: no I/O. Rates are ``Decimal`` (they multiply money on the order path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import orjson

from smc_quant.domain.trading import PositionSide, direction
from smc_quant.errors import DataRejected

__all__ = ["MAX_RATE", "FundingBook", "FundingQuote", "funding_cost_pct", "funding_rate", "next_funding_ms",
           "parse_mark_prices"]

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class FundingQuote:
    """One symbol's funding as last pushed: ``rate`` (fraction, e.g. 0.0001 = 0.01 %) applied at
    ``next_ms``; ``mark`` the mark price; ``event_ms`` the push's event time."""

    rate: Decimal
    next_ms: int
    mark: Decimal
    event_ms: int

    def as_record(self) -> dict[str, str | int]:
        """For a decision's stored detail."""
        return {"rate": str(self.rate), "next_ms": self.next_ms}


MAX_RATE = Decimal("0.05")


def funding_rate(text: str) -> Decimal:
    """A funding rate from a command line: a finite fraction within ±``MAX_RATE`` (Binance caps rates far below
    5 %); ``ValueError`` otherwise (argparse reports it as a usage error naming this function)."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise ValueError(text) from None
    if not value.is_finite() or abs(value) > MAX_RATE:
        raise ValueError(text)
    return value


def next_funding_ms(now_ms: int, every_ms: int) -> int:
    """The first funding time after ``now_ms`` on a fixed schedule (multiples of ``every_ms`` since the epoch, UTC):
    the emulator's and the backtest's assumption; the service reads ``T`` from the exchange instead."""
    return (now_ms // every_ms + 1) * every_ms


def funding_cost_pct(side: PositionSide, rate: Decimal) -> Decimal:
    """Percent of notional a ``side`` position pays at the funding time (negative: it receives)."""
    return direction(side) * rate * HUNDRED


def _decimal(value: object, what: str) -> Decimal:
    if not isinstance(value, str):
        raise DataRejected("bad_field", f"{what} is not a decimal string")
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise DataRejected("bad_field", f"{what} {value!r} is not a number") from None
    if not out.is_finite():
        raise DataRejected("bad_field", f"{what} {value!r} is not finite")
    return out


def _quote(item: object) -> tuple[str, FundingQuote]:
    if not isinstance(item, dict) or item.get("e") != "markPriceUpdate":
        raise DataRejected("not_mark_price", "an item is not a markPriceUpdate event")
    symbol, event_ms, next_ms = item.get("s"), item.get("E"), item.get("T")
    if not isinstance(symbol, str) or not symbol:
        raise DataRejected("bad_field", "s (symbol) missing")
    if type(event_ms) is not int or type(next_ms) is not int:  # (bool is an int subclass: refused too)
        raise DataRejected("bad_field", f"{symbol}: E/T are not integers")
    mark = _decimal(item.get("p"), f"{symbol} p")
    if mark <= 0:
        raise DataRejected("bad_field", f"{symbol}: mark price {mark} is not positive")
    return symbol, FundingQuote(_decimal(item.get("r"), f"{symbol} r"), next_ms, mark, event_ms)


def parse_mark_prices(frame: str | bytes) -> tuple[list[tuple[str, FundingQuote]], list[DataRejected]]:
    """The quotes of one ``!markPrice@arr`` (or ``<symbol>@markPrice``) frame, combined-stream wrapper or raw
    (unknown keys ignored), and one :class:`~smc_quant.errors.DataRejected` per bad item — a bad item never
    hides the others. Items without a funding rate (``"r":""``: delivery contracts, which do not fund) are
    skipped. A frame that is not JSON raises ``DataRejected("malformed")``."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise DataRejected("malformed", "not JSON") from None
    data = msg.get("data", msg) if isinstance(msg, dict) and "stream" in msg else msg
    items = data if isinstance(data, list) else [data]
    quotes: list[tuple[str, FundingQuote]] = []
    rejected: list[DataRejected] = []
    for item in items:
        if isinstance(item, dict) and item.get("r") == "":
            continue
        try:
            quotes.append(_quote(item))
        except DataRejected as exc:
            rejected.append(exc)
    return quotes, rejected


class FundingBook:
    """The latest quote per symbol; a quote not refreshed for ``max_age_s`` (by ``clock``, seconds: the
    monotonic clock in the service) reads as ``None`` — the stream stopped delivering it. Age is taken on the
    receiving side, not from the push's event time, so it means the same in a replay at N× speed."""

    def __init__(self, max_age_s: float, clock: Callable[[], float]) -> None:
        if not max_age_s > 0:
            raise ValueError("max_age_s must be positive")
        self.max_age_s = max_age_s
        self._clock = clock
        self._quotes: dict[str, tuple[FundingQuote, float]] = {}

    def update(self, quotes: Iterable[tuple[str, FundingQuote]]) -> int:
        """Merge pushed quotes (an older push never replaces a newer one); how many were taken."""
        taken, now = 0, self._clock()
        for symbol, quote in quotes:
            held = self._quotes.get(symbol)
            if held is None or quote.event_ms >= held[0].event_ms:
                self._quotes[symbol] = (quote, now)
                taken += 1
        return taken

    def quote(self, symbol: str) -> FundingQuote | None:
        """The symbol's quote if it was refreshed within ``max_age_s``, else ``None``."""
        held = self._quotes.get(symbol)
        if held is None or self._clock() - held[1] > self.max_age_s:
            return None
        return held[0]

    def __len__(self) -> int:
        return len(self._quotes)
