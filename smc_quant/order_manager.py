"""SmartOrderManager: a risk decision in, a protected position out; exits that are never dropped or duplicated.

This is the asynchronous edge of ``smc_quant.orders`` (the rest of the package is pure): it talks to a
:class:`~smc_quant.orders.broker.Broker` — the live REST broker, the paper broker or the emulator — and
is the only component that sends orders. Rules (``BINANCE-PROTOCOL.md`` §3.3, §7; ARCHITECTURE.md
invariants 3 and 4):

- **Ids.** Every order and algo order carries ``client_order_id(signal_id, leg, attempt)``. ``attempt`` is
  raised only once the previous order of that leg is known to be dead (rejected, expired, cancelled).
- **Journal first; unknown is not failure.** Every order leaves through
  :class:`~smc_quant.order_sender.OrderSender`: journalled as ``sending`` before the request and again with
  the answer; an unknown outcome is queried by client id until the exchange knows it or says it does not,
  and only then re-sent with the *same* id. Nothing is re-sent blind.
- **The symbol checked per entry** (:class:`~smc_quant.order_symbol.SymbolSetup`, one round trip). Before every
  entry the symbol's margin type and the decision's leverage are sent (-4046 = already so) while its open algo
  orders are read, the three requests at once. Nothing is cached: a person on the same account may have changed
  a setting in the Binance app since our last trade (the risk manager sized the entry for ours), or left a
  conditional order of theirs on the symbol — any such order (client id not ours, either side) drops the entry
  (``foreign_orders: …``), since in one-way mode it would close, add to or reverse our position; theirs are never
  cancelled. A read that keeps failing drops the entry too (``foreign_orders_not_checked``). Our own
  ``closePosition`` orders of earlier trades on the symbol are cancelled (they would close the new position).
- **Protection right after the fill.** STOP_MARKET at the stop and TAKE_PROFIT_MARKET at the target with
  ``closePosition=true`` on the algo endpoint. A trigger the price has already passed (-2021 or -4142, or our own
  :func:`validate_trigger` saying so) means the exit level is behind us: the position is closed at market
  at once. If the stop cannot be placed after retries, the position is closed at market and an alarm is
  raised — no position stays without a stop.
- **Exits** (sent by :class:`~smc_quant.order_exit.PositionCloser`). A reduce-only MARKET order for the size the
  exchange reports, the stop and target left armed, with backoff ``min(base · 2^(n−1), max)`` between tries, until
  done or ``exit_max_attempts``; then an alarm (ERROR log, ``stats["alarms"]``, journal ``last_error``). A position
  that is already flat (the stop fired meanwhile: -2022, or ``positions()`` shows none) is done — no send. Once
  flat, both algo orders are cancelled (already gone is fine); before that only when an exit is refused for a
  conflict with them (-2022 with the position open).
- **Cancellation.** ``asyncio.CancelledError`` propagates after the journal records ``interrupted``; the
  protection of a filled entry runs to completion in the background even if ``open()`` is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from smc_quant.domain.trading import ExitReason, Position, PositionSide, entry_side, exit_side
from smc_quant.errors import TemporaryError, VenueRejected
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.logging import get_logger
from smc_quant.order_exit import CloseResult, PositionCloser
from smc_quant.order_sender import (
    READ_FAILURES,
    JournalUnavailable,
    OrderConfig,
    OrderJournal,
    OrderKind,
    OrderSender,
    StillUnknown,
    error_text,
)
from smc_quant.order_symbol import SymbolSetup
from smc_quant.orders.broker import (
    AlgoRequest,
    AlgoState,
    Broker,
    OrderRequest,
    OrderState,
    TriggerType,
)
from smc_quant.orders.client_ids import Leg, client_order_id, parse_client_order_id, same_signal
from smc_quant.orders.filters import FilterRejected, validate_order, validate_trigger
from smc_quant.orders.reactions import REACTIONS, Reaction

if TYPE_CHECKING:
    from smc_quant.risk import Decision

__all__ = ["CloseResult", "OpenResult", "OrderConfig", "OrderJournal", "SmartOrderManager"]

#: Entry rejections worth one repair: the size (margin, leverage ratio) or a re-signed resend (clock).
_SHRINK = frozenset({-2019, -2027})
_RESIGN = frozenset({-1021, -5028})
_WOULD_TRIGGER = frozenset({-2021, -4142})
"""The trigger is already passed: -2021 ORDER_WOULD_IMMEDIATELY_TRIGGER, -4142 STRATEGY_INVALID_TRIGGER_PRICE ("REJECT:
take profit or stop order will be triggered immediately")."""
_CANCELS_KEPT = 1024
_DEFAULT_CONFIG = OrderConfig()


def entry_intent(decision: Decision) -> dict[str, object]:
    """What the entry's journal row keeps for a restart: the protective prices (exact decimal strings), the
    leverage and the confidence — enough to protect the position without the signal or position row."""
    target = decision.target_price
    return {"stop_price": str(decision.stop_price), "target_price": None if target is None else str(target),
            "leverage": int(decision.leverage), "confidence": float(decision.signal.confidence)}


@dataclass(frozen=True)
class OpenResult:
    """What :meth:`SmartOrderManager.open` achieved; ``position`` is ``None`` when the entry filled nothing.

    ``reason`` is ``opened`` or why not (``filter MIN_NOTIONAL: …``, ``rejected -2019: …``, ``not_filled``,
    ``closed_at_once: stop already passed`` …). ``close`` is set when the position was opened and had to be
    closed immediately (trigger already passed, protection impossible): ``position`` is still the one the entry
    opened, closed or not — the round trip cost fees and slippage, and is a trade like any other.
    """

    position: Position | None
    reason: str
    entry: OrderState | None = None
    sl: AlgoState | None = None
    tp: AlgoState | None = None
    close: CloseResult | None = None

    @property
    def opened(self) -> bool:
        return self.position is not None


class _CannotVerify(Exception):
    """The exchange could not be asked whether a protective order exists (reconciliation retries later)."""


@dataclass
class _Protection:
    stop_loss: AlgoState | None = None
    take_profit: AlgoState | None = None
    close: CloseResult | None = None
    failures: list[str] = field(default_factory=list)


STAT_KEYS = ("sent", "filled", "rejected", "dropped", "unknown_queried", "resent", "retries", "repaired",
             "exit_retries", "exits", "already_flat", "alarms", "protection_placed", "protection_failures",
             "immediate_trigger_closes", "leverage_set", "margin_type_set", "journal_errors", "cancel_failures",
             "foreign_orders")


class SmartOrderManager:
    """Turns risk decisions into protected positions and closes them; see the module docstring for the rules."""

    def __init__(self, broker: Broker, filters: Mapping[str, SymbolFilters], *, config: OrderConfig = _DEFAULT_CONFIG,
                 journal: OrderJournal | None = None, clock: Callable[[], int], logger: Any = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._broker = broker
        self._filters = filters
        self.config = config
        self._clock = clock
        self._log = logger if logger is not None else get_logger(component="orders")
        self._sleep = sleep
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._sender = OrderSender(broker, config, journal, clock=clock, logger=self._log, sleep=sleep,
                                   stats=self.stats)
        self._attempts: dict[tuple[str, Leg], int] = {}
        """Next attempt number per (signal, leg): raised when the previous order of the leg is dead."""
        self._background: set[asyncio.Future[_Protection]] = set()
        self._closing: dict[str, ExitReason] = {}
        """Why each signal's position was last closed by :meth:`close` (until :meth:`forget`)."""
        self._cancels_sent: dict[str, None] = {}
        """Client ids of the algo orders this manager asked to cancel (the newest ``_CANCELS_KEPT``)."""
        self.on_alarm: Callable[[str, str], None] | None = None
        """Tells people of an alarm, ``(kind, detail)`` (set by the executor that owns this manager)."""
        self._symbols = SymbolSetup(broker, self._sender, config, stats=self.stats, logger=self._log,
                                    cancelling=self._cancelling, sleep=sleep)
        self._closer = PositionCloser(broker, filters, self._sender, config, attempts=self._attempts,
                                      stats=self.stats, logger=self._log, clock=clock, sleep=sleep,
                                      alarm=self._alarm)

    # -- public API ----------------------------------------------------------------------------------

    async def open(self, decision: Decision, mark: Decimal) -> OpenResult:
        """Enter the decision's trade and protect it; a refusal anywhere before the fill is a drop with reason."""
        signal = decision.signal
        if decision.action not in ("open", "rotate"):
            return self._drop(signal.symbol, f"decision {decision.action}: {decision.reason}")
        filters = self._filters.get(signal.symbol)
        if filters is None:
            return self._drop(signal.symbol, "unknown_symbol: no exchange filters")
        side = entry_side(signal.side)
        cfg = self.config
        try:
            if cfg.entry_type == "MARKET":
                valid = validate_order(filters, side=side, order_type="MARKET", quantity=decision.quantity,
                                       mark_price=mark)
            else:
                offset = filters.tick_size * cfg.limit_offset_ticks
                valid = validate_order(filters, side=side, order_type="LIMIT", quantity=decision.quantity,
                                       mark_price=mark, price=mark - offset if side == "BUY" else mark + offset)
            # The exits must still lie ahead of the price, or the position would be closed the moment it opens: of the
            # mark, and of a LIMIT entry's price (a tick or more beyond the mark, it may sit on the stop itself).
            for reference in (mark,) if valid.price is None else (mark, valid.price):
                self._trigger(filters, signal.side, "STOP_MARKET", decision.stop_price, reference)
                if decision.target_price is not None:  # no target: the stop and the time limit end the trade
                    self._trigger(filters, signal.side, "TAKE_PROFIT_MARKET", decision.target_price, reference)
        except FilterRejected as exc:
            return self._drop(signal.symbol, f"filter {exc.filter}: {exc}")
        if (refused := await self._symbols.prepare(signal.symbol, decision.leverage, signal.signal_id)) is not None:
            return self._drop(signal.symbol, refused)
        quantity, attempt, repaired = valid.quantity, self._attempts.get((signal.signal_id, Leg.ENTRY), 0), False
        while True:
            request = OrderRequest(signal.symbol, side, valid.type, quantity,
                                   client_order_id(signal.signal_id, Leg.ENTRY, attempt), price=valid.price,
                                   time_in_force="GTC")
            try:
                state = await self._sender.send_order(request, signal.signal_id, "entry", attempt,
                                               budget=cfg.entry_max_attempts, intent=entry_intent(decision))
                break
            except StillUnknown:
                self._alarm(signal.symbol, "entry outcome unknown after queries; reconciliation must decide",
                            client_id=request.client_order_id)
                return OpenResult(None, "entry_unknown")
            except VenueRejected as exc:
                self._attempts[(signal.signal_id, Leg.ENTRY)] = attempt = attempt + 1
                fixed = None if repaired else self._repair_entry(exc, request, filters, mark)
                if fixed is None:
                    return self._drop(signal.symbol, f"rejected {error_text(exc)}")
                quantity, repaired = fixed, True
                self.stats["repaired"] += 1
            except JournalUnavailable:
                return self._drop(signal.symbol, "journal_unavailable: the order journal cannot be written")
            except TemporaryError as exc:
                return self._drop(signal.symbol, f"entry failed after retries: {error_text(exc)}")
        self._attempts[(signal.signal_id, Leg.ENTRY)] = attempt + 1
        try:
            state = await self._sender.await_fill(state, cancel_rest=True)
        except asyncio.CancelledError:
            # Cancelled while a LIMIT entry rests: take the rest off the book and protect what already filled.
            self._in_background(self._abandon_entry(state, decision, valid.price or mark))
            raise
        if not state.final:  # its rest could not be cancelled: it may still fill (reconciliation adopts it)
            self._alarm(signal.symbol, "entry rest not cancelled; reconciliation must decide",
                        client_id=state.client_order_id, status=state.status)
            if state.executed_qty <= 0:
                return OpenResult(None, "entry_unknown", state)
        if state.executed_qty <= 0:
            return self._drop(signal.symbol, f"not_filled ({state.status})", entry=state)
        position = self._position(decision, state, valid.price or mark)
        # The fill price is the freshest last price we know: protection is validated against it.
        prot = await asyncio.shield(self._in_background(self._protect(position, position.entry_price, fresh=True)))
        if prot.close is not None:
            return OpenResult(position, f"closed_at_once: {prot.close.detail}", state, prot.stop_loss,
                              prot.take_profit, prot.close)
        return OpenResult(position, "opened", state, prot.stop_loss, prot.take_profit)

    def _position(self, decision: Decision, state: OrderState, fallback_price: Decimal) -> Position:
        """The position a filled (or partly filled) entry opened."""
        signal = decision.signal
        self.stats["filled"] += 1
        price = state.avg_price if state.avg_price > 0 else fallback_price
        self._log.info("entry_filled", symbol=signal.symbol, side=signal.side, quantity=str(state.executed_qty),
                       price=str(price), client_id=state.client_order_id)
        return Position(
            symbol=signal.symbol, side=signal.side, quantity=state.executed_qty, entry_price=price,
            entry_time_ms=self._clock(), leverage=decision.leverage, signal_id=signal.signal_id,
            confidence=signal.confidence, stop_price=decision.stop_price, target_price=decision.target_price,
            mark_price=price)

    def _in_background(self, work: Awaitable[_Protection]) -> asyncio.Future[_Protection]:
        """Run ``work`` as a task that survives the caller's cancellation (kept referenced until done)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._protection_done)
        return task

    async def _abandon_entry(self, state: OrderState, decision: Decision, fallback_price: Decimal) -> _Protection:
        """A cancelled ``open()`` left an entry resting: cancel it, then protect any part that filled."""
        final = await self._sender.cancel_rest(state)
        if not final.final:
            self._alarm(state.symbol, "abandoned entry still rests; reconciliation must decide",
                        client_id=state.client_order_id)
        if final.executed_qty <= 0:
            return _Protection()
        position = self._position(decision, final, fallback_price)
        return await self._protect(position, position.entry_price, fresh=True)

    def _protection_done(self, task: asyncio.Future[_Protection]) -> None:
        """A protection task ended (normally awaited by ``open``; this reports one that outlived a cancellation)."""
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._alarm("", "protection task failed", error=error_text(exc))

    async def ensure_protection(self, position: Position, mark: Decimal) -> tuple[AlgoState | None, AlgoState | None]:
        """Make sure the position's stop and target are live at the exchange; re-place whatever is missing.

        Used after a restart or a reconciliation. Returns ``(None, None)`` when the position had to be closed
        instead (its stop or target already passed, or the stop could not be placed).
        """
        prot = await self._protect(position, mark, fresh=False)
        if prot.close is not None:
            return None, None
        return prot.stop_loss, prot.take_profit

    def cancel_requested(self, client_algo_id: str) -> bool:
        """Whether this manager asked the exchange to cancel ``client_algo_id`` (so its CANCELED event is ours)."""
        return client_algo_id in self._cancels_sent

    def _cancelling(self, client_algo_id: str) -> None:
        self._cancels_sent[client_algo_id] = None
        while len(self._cancels_sent) > _CANCELS_KEPT:
            del self._cancels_sent[next(iter(self._cancels_sent))]

    @property
    def in_flight(self) -> frozenset[asyncio.Future[_Protection]]:
        """Protection placements under way in the background (outliving a cancelled ``open``): a stop waits
        for them, or the position would be left without its stop when the HTTP session closes."""
        return frozenset(self._background)

    async def journal_ready(self) -> bool:
        """Whether an entry could be journalled now (:meth:`OrderSender.journal_ready`)."""
        return await self._sender.journal_ready()

    def forget(self, signal_id: str) -> None:
        """Drop the signal's retry counters: its trade is over (or never opened). They were never pruned, one
        more set per trade for as long as the process ran."""
        for leg in Leg:
            self._attempts.pop((signal_id, leg), None)
        self._closing.pop(signal_id, None)

    def closing_reason(self, signal_id: str) -> ExitReason | None:
        """Why :meth:`close` last closed ``signal_id``'s position — asked by whoever closed it, or by this manager
        itself (a trigger already passed, a stop that could not be placed); ``None`` when it did not."""
        return self._closing.get(signal_id)

    @property
    def tracked_signals(self) -> int:
        """Signals whose retry counters are held (the open trades', and any whose outcome is still unknown)."""
        return len({signal_id for signal_id, _ in self._attempts})

    async def cancel_protection(self, position: Position) -> None:
        """Cancel the trade's remaining algo orders (e.g. the target left after the stop fired); gone is fine."""
        await self._cancel_protection(position)

    async def close(self, position: Position, reason: ExitReason, *, mark: Decimal | None = None) -> CloseResult:
        """Close ``position`` at market: reduce-only MARKET until flat (or alarm), then cancel its algo orders. The
        reason is kept first (:meth:`closing_reason`): the exit's fills may be heard before this returns.

        The stop and target stay armed while the exit is tried: an exit the exchange keeps refusing (a price band
        in a fast market, placements failing while cancels pass) used to leave the position without its stop,
        cancelled first, until the retries were spent — and again at every retry of the exit clock. They are
        cancelled before an exit only when one is refused for a conflict with open orders (-2022 while the
        position is still open); an algo order waits outside the matching engine until it triggers, so ours are
        not expected to conflict."""
        self._closing[position.signal_id] = reason
        result = await self._closer.close(position, reason, mark, make_room=lambda: self._cancel_protection(position))
        if result.closed:  # flat: the leftover legs go (the one that fired, if any, is over already)
            await self._cancel_protection(position)
        return result

    def _repair_entry(self, exc: VenueRejected, request: OrderRequest, filters: SymbolFilters,
                      mark: Decimal) -> Decimal | None:
        """The quantity for one repaired resend of a rejected entry, or ``None`` to drop it (reactions table)."""
        quantity, side, price = request.quantity, request.side, request.price
        rule = REACTIONS.get(exc.code) if exc.code is not None else None
        if rule is None or rule.reaction != Reaction.REPAIR:
            return None
        if exc.code in _RESIGN:  # the broker resynchronised its clock: the same order, re-signed
            return quantity
        if exc.code in _SHRINK:  # margin or leverage ratio: half the size, if it still passes the filters
            try:
                if price is None:
                    return validate_order(filters, side=side, order_type="MARKET", quantity=quantity / 2,
                                          mark_price=mark).quantity
                return validate_order(filters, side=side, order_type="LIMIT", quantity=quantity / 2,
                                      mark_price=mark, price=price).quantity
            except FilterRejected:
                return None
        return None  # size/price/format repairs: our filters already produced the request, a resend won't differ

    # -- protection ------------------------------------------------------------------------------------

    @staticmethod
    def _trigger(filters: SymbolFilters, side: PositionSide, kind: TriggerType, price: Decimal | None,
                 reference: Decimal) -> Decimal:
        if price is None:
            raise FilterRejected("TRIGGER", f"no {kind} price", code=-1102)
        # Round away from the reference: never closer to the market than the decision asked.
        below = (exit_side(side) == "SELL") == (kind == "STOP_MARKET")
        return validate_trigger(filters, side=exit_side(side), order_type=kind, trigger=price,
                                reference_price=reference, rounding="down" if below else "up")[0]

    async def _protect(self, position: Position, reference: Decimal, *, fresh: bool) -> _Protection:
        """Place (or confirm) stop and target; a passed trigger or an impossible stop closes at market."""
        prot = _Protection()
        legs: tuple[tuple[Leg, TriggerType], ...] = ((Leg.STOP_LOSS, "STOP_MARKET"),
                                                     (Leg.TAKE_PROFIT, "TAKE_PROFIT_MARKET"))
        for leg, kind in legs:
            price = position.stop_price if leg is Leg.STOP_LOSS else position.target_price
            if price is None and leg is Leg.TAKE_PROFIT:
                continue
            try:
                state = await self._place_protective(position, leg, kind, price, reference, fresh=fresh)
            except FilterRejected as exc:
                if exc.code in _WOULD_TRIGGER:
                    return await self._close_at_once(position, prot, leg, f"{kind} already passed: {exc}")
                prot.failures.append(error_text(exc))
                state = None
            except VenueRejected as exc:
                if exc.code in _WOULD_TRIGGER:
                    return await self._close_at_once(position, prot, leg, f"{kind} already passed: {exc}")
                prot.failures.append(error_text(exc))
                state = None
            except _CannotVerify as exc:  # the exchange cannot be asked now: leave things as they are
                self._log.warning("protection_not_verified", symbol=position.symbol, leg=leg.name, error=str(exc))
                continue
            except (TemporaryError, StillUnknown) as exc:
                prot.failures.append(error_text(exc))
                state = None
            if state is None:
                self.stats["protection_failures"] += 1
                if leg is Leg.STOP_LOSS:  # invariant 4: no position without a stop at the exchange
                    self._alarm(position.symbol, "stop could not be placed; closing at market",
                                errors=prot.failures)
                    prot.close = await self.close(position, ExitReason.UNPROTECTED, mark=reference)
                    return prot
                self._log.warning("take_profit_not_placed", symbol=position.symbol, errors=prot.failures)
                continue
            self.stats["protection_placed"] += 1
            if leg is Leg.STOP_LOSS:
                prot.stop_loss = state
            else:
                prot.take_profit = state
        return prot

    async def _close_at_once(self, position: Position, prot: _Protection, leg: Leg, detail: str) -> _Protection:
        self.stats["immediate_trigger_closes"] += 1
        self._log.warning("trigger_already_passed_closing", symbol=position.symbol, leg=leg.name, detail=detail)
        reason = ExitReason.STOP_LOSS if leg is Leg.STOP_LOSS else ExitReason.TAKE_PROFIT
        result = await self.close(position, reason)
        prot.close = CloseResult(result.closed, result.reason, result.outcome, result.exit, result.attempts,
                                 f"{detail}; {result.detail}".strip("; "))
        return prot

    async def _place_protective(self, position: Position, leg: Leg, kind: TriggerType, price: Decimal | None,
                                reference: Decimal, *, fresh: bool) -> AlgoState | None:
        """One protective algo order, re-using a live one; ``None`` after ``protection_max_attempts`` tries, or at
        once for a symbol whose rules are unknown (the exchange lists it no more: a stop cannot be sized to it)."""
        filters = self._filters.get(position.symbol)
        if filters is None:
            self._log.error("protection_without_rules", symbol=position.symbol, leg=leg.name)
            return None
        sid = position.signal_id or f"{position.symbol}:{position.entry_time_ms}"
        key = (sid, leg)
        attempt = self._attempts.get(key, 0)
        if not fresh:
            live, attempt = await self._find_protective(position, sid, leg, attempt)
            self._attempts[key] = attempt
            if live is not None:
                return live
        trigger = self._trigger(filters, position.side, kind, price, reference)
        kind_name: OrderKind = "stop_loss" if leg is Leg.STOP_LOSS else "take_profit"
        for n in range(1, self.config.protection_max_attempts + 1):
            self._attempts[key] = attempt
            request = AlgoRequest(position.symbol, exit_side(position.side), kind, trigger,
                                  client_order_id(sid, leg, attempt), close_position=True,
                                  working_type=self.config.working_type)
            try:
                state = await self._sender.send_algo(request, sid, kind_name, attempt,
                                                     budget=self.config.entry_max_attempts)
            except VenueRejected as exc:
                if exc.code in _WOULD_TRIGGER or n == self.config.protection_max_attempts:
                    raise
                attempt += 1  # rejected = dead: the next try gets a new id
                await self._sleep(self.config.backoff(n))
                continue
            except TemporaryError:
                if n == self.config.protection_max_attempts:
                    raise
                await self._sleep(self.config.backoff(n))
                continue
            if state.status in ("REJECTED", "EXPIRED", "CANCELED"):
                attempt += 1
                continue
            return state
        return None

    async def _find_protective(self, position: Position, sid: str, leg: Leg,
                               attempt: int) -> tuple[AlgoState | None, int]:
        """The live algo order of this leg, or the next unused attempt number (``_CannotVerify`` if unreachable).

        The symbol's open algo orders are listed first (a leg re-placed before a restart is found whatever
        its attempt); otherwise ids are queried forward from ``attempt`` while the exchange knows them (all
        dead), so the new order never re-uses an id.
        """
        for n in range(1, self.config.protection_max_attempts + 1):
            try:
                for algo in await self._broker.open_algo_orders(position.symbol):
                    parts = parse_client_order_id(algo.client_algo_id)
                    if parts is not None and parts.leg is leg and same_signal(algo.client_algo_id, sid):
                        return algo, parts.attempt
                while (known := await self._broker.query_algo(position.symbol,
                                                              client_order_id(sid, leg, attempt))) is not None:
                    if not known.final:
                        return known, attempt
                    attempt += 1
                return None, attempt
            except READ_FAILURES as exc:  # a failed read says nothing about the orders: never a reason to close
                if n == self.config.protection_max_attempts:
                    raise _CannotVerify(error_text(exc)) from exc
                await self._sleep(self._sender.delay_after(exc, n))
        raise AssertionError("unreachable")

    async def _cancel_protection(self, position: Position) -> None:
        """Cancel every open algo order of this trade (by our ids); already gone is fine.

        The trade's algo orders are found by listing the symbol's open ones (so an attempt re-placed before a
        restart is found too); without a signal id, every closePosition algo order of ours on the symbol.
        """
        sid = position.signal_id
        try:
            live = await self._broker.open_algo_orders(position.symbol)
            ids = [a.client_algo_id for a in live
                   if (same_signal(a.client_algo_id, sid) if sid
                       else a.close_position and parse_client_order_id(a.client_algo_id) is not None)]
        except TemporaryError as exc:
            self._log.warning("open_algos_unavailable", symbol=position.symbol, error=error_text(exc))
            ids = [client_order_id(sid, leg, self._attempts.get((sid, leg), 0))
                   for leg in (Leg.STOP_LOSS, Leg.TAKE_PROFIT)] if sid else []
        for cid in ids:
            self._cancelling(cid)
            for n in range(1, self.config.protection_max_attempts + 1):
                try:
                    state = await self._broker.cancel_algo(position.symbol, cid)
                except (TemporaryError, VenueRejected) as exc:
                    if n == self.config.protection_max_attempts:
                        self.stats["cancel_failures"] += 1
                        self._log.warning("algo_cancel_failed", client_id=cid, error=error_text(exc))
                    else:
                        await self._sleep(self.config.backoff(n))
                    continue
                if state is not None:
                    parts = parse_client_order_id(cid)
                    kind = "stop_loss" if parts is not None and parts.leg is Leg.STOP_LOSS else "take_profit"
                    await self._sender.record({"client_id": cid, "signal_id": sid, "symbol": position.symbol,
                                        "side": state.side, "kind": kind, "algo": True, "order_type": state.type,
                                        "quantity": state.quantity, "trigger_price": state.trigger_price,
                                        "close_position": state.close_position,
                                        "attempt": parts.attempt if parts is not None else 0},
                                       status=state.status, exchange_id=state.algo_id)
                break

    # -- bookkeeping -------------------------------------------------------------------------------------

    def _drop(self, symbol: str, reason: str, *, entry: OrderState | None = None) -> OpenResult:
        self.stats["dropped"] += 1
        self._log.info("entry_dropped", symbol=symbol, reason=reason)
        return OpenResult(None, reason, entry)

    def _alarm(self, symbol: str, message: str, **context: Any) -> None:
        self.stats["alarms"] += 1
        self._log.error("order_alarm", symbol=symbol, message=message, **context)
        if self.on_alarm is not None:
            self.on_alarm("order_alarm", f"{symbol}: {message}" if symbol else message)
