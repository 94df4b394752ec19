"""OrderSender: how every order of :class:`~smc_quant.order_manager.SmartOrderManager` leaves — exactly once.

- **Journal first.** Each order is written to the :class:`OrderJournal` as ``sending`` before the request and
  again with the answer, so a crash in between is recovered by querying the client id.
- **Unknown is not failure.** On :class:`OrderStatusUnknown` (timeout, 503 "unknown") or a refusal whose
  outcome is unknown (reactions table: ``query_first``) the order is queried by client id, with backoff,
  until the exchange knows it or says it does not: known → used as is; absent → re-sent with the *same* id
  (the first never reached the book). Nothing is re-sent blind.
- **Temporary failures** (nothing happened) are re-sent with the same id after a backoff, within a budget.

Counts go into the manager's ``stats`` (one dict, shared).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar

from smc_quant.errors import DataRejected, RateLimited, TemporaryError, VenueRejected
from smc_quant.orders.broker import AlgoRequest, AlgoState, Broker, OrderRequest, OrderState, OrderStatusUnknown
from smc_quant.orders.reactions import REACTIONS, Reaction
from smc_quant.tasks import within

__all__ = ["READ_FAILURES", "OrderConfig", "OrderJournal", "OrderKind", "OrderSender", "StillUnknown", "error_text"]

OrderKind = Literal["entry", "stop_loss", "take_profit", "exit"]

READ_FAILURES = (TemporaryError, VenueRejected, DataRejected)
"""How a read (an order query, a list of open orders) can fail. None of them says anything about the orders
read: a read that fails is asked again or reported as unknown, never taken as an answer."""
_T = TypeVar("_T", OrderState, AlgoState)


class OrderJournal(Protocol):
    """Where every order is recorded before it is sent and after the answer (the ``orders`` table)."""

    async def upsert_order(
        self, *, client_id: str, signal_id: str, symbol: str, side: str, kind: str, order_type: str, algo: bool,
        quantity: Decimal | None, price: Decimal | None = None, trigger_price: Decimal | None = None,
        reduce_only: bool = False, close_position: bool = False, status: str, exchange_id: int | None = None,
        attempt: int = 0, last_error: str | None = None, time_ms: int, intent: Mapping[str, object] | None = None,
        executed_qty: Decimal | None = None,
    ) -> None: ...



@dataclass(frozen=True)
class OrderConfig:
    """Order-path settings; times in seconds.

    Backoff between tries ``n = 1, 2, …`` is ``min(exit_retry_base_s · 2^(n−1), exit_retry_max_s)`` for every
    retry of this manager (entries, queries, protection, exits).
    """

    entry_type: Literal["MARKET", "LIMIT"] = "MARKET"
    margin_type: Literal["ISOLATED", "CROSSED"] = "CROSSED"
    fill_timeout_s: float = 10.0
    """How long a LIMIT entry (or an acknowledged but not yet filled MARKET order) is waited for."""
    fill_poll_s: float = 0.5
    """Interval of the order queries while waiting for a fill."""
    exit_retry_base_s: float = 0.5
    exit_retry_max_s: float = 30.0
    exit_max_attempts: int = 8
    """Tries of one exit before the alarm."""
    entry_max_attempts: int = 3
    """Sends of one entry after temporary failures (nothing happened) before it is dropped."""
    query_max_attempts: int = 8
    """Queries after an unknown outcome before the order is reported unknown (and reconciliation takes over)."""
    protection_max_attempts: int = 3
    """Tries of one protective algo order before the position is closed at market."""
    journal_timeout_s: float = 5.0
    """Longest wait for one order journal write: a database that hangs must not hold an exit for minutes."""
    working_type: Literal["CONTRACT_PRICE", "MARK_PRICE"] = "CONTRACT_PRICE"
    limit_offset_ticks: int = 1
    """A LIMIT entry rests this many ticks on the passive side of the mark (BUY below, SELL above): at the
    mark itself it would cross and fill as taker."""

    def backoff(self, n: int) -> float:
        """Delay before retry ``n`` (1-based): exponential, capped."""
        return float(min(self.exit_retry_base_s * 2 ** max(0, n - 1), self.exit_retry_max_s))



class StillUnknown(Exception):
    """Queried ``query_max_attempts`` times and the exchange still could not say (reconciliation decides)."""


class JournalUnavailable(TemporaryError):
    """An entry's journal row could not be written: it is not sent. A position opened without one could not be
    adopted after a crash (nothing would say it is ours); exits and protection are sent all the same."""



def _query_first(exc: VenueRejected) -> bool:
    """True for refusals whose outcome is unknown (reactions table: ``query_first``), e.g. -1007, -4116."""
    rule = REACTIONS.get(exc.code) if exc.code is not None else None
    return rule is not None and rule.reaction == Reaction.QUERY_FIRST


def _exchange_id(state: OrderState | AlgoState) -> int:
    return state.order_id if isinstance(state, OrderState) else state.algo_id


def _executed(state: OrderState | AlgoState) -> Decimal | None:
    return state.executed_qty if isinstance(state, OrderState) else None


def rate_limit_wait_s(exc: RateLimited) -> float:
    """Seconds to outlast a 429/418 pause: measured where it was raised, else against the wall clock — never the
    trading clock, which in a replay runs on market time (a pause until a 2026 instant, seen from 2023, was a
    wait of years, with the exit's stop and target already cancelled)."""
    if exc.wait_s is not None:
        return exc.wait_s
    return max(0.0, (exc.retry_at_ms - time.time() * 1000) / 1000)


def error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{code}: {exc}" if code is not None else f"{type(exc).__name__}: {exc}"



class OrderSender:
    """Sends, queries and journals orders for one manager (see the module docstring)."""

    def __init__(self, broker: Broker, config: OrderConfig, journal: OrderJournal | None, *,
                 clock: Callable[[], int], logger: Any, sleep: Callable[[float], Awaitable[None]],
                 stats: dict[str, int]) -> None:
        self._broker = broker
        self.config = config
        self._journal = journal
        self._clock = clock
        self._log = logger
        self._sleep = sleep
        self.stats = stats

    async def send_order(self, request: OrderRequest, signal_id: str, kind: OrderKind, attempt: int, *,
                          budget: int, intent: Mapping[str, object] | None = None) -> OrderState:
        """Send a plain order; unknown → query first; temporary → resend (same id) up to ``budget`` sends."""
        meta: dict[str, Any] = {
            "client_id": request.client_order_id, "signal_id": signal_id, "symbol": request.symbol,
            "side": request.side, "kind": kind, "order_type": request.type, "algo": False,
            "quantity": request.quantity, "price": request.price, "reduce_only": request.reduce_only,
            "attempt": attempt}
        if intent is not None:
            meta["intent"] = intent
        return await self._send(meta, lambda: self._broker.place_order(request),
                                lambda: self._broker.query_order(request.symbol, request.client_order_id), budget)

    async def send_algo(self, request: AlgoRequest, signal_id: str, kind: OrderKind, attempt: int, *,
                         budget: int) -> AlgoState:
        meta: dict[str, Any] = {
            "client_id": request.client_algo_id, "signal_id": signal_id, "symbol": request.symbol,
            "side": request.side, "kind": kind, "order_type": request.type, "algo": True,
            "quantity": request.quantity, "trigger_price": request.trigger_price,
            "close_position": request.close_position, "reduce_only": request.reduce_only, "attempt": attempt}
        return await self._send(meta, lambda: self._broker.place_algo(request),
                                lambda: self._broker.query_algo(request.symbol, request.client_algo_id), budget)

    async def _send(self, meta: dict[str, Any], place: Callable[[], Awaitable[_T]],
                    query: Callable[[], Awaitable[_T | None]], budget: int) -> _T:
        """The one send loop: journal ``sending`` → send → journal the answer.

        ``OrderStatusUnknown`` → :meth:`_query_until_known`; a known order is the answer, an absent one is
        re-sent with the same id. ``TemporaryError`` (nothing happened) → backoff and resend, at most
        ``budget`` sends in all. ``VenueRejected`` is journalled and raised.
        """
        sends = 0
        while True:
            sends += 1
            if not await self.record(meta, status="sending") and sends == 1 and meta["kind"] == "entry":
                raise JournalUnavailable("the order journal cannot be written: entry not sent")
            self.stats["sent"] += 1
            try:
                state = await place()
            except asyncio.CancelledError:
                await self.record(meta, status="interrupted", last_error="cancelled")
                raise
            except (OrderStatusUnknown, VenueRejected) as exc:
                if isinstance(exc, VenueRejected) and not _query_first(exc):
                    self.stats["rejected"] += 1
                    await self.record(meta, status="REJECTED", last_error=error_text(exc))
                    raise
                # timeout / 503 "unknown" / -1000 / -1006 / -1007 / -4116: the order may exist — ask first
                self.stats["unknown_queried"] += 1
                await self.record(meta, status="unknown", last_error=error_text(exc))
                known = await self._query_until_known(meta, query)
                if known is not None:
                    await self.record(meta, status=known.status, exchange_id=_exchange_id(known),
                                      executed_qty=_executed(known))
                    return known
                if sends >= budget:
                    raise TemporaryError(f"{meta['client_id']}: absent after {sends} unknown sends") from exc
                self.stats["resent"] += 1
                self._log.warning("order_absent_resending", client_id=meta["client_id"], symbol=meta["symbol"])
                continue
            except TemporaryError as exc:
                await self.record(meta, status="failed", last_error=error_text(exc))
                if sends >= budget:
                    raise
                self.stats["retries"] += 1
                await self._wait_after(exc, sends)
                continue
            await self.record(meta, status=state.status, exchange_id=_exchange_id(state), executed_qty=_executed(state))
            return state

    async def _query_until_known(self, meta: dict[str, Any], query: Callable[[], Awaitable[_T | None]]) -> _T | None:
        """Ask the exchange about our id until it answers: the order, or ``None`` (it does not know it).

        Only that answer tells what became of the order. A query that fails in any way — no answer, throttled,
        refused (a second -1021, a 403 from the WAF, a key error) or unreadable — tells nothing, so it is asked
        again; raising its refusal would pass it off as the order's own, and the caller would resend an entry
        that may have filled, or drop one that may have opened a position."""
        delay = self.config.backoff(1)
        for n in range(1, self.config.query_max_attempts + 1):
            await self._sleep(delay)
            try:
                return await query()
            except READ_FAILURES as exc:
                self._log.warning("query_failed", client_id=meta["client_id"], error=error_text(exc), n=n)
                delay = self.delay_after(exc, n + 1)
        raise StillUnknown(meta["client_id"])

    def delay_after(self, exc: Exception, n: int) -> float:
        """The wait before try ``n`` after ``exc``: the backoff, or longer to outlast a 429/418 pause."""
        delay = self.config.backoff(n)
        if isinstance(exc, RateLimited):
            delay = max(delay, rate_limit_wait_s(exc))
        return delay

    async def _wait_after(self, exc: TemporaryError, n: int) -> None:
        await self._sleep(self.delay_after(exc, n))

    async def await_fill(self, state: OrderState, *, cancel_rest: bool) -> OrderState:
        """Poll a not-yet-final order until final or ``fill_timeout_s``; then cancel the rest if asked. A final state
        reached here is journalled (status and executed quantity: a LIMIT entry cancelled unfilled opened nothing,
        and a restart must not adopt a position found later on its symbol as ``latest_entry``'s)."""
        waited = await self._poll_fill(state)
        if not waited.final and cancel_rest:
            waited = await self.cancel_rest(waited)
        if waited.final and not state.final:
            await self._finish(waited)
        return waited

    async def _poll_fill(self, state: OrderState) -> OrderState:
        cfg = self.config
        polls = max(1, int(cfg.fill_timeout_s / cfg.fill_poll_s)) if cfg.fill_poll_s > 0 else 1
        for _ in range(polls):
            if state.final:
                return state
            await self._sleep(cfg.fill_poll_s)
            try:
                state = await self._broker.query_order(state.symbol, state.client_order_id) or state
            except READ_FAILURES as exc:
                self._log.warning("fill_query_failed", client_id=state.client_order_id, error=error_text(exc))
        return state

    async def _finish(self, state: OrderState) -> None:
        """Journal an order's final state, within ``journal_timeout_s`` (a failure is logged and counted)."""
        finish = getattr(self._journal, "finish_order", None)
        if finish is None:
            return
        try:
            await within(finish(state.client_order_id, status=state.status, executed_qty=state.executed_qty,
                                time_ms=self._clock()), self.config.journal_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats["journal_errors"] += 1
            self._log.error("journal_failed", client_id=state.client_order_id, error=error_text(exc))

    async def cancel_rest(self, state: OrderState) -> OrderState:
        """Take a resting order's unfilled rest off the book: its final state. A failed cancel is tried again
        (``protection_max_attempts`` tries in all): given up on, the order might still rest and fill later, so
        the last state known is returned, not final, for the caller to raise the alarm."""
        attempts = self.config.protection_max_attempts
        for n in range(1, attempts + 1):
            try:
                final = await self._broker.cancel_order(state.symbol, state.client_order_id)
                if final is None:  # gone meanwhile (filled or cancelled): the exchange's final word
                    final = await self._broker.query_order(state.symbol, state.client_order_id)
                return final or state
            except READ_FAILURES as exc:
                self._log.warning("cancel_rest_failed", client_id=state.client_order_id, error=error_text(exc), n=n)
                if n < attempts:
                    await self._sleep(self.delay_after(exc, n))
        return state


    async def retrying(self, call: Callable[[], Awaitable[None]]) -> None:
        """A settings call retried on temporary failures (nothing happened; settings calls are idempotent)."""
        for n in range(1, self.config.entry_max_attempts + 1):
            try:
                await call()
                return
            except TemporaryError:
                if n == self.config.entry_max_attempts:
                    raise
                self.stats["retries"] += 1
                await self._sleep(self.config.backoff(n))


    async def journal_ready(self) -> bool:
        """Whether an entry's journal row could be written now (the journal's ``probe_journal``, a row written and
        rolled back, within ``journal_timeout_s``); ``True`` without a journal or a probe."""
        probe = getattr(self._journal, "probe_journal", None)
        if probe is None:
            return True
        try:
            await within(probe(), self.config.journal_timeout_s)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.warning("journal_probe_failed", error=error_text(exc))
            return False

    async def record(self, meta: dict[str, Any], *, status: str, exchange_id: int | None = None,
                      last_error: str | None = None, executed_qty: Decimal | None = None) -> bool:
        """Journal one order state, within ``journal_timeout_s``; whether it was stored. A failure is logged and
        counted; only an entry's first row is required (:class:`JournalUnavailable`)."""
        if self._journal is None:
            return True
        try:
            await within(self._journal.upsert_order(
                **meta, status=status, exchange_id=exchange_id, last_error=last_error, time_ms=self._clock(),
                executed_qty=executed_qty),
                self.config.journal_timeout_s)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats["journal_errors"] += 1
            self._log.error("journal_failed", client_id=meta.get("client_id"), error=error_text(exc))
            return False
