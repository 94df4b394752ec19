"""The executor's book: one open position per symbol with what we know about its orders and fills, and
the pure arithmetic applied to it — the closed trade a set of fills makes, a fill learned from an order
query, the position rebuilt from the order journal after a crash. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from smc_quant.domain.trading import ZERO, ExitReason, Fill, OrderSide, Position, Signal, Trade, entry_side, exit_side
from smc_quant.orders.broker import ExchangePosition, OrderState
from smc_quant.orders.client_ids import signal_digest


@dataclass(slots=True)
class BookEntry:
    """One open position and what we know about its orders and fills."""

    position: Position
    signal: Signal | None
    sl_client_id: str | None = None
    tp_client_id: str | None = None
    status: str = "open"
    exit_reason: ExitReason | None = None
    features: tuple[float, ...] = ()
    schema_version: str = ""
    model_version: int | None = None
    signal_time_ms: int = 0

    @classmethod
    def of(cls, position: Position, signal: Signal | None, sl_client_id: str | None = None,
           tp_client_id: str | None = None, status: str = "open") -> BookEntry:
        """An entry carrying what the learner needs from its signal (when known): the feature row, the schema
        and model versions it was scored with, and the signal's candle time."""
        if signal is None:
            return cls(position, None, sl_client_id, tp_client_id, status)
        return cls(position, signal, sl_client_id, tp_client_id, status, features=signal.features,
                   schema_version=signal.schema_version, model_version=signal.model_version,
                   signal_time_ms=signal.open_time)


class Book(Mapping[str, BookEntry]):
    """The open positions of one account by symbol, the fills of each (by signal id) and the routing of a
    fill back to its signal (by the signal digest in the order's client id).

    It also remembers the ids of the signals handled recently — at most ``seen_max``, the oldest forgotten
    first, with their routing and stray fills unless their position is still open — so that a signal
    delivered twice is refused and memory stays bounded over months of running.
    """

    def __init__(self, seen_max: int) -> None:
        self._entries: dict[str, BookEntry] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._owners: dict[str, str] = {}
        self._seen: dict[str, None] = {}
        self._seen_max = seen_max

    def __getitem__(self, symbol: str) -> BookEntry:
        return self._entries[symbol]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, signal_id: str) -> bool:
        """Whether ``signal_id`` was handled within the remembered window."""
        return signal_id in self._seen

    def remember(self, signal_id: str) -> None:
        """Refuse ``signal_id`` from now on (within the window)."""
        self._seen[signal_id] = None
        while len(self._seen) > self._seen_max:
            old = next(iter(self._seen))
            del self._seen[old]
            if not any(e.position.signal_id == old for e in self._entries.values()):
                self._owners.pop(signal_digest(old), None)
                self._fills.pop(old, None)  # fills that came after the position was settled

    def expect(self, signal_id: str) -> None:
        """Remember ``signal_id`` and route its orders' fills to it — before its entry order leaves, since
        fills can arrive before the entry call returns."""
        self._owners[signal_digest(signal_id)] = signal_id
        self.remember(signal_id)

    def put(self, entry: BookEntry, fills: list[Fill] | None = None) -> None:
        """Put ``entry`` on the book; ``fills`` (when given) are the fills of its signal known so far."""
        signal_id = entry.position.signal_id
        self._entries[entry.position.symbol] = entry
        self._owners[signal_digest(signal_id)] = signal_id
        if fills is not None:
            self._fills[signal_id] = fills

    def owner(self, digest: str) -> str | None:
        """The signal id whose orders carry ``digest`` (``None`` when not ours or long forgotten)."""
        return self._owners.get(digest)

    def fills(self, signal_id: str) -> list[Fill]:
        """The fills of ``signal_id`` so far (the stored list: appending to it records a fill)."""
        return self._fills.setdefault(signal_id, [])

    def held(self, symbol: str) -> Decimal:
        """What ``symbol``'s booked position still holds after the exit fills seen so far (:func:`held`): less
        than its quantity after a partial exit — a person's partial close on the exchange, an exit cut short."""
        entry = self._entries[symbol]
        return held(entry.position, self._fills.get(entry.position.signal_id, ()))

    def settle(self, symbol: str) -> tuple[BookEntry, Trade] | None:
        """When the fills of ``symbol``'s position make it flat: take it off the book and return it with its
        closed trade (exit reason as learned, else ``reconciled``)."""
        entry = self._entries.get(symbol)
        if entry is None:
            return None
        signal_id = entry.position.signal_id
        trade = round_trip(entry.position, self._fills.get(signal_id, []), entry.exit_reason or ExitReason.RECONCILED)
        if trade is None:
            return None
        del self._entries[symbol]
        self._fills.pop(signal_id, None)
        return entry, trade

    def drop(self, symbol: str) -> None:
        """Take ``symbol`` off the book without a trade (the position vanished with no fill to learn from)."""
        entry = self._entries.pop(symbol)
        self._fills.pop(entry.position.signal_id, None)


