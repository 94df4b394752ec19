"""Closing a position at market: reduce-only MARKET orders for what the exchange holds, until flat.

The exit half of :class:`~smc_quant.order_manager.SmartOrderManager` (which cancels the trade's algo
orders once it is flat — or before the next exit when one is refused for a conflict with them — and owns the
shared attempt counters, statistics and alarms). Rules (``BINANCE-PROTOCOL.md``
§3.3, §7): the size sent is what ``positions()`` reports (capped at the market max quantity; a rest is
taken on the next pass); backoff ``min(base · 2^(n−1), max)`` between tries until done or
``exit_max_attempts``, then an alarm and a journal row with ``last_error``; an exit whose outcome is
unknown is queried by client id before anything else and re-sent only with the *same* id; a position
already flat (the stop fired meanwhile: -2022, or ``positions()`` shows none) is done without sending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from smc_quant.domain.trading import ExitReason, Position, PositionSide, exit_side
from smc_quant.errors import RateLimited, TemporaryError, VenueRejected
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.order_sender import OrderConfig, OrderSender, StillUnknown, error_text, rate_limit_wait_s
from smc_quant.orders.broker import Broker, ExchangePosition, OrderRequest, OrderState
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.orders.filters import floor_to_step, validate_order

#: Exit rejections that mean "maybe there is nothing left to reduce": look at the position before retrying.
_MAYBE_FLAT = frozenset({-2022, -2024, -4118})
_CONFLICT = -2022
"""ReduceOnly Order is rejected: no position to reduce, or a conflict with the symbol's open orders."""


@dataclass(frozen=True)
class CloseResult:
    """What :meth:`SmartOrderManager.close <smc_quant.order_manager.SmartOrderManager.close>` achieved.

    ``closed``: the exchange shows no position left for this trade (closed by us or already flat).
    ``outcome``: ``closed`` (our exit filled), ``already_flat`` (nothing sent) or ``alarm`` (gave up).
    """

    closed: bool
    reason: ExitReason
    outcome: Literal["closed", "already_flat", "alarm"]
    exit: OrderState | None = None
    attempts: int = 0
    detail: str = ""


class PositionCloser:
    """Sends the exits of one :class:`~smc_quant.order_manager.SmartOrderManager` (its broker, sender,
    attempt counters, statistics and alarm are shared, not copied)."""

    def __init__(self, broker: Broker, filters: Mapping[str, SymbolFilters], sender: OrderSender,
                 config: OrderConfig, *, attempts: dict[tuple[str, Leg], int], stats: dict[str, int],
                 logger: Any, clock: Callable[[], int], sleep: Callable[[float], Awaitable[None]],
                 alarm: Callable[..., None]) -> None:
        self._broker = broker
        self._filters = filters
        self._sender = sender
        self.config = config
        self._attempts = attempts
        self.stats = stats
        self._log = logger
        self._clock = clock
        self._sleep = sleep
        self._alarm = alarm

    async def exchange_position(self, symbol: str, side: PositionSide) -> ExchangePosition | None:
        for p in await self._broker.positions():
            if p.symbol == symbol and p.side == side and p.quantity > 0:
                return p
        return None

    async def close(self, position: Position, reason: ExitReason, mark: Decimal | None,
                    make_room: Callable[[], Awaitable[None]] | None = None) -> CloseResult:
        """Reduce-only MARKET until flat; see the module docstring. Never returns without a verdict.
        ``make_room``: cancels the position's other orders, called once if an exit is refused for conflicting
        with them (-2022 while the position is still open)."""
        cfg = self.config
        room_made = make_room is None
        filters = self._filters.get(position.symbol)
        sid = position.signal_id or f"{position.symbol}:{position.entry_time_ms}"
        key = (sid, Leg.EXIT)
        attempt = self._attempts.get(key, 0)
        pending: OrderRequest | None = None  # an exit whose outcome is unknown: query it before anything else
        last_error = ""
        last_state: OrderState | None = None
        sent_any = False
        for n in range(1, cfg.exit_max_attempts + 1):
            if n > 1:
                self.stats["exit_retries"] += 1
                await self._sleep(cfg.backoff(n - 1))
            try:
                state: OrderState | None = None
                if pending is not None:
                    state = await self._broker.query_order(pending.symbol, pending.client_order_id)
                    if state is None:  # never reached the book: resend the same id
                        self.stats["resent"] += 1
                        state = await self._sender.send_order(pending, sid, "exit", attempt, budget=1)
                    pending = None
                else:
                    held = await self.exchange_position(position.symbol, position.side)
                    if held is None:
                        return self._flat(position, reason, n, sent_any, last_state)
                    request = self._exit_request(position, held, filters, mark, sid, attempt)
                    sent_any = True
                    try:
                        state = await self._sender.send_order(request, sid, "exit", attempt, budget=1)
                    except StillUnknown:
                        pending = request
                        last_error = "outcome unknown"
                        continue
                state = await self._sender.await_fill(state, cancel_rest=True)
                last_state = state
                # This exit is done with (filled, filled in part, expired, cancelled): the next one gets a new id,
                # before anything else can fail — a filled order's id is accepted again by Binance.
                attempt += 1
                self._attempts[key] = attempt
                last_error = f"exit {state.status} {state.executed_qty}/{state.orig_qty}"
                if state.status == "FILLED":
                    self.stats["exits"] += 1
                    self._log.info("exit_filled", symbol=position.symbol, reason=str(reason),
                                   quantity=str(state.executed_qty), price=str(state.avg_price),
                                   client_id=state.client_order_id)
                    # A partial position (e.g. a bigger one than we knew) is checked on the next pass.
                    held = await self.exchange_position(position.symbol, position.side)
                    if held is None:
                        return CloseResult(True, reason, "closed", state, n, "exit filled")
            except asyncio.CancelledError:
                raise
            except VenueRejected as exc:
                last_error = error_text(exc)
                attempt += 1
                self._attempts[key] = attempt
                if exc.code in _MAYBE_FLAT:
                    try:
                        if await self.exchange_position(position.symbol, position.side) is None:
                            return self._flat(position, reason, n, sent_any, last_state)
                        if exc.code == _CONFLICT and not room_made and make_room is not None:
                            room_made = True  # still open: our stop and target are in the way; they go first
                            self._log.warning("exit_conflicts_with_orders", symbol=position.symbol,
                                              note="protection cancelled before the next exit")
                            await make_room()
                    except TemporaryError as exc2:
                        last_error = error_text(exc2)
            except StillUnknown as exc:
                last_error = f"outcome unknown: {exc}"
            except TemporaryError as exc:
                last_error = error_text(exc)
                if isinstance(exc, RateLimited):
                    await self._sleep(rate_limit_wait_s(exc))
        self._alarm(position.symbol, f"exit not done after {cfg.exit_max_attempts} attempts", reason=str(reason),
                    last_error=last_error)
        cid = client_order_id(sid, Leg.EXIT, attempt)
        await self._sender.record({"client_id": cid, "signal_id": sid, "symbol": position.symbol,
                            "side": exit_side(position.side), "kind": "exit", "order_type": "MARKET", "algo": False,
                            "quantity": position.quantity, "reduce_only": True, "attempt": attempt},
                           status="alarm", last_error=last_error or "exit not done")
        return CloseResult(False, reason, "alarm", last_state, cfg.exit_max_attempts, last_error)

    def _exit_request(self, position: Position, held: ExchangePosition, filters: SymbolFilters | None,
                      mark: Decimal | None, sid: str, attempt: int) -> OrderRequest:
        """A reduce-only MARKET for what the exchange holds (capped at the market max qty; the rest next pass)."""
        quantity = held.quantity
        if filters is not None:
            quantity = min(floor_to_step(quantity, filters.market_step_size), filters.market_max_qty)
            ref = mark or (held.mark_price if held.mark_price > 0 else None) or position.mark_price \
                or position.entry_price
            quantity = validate_order(filters, side=exit_side(position.side), order_type="MARKET",
                                      quantity=quantity, mark_price=ref, reduce_only=True).quantity
        return OrderRequest(position.symbol, exit_side(position.side), "MARKET", quantity,
                            client_order_id(sid, Leg.EXIT, attempt), reduce_only=True)

    def _flat(self, position: Position, reason: ExitReason, n: int, sent_any: bool,
              last: OrderState | None) -> CloseResult:
        if sent_any and last is not None and last.executed_qty > 0:
            return CloseResult(True, reason, "closed", last, n, "flat after exit")
        self.stats["already_flat"] += 1
        self._log.info("exit_already_flat", symbol=position.symbol, reason=str(reason))
        return CloseResult(True, reason, "already_flat", last, n, "position already flat at the exchange")