def filled(fills: Iterable[Fill], side: str) -> Decimal:
    """How much ``fills`` executed on ``side`` (``BUY``/``SELL``)."""
    return sum((f.quantity for f in fills if f.side == side), ZERO)


FEE_QUANTUM = Decimal("1e-8")
"""A share of a fee is rounded to this (USDT, as the exchange reports commissions)."""


def held(position: Position, fills: Iterable[Fill]) -> Decimal:
    """What ``position`` still holds after ``fills``: the quantity it opened — its own (the entry's answer), or its
    entry fills' when they say more — less its exit fills'. Zero or less: the fills closed it. The position's own
    quantity stays the entry's (a missing entry fill is learned against it); this is what the exchange should hold."""
    fills = list(fills)
    entered, exited = filled(fills, entry_side(position.side)), filled(fills, exit_side(position.side))
    return max(position.quantity, entered) - exited


def round_trip(position: Position, fills: Sequence[Fill], reason: ExitReason) -> Trade | None:
    """The closed trade ``fills`` make of ``position``, or ``None`` while it is not flat.

    Flat means some quantity went in and at least as much came out. Entry and exit prices are the
    quantity-weighted averages of their sides; fees are the sum over all fills — of the exit fills, only our
    quantity's share when more came out than went in (our exit also closed what a person added by hand while the
    user-data stream was down, or a person's reversal overshot ours: the rest is not our trade's); entry time is
    the first entry fill, exit time the last exit fill.
    """
    opening: OrderSide = entry_side(position.side)
    ins = [f for f in fills if f.side == opening]
    outs = [f for f in fills if f.side != opening]
    qty, out_qty = filled(ins, opening), filled(outs, exit_side(position.side))
    if qty <= 0 or out_qty < qty:
        return None
    entry_px = sum((f.quantity * f.price for f in ins), ZERO) / qty
    exit_px = sum((f.quantity * f.price for f in outs), ZERO) / out_qty
    exit_fees = sum((f.fee for f in outs), ZERO)
    if out_qty > qty:
        exit_fees = (exit_fees * qty / out_qty).quantize(FEE_QUANTUM)
    fees = sum((f.fee for f in ins), ZERO) + exit_fees
    return Trade(position.signal_id, position.symbol, position.side, qty, entry_px, exit_px,
                 min(f.time_ms for f in ins), max(f.time_ms for f in outs), fees, reason, position.confidence)


def queried_fill(symbol: str, client_id: str, state: OrderState | None, side: OrderSide, fee_rate: Decimal,
                 time_ms: int = 0) -> Fill | None:
    """The fill an order query reports (one aggregate at the average price), or ``None`` when nothing
    executed or the exchange does not know the order. The query carries no commission, so the fee is
    estimated at ``fee_rate`` of the notional; the time is the order's update time, else ``time_ms``."""
    if state is None or state.executed_qty <= 0:
        return None
    fee = state.executed_qty * state.avg_price * fee_rate
    return Fill(symbol, client_id, side, state.executed_qty, state.avg_price, fee, state.update_time_ms or time_ms,
                order_id=state.order_id)


def journalled_position(remote: ExchangePosition, row: Mapping[str, Any]) -> Position | None:
    """The position of ``remote`` as our own entry order journalled it, or ``None`` when ``row`` cannot be its
    origin (no stop in its intent, the other side, or a position larger than the entry's quantity: an old entry
    journalled long ago must not make a position a human opened since look like ours).

    ``row`` is the order journal's newest entry on the symbol: its ``intent`` holds the decision's stop and
    target prices, leverage and confidence; its ``created_ms`` — written before the order left, so never
    later than the real fill — becomes the entry time (the 2-hour limit can only come early). Size and
    price are the exchange's.
    """
    intent = row.get("intent") or {}
    if not intent.get("stop_price") or row["side"] != entry_side(remote.side):
        return None
    sent = row.get("quantity")
    if sent is None or remote.quantity > Decimal(str(sent)):
        return None  # more than our entry could have filled: not (only) ours — a human's, left to a human
    target = intent.get("target_price")
    return Position(
        symbol=remote.symbol, side=remote.side, quantity=remote.quantity, entry_price=remote.entry_price,
        entry_time_ms=int(row["created_ms"]), leverage=int(intent.get("leverage") or remote.leverage or 1),
        signal_id=str(row["signal_id"]), confidence=float(intent.get("confidence") or 0.0),
        stop_price=Decimal(str(intent["stop_price"])),
        target_price=None if target is None else Decimal(str(target)),
        mark_price=remote.mark_price or remote.entry_price)


__all__ = ["Book", "BookEntry", "filled", "journalled_position", "queried_fill", "round_trip"]
