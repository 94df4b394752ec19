"""The executor's account events (user-data stream or paper account), handled in one ordered task.

- **Fills.** An ``ORDER_TRADE_UPDATE`` carries a fill when ``l > 0`` on a TRADE *or a CALCULATED* event: Binance puts
  a liquidation's and an ADL's own fill on the CALCULATED event (``x = CALCULATED, X = FILLED``), and may send the
  same fill again as TRADE with the same trade id (the two captured ADL frames). A fill is counted once per
  ``(symbol, order id, trade id)`` with the same side, quantity and price: checked against the signal's fills (also
  those reloaded after a restart) and a bounded memory of recent fills (a duplicate that comes after its position was
  settled). Forced closes are routed to the position on their symbol: ``autoclose-`` = liquidation,
  ``adl_autoclose`` = ADL, ``settlement_autoclose-`` / ``delivery_autoclose-`` = the exchange settled a delisted
  contract.
- **Protection that ended without executing.** An ``ALGO_UPDATE`` saying that the stop or the target of an open
  position is over and executed nothing — REJECTED, EXPIRED, FINISHED with ``aq = 0``, or CANCELED by anyone but
  us (the order manager remembers the cancels it sent: a close cancels both legs once flat, a settled trade its
  leftover leg) — repairs that symbol's protection at once, as the reconciliation would minutes later: under the
  symbol's lock, ``ensure_protection`` re-places what is missing, and a stop that cannot be placed closes the
  position at market with an alarm (the order manager's policy). Skipped when the position is flat at the
  exchange (its fills settle it) or is being closed.
- **ACCOUNT_UPDATE**: the wallet, funding settlements, deposits and withdrawals (the daily loss limit's base moves
  with them), positions gone flat, and positions that are not ours (a person's, another tool's: on a symbol neither
  booked nor being entered, or ours reversed), on which no entry goes out while they are open.
- **listenKeyExpired** / a reconnect: reconcile.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from smc_quant import notify as messages
from smc_quant.book import Book, BookEntry
from smc_quant.domain.trading import ExitReason, Fill, Position, exit_side
from smc_quant.executor_config import ExecutorConfig, ExecutorStats
from smc_quant.orders.broker import AccountEvent, AccountUpdate, AlgoUpdate, Broker, OrderUpdate, StreamExpired
from smc_quant.orders.client_ids import Leg, parse_client_order_id
from smc_quant.orders.fees import fee_in_quote
from smc_quant.persist import Writer
from smc_quant.reconciler import client_id, exchange_close_reason
from smc_quant.risk import DrawdownGuard, funding_amount

_LEG_EXITS = {Leg.STOP_LOSS.value: ExitReason.STOP_LOSS, Leg.TAKE_PROFIT.value: ExitReason.TAKE_PROFIT}
"""The exit an order leg's fill implies (from the leg in its client id)."""
TRANSFERS = frozenset({"DEPOSIT", "WITHDRAW", "WITHDRAW_REJECT", "ADMIN_DEPOSIT", "ADMIN_WITHDRAW"})
"""``ACCOUNT_UPDATE`` reasons for money moved into or out of the futures wallet (``bc``: the amount)."""
RECENT_FILLS = 4096
"""Fill keys remembered after their position settled (a duplicate of a forced close can come after it)."""
FillKey = tuple[str, int, int, str, Decimal, Decimal]
"""symbol, order id, trade id, side, quantity, price of one execution."""


def nearest_leg(position: Position, u: OrderUpdate) -> ExitReason | None:
    """The protection leg an exit fill whose client id is not ours most likely is: the stop or the target whose
    trigger its price lies nearer to, within half that leg's distance from the entry (slippage, a gap); ``None``
    otherwise (a person's close elsewhere, or no stop and target known). The fallback when ``ALGO_UPDATE``'s
    ``ai`` has not named the order before its fill came."""
    stop, target = position.stop_price, position.target_price
    if stop is None or target is None or u.side != exit_side(position.side):
        return None
    to_stop, to_target = abs(u.last_price - stop), abs(u.last_price - target)
    if to_stop <= to_target and to_stop <= abs(position.entry_price - stop) / 2:
        return ExitReason.STOP_LOSS
    if to_target < to_stop and to_target <= abs(target - position.entry_price) / 2:
        return ExitReason.TAKE_PROFIT
    return None


def forced_exit_reason(u: OrderUpdate) -> ExitReason | None:
    """The exit a fill the exchange made on its own implies (``None`` for an order of ours or a person's): by its
    client id (:func:`~smc_quant.reconciler.exchange_close_reason`), or a liquidation's CALCULATED execution."""
    return exchange_close_reason(u.client_order_id) or (ExitReason.LIQUIDATION if u.is_liquidation else None)


class AccountEvents:
    """Mixed into the executor, whose state and steps it uses (declared here for the type checker)."""

    book: Book
    broker: Broker
    manager: Any
    repo: Any | None
    config: ExecutorConfig
    stats: ExecutorStats
    log: Any
    marks: dict[str, Decimal]
    wallet: Decimal
    _wallet_known: bool
    drawdown_guard: DrawdownGuard
    writes: Writer
    _events: asyncio.Queue[AccountEvent]
    _finishing: set[asyncio.Task[Any]]
    _recent_fills: dict[FillKey, None]
    _triggered: dict[tuple[str, int], ExitReason]
    """(symbol, order id) of the orders our stops and targets placed when they fired (``ALGO_UPDATE``'s ``ai``) →
    the exit they are: their fills may carry a client id the exchange made up, not our ``clientAlgoId``."""
    _repairing: set[str]
    _reconciling: asyncio.Lock
    foreign: set[str]
    risk: Any

    def _busy(self, symbol: str) -> bool:
        raise NotImplementedError  # the executor's

    def _check_complete(self, symbol: str) -> None:
        raise NotImplementedError  # the executor's

    def _lock(self, symbol: str) -> asyncio.Lock:
        raise NotImplementedError  # the executor's

    async def _save(self, entry: BookEntry) -> None:
        raise NotImplementedError  # the executor's

    async def reconcile(self) -> None:
        raise NotImplementedError  # the executor's

    def _reconcile_soon(self, why: str) -> None:
        raise NotImplementedError  # the executor's

    def _notify(self, text: str, kind: str) -> None:
        raise NotImplementedError  # the executor's

    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.log.error("event_failed", kind=type(event).__name__, error=f"{type(exc).__name__}: {exc}")
            finally:
                self._events.task_done()

    async def _on_event(self, event: AccountEvent) -> None:
        self.stats.events += 1
        if isinstance(event, OrderUpdate):
            if event.has_fill:
                await self._on_fill(event)
        elif isinstance(event, AlgoUpdate):
            self._on_algo(event)
        elif isinstance(event, AccountUpdate):
            if event.reason == "FUNDING_FEE":
                self._on_funding(event)
            elif event.reason in TRANSFERS and event.balance_change is not None:
                self.risk.on_transfer(event.balance_change)  # the daily loss limit follows what the account holds
                self.log.warning("wallet_transfer", reason=event.reason, amount=str(event.balance_change),
                                 day_start_equity=str(self.risk.day_start_equity))
            if event.wallet_balance is not None:
                self.wallet, self._wallet_known = event.wallet_balance, True
            for pos in event.positions:
                if isinstance(pos, tuple):  # flat
                    self.foreign.discard(pos[0])
                    if pos[0] in self.book:
                        self._check_complete(pos[0])
                elif pos.symbol not in self.foreign and (
                        pos.side != self.book[pos.symbol].position.side if pos.symbol in self.book
                        else not self._busy(pos.symbol)):  # not ours (nor an entry of ours under way), or ours
                    self.foreign.add(pos.symbol)  # reversed by someone: no entry on it
                    self.log.warning("foreign_position", symbol=pos.symbol, side=pos.side, qty=str(pos.quantity),
                                     note="no entry on this symbol while it is open")
        elif isinstance(event, StreamExpired):
            await self.reconcile()

    # -- fills -------------------------------------------------------------------------------------
    @staticmethod
    def _fill_key(u: OrderUpdate) -> FillKey:
        return u.symbol, u.order_id, u.trade_id, u.side, u.last_qty, u.last_price

    def _duplicate(self, u: OrderUpdate, fills: list[Fill] | None) -> bool:
        """Whether this execution was counted already (the same trade id sent as CALCULATED and as TRADE). Side,
        quantity and price must agree too: a paper account restored after a restart numbers its orders and trades
        from 1 again, so ids alone could match an older fill of the same position."""
        if u.trade_id <= 0:  # no trade id to tell executions apart
            return False
        if self._fill_key(u) in self._recent_fills:
            return True
        return fills is not None and any(
            (f.order_id, f.trade_id, f.side, f.quantity, f.price) == self._fill_key(u)[1:] for f in fills)

    def _remember_fill(self, u: OrderUpdate) -> None:
        if u.trade_id > 0:
            self._recent_fills[self._fill_key(u)] = None
            while len(self._recent_fills) > RECENT_FILLS:
                del self._recent_fills[next(iter(self._recent_fills))]

    async def _on_fill(self, u: OrderUpdate) -> None:
        parts = parse_client_order_id(u.client_order_id)
        key = self.book.owner(parts.digest) if parts is not None else None
        forced = forced_exit_reason(u)
        if key is None and u.symbol in self.book and (forced is not None or parts is None):
            key = self.book[u.symbol].position.signal_id
        if self._duplicate(u, self.book.fills(key) if key is not None else None):
            self.log.info("fill_duplicate", symbol=u.symbol, client_id=u.client_order_id, execution=u.execution,
                          order_id=u.order_id, trade_id=u.trade_id)
            return
        fee, source = fee_in_quote(u.commission, u.commission_asset, u.last_qty, u.last_price, self.marks,
                                   self.config.taker_fee)
        if source != "reported":  # charged in BNB (BNB Fee Discount): counted in USDT
            self.stats.fee_sources[source] = self.stats.fee_sources.get(source, 0) + 1
            (self.log.warning if source == "estimated" else self.log.info)(
                "fee_" + source, symbol=u.symbol, commission=f"{u.commission} {u.commission_asset}", usdt=str(fee))
        fill = Fill(u.symbol, u.client_order_id, u.side, u.last_qty, u.last_price, fee, u.trade_time_ms,
                    u.realized_pnl, u.trade_id, u.order_id, u.is_maker)
        self.stats.fills += 1
        if key is None:
            self.log.warning("fill_unmatched", symbol=u.symbol, client_id=u.client_order_id)
            if parts is not None and parts.leg == Leg.ENTRY:  # ours, of no trade the book knows (an entry a dead
                self._reconcile_soon("unmatched_entry_fill")  # process left resting): adopted and protected now,
            return  # not at the next periodic reconciliation minutes later
        self._remember_fill(u)
        self.book.fills(key).append(fill)
        entry = self.book.get(u.symbol)
        if entry is not None and entry.position.signal_id == key:
            if parts is None and forced is not None:
                entry.exit_reason = forced
            elif parts is None and (fired := self._triggered.get((u.symbol, u.order_id))) is not None:
                # a stop's or target's own order, its client id made up by the exchange, named by ALGO_UPDATE's
                # ``ai``: it closed the position, even while an exit of ours was under way (protection stays armed
                # until the position is flat)
                entry.exit_reason = fired
            elif parts is None:
                # the same, told by its price (``ai`` not heard first), or someone else's order: never our exit (ours
                # carry our id), so not named by one under way
                entry.exit_reason = (nearest_leg(entry.position, u)
                                     or (entry.exit_reason if entry.status != "closing" else None)
                                     or (ExitReason.MANUAL if u.side == exit_side(entry.position.side) else None))
            elif parts is not None and parts.leg in _LEG_EXITS:  # our stop's or target's order, by our id
                entry.exit_reason = _LEG_EXITS[parts.leg]
            elif parts is not None and parts.leg is Leg.EXIT and entry.exit_reason is None:
                # an exit the order manager sent on its own (protection it could not put back): named by it
                entry.exit_reason = self.manager.closing_reason(key)
        self._check_complete(u.symbol)  # the book never waits on the database
        if self.repo is not None:
            repo = self.repo
            self.writes.later("fill", lambda: repo.record_fill(fill), {"symbol": fill.symbol, "trade_id": fill.trade_id,
                              "client_id": fill.client_order_id, "qty": str(fill.quantity), "price": str(fill.price)})

    # -- protection the exchange ended -----------------------------------------------------------------
    def _on_algo(self, u: AlgoUpdate) -> None:
        """Our open position's stop or target ended without executing: repair its protection now (background)."""
        entry = self.book.get(u.symbol)
        if (entry is not None and u.actual_order_id is not None
                and u.client_algo_id in (entry.sl_client_id, entry.tp_client_id)):
            self._triggered[(u.symbol, u.actual_order_id)] = (ExitReason.STOP_LOSS if u.client_algo_id ==
                                                               entry.sl_client_id else ExitReason.TAKE_PROFIT)
            while len(self._triggered) > RECENT_FILLS:
                del self._triggered[next(iter(self._triggered))]
        if (entry is None or entry.status != "open" or not u.ended_unexecuted
                or u.client_algo_id not in (entry.sl_client_id, entry.tp_client_id)):
            return
        ours = getattr(self.manager, "cancel_requested", None)
        if u.status == "CANCELED" and ours is not None and ours(u.client_algo_id):
            return  # a cancel we sent (a close cancels both legs; a failed close protects again itself)
        leg = "stop" if u.client_algo_id == entry.sl_client_id else "target"
        self.log.warning("protection_ended", symbol=u.symbol, leg=leg, status=u.status, client_id=u.client_algo_id,
                         reason=u.reject_reason, executed=None if u.executed_qty is None else str(u.executed_qty))
        if u.symbol in self._repairing:
            return  # one repair covers both legs
        self._repairing.add(u.symbol)
        task = asyncio.get_running_loop().create_task(self._repair_protection(entry, f"{leg} {u.status}"))
        self._finishing.add(task)  # awaited by idle() and stop() like a trade being finished
        task.add_done_callback(self._finishing.discard)

    async def _repair_protection(self, entry: BookEntry, why: str) -> None:
        """``ensure_protection`` for ``entry`` under its symbol's lock (what the reconciliation does, now) — after
        a reconciliation under way, never beside it: both would re-place the same stop (the reconciliation does
        not hold symbol locks; it skips a symbol whose lock is held)."""
        symbol = entry.position.symbol
        try:
            async with self._reconciling, self._lock(symbol):
                self._repairing.discard(symbol)  # from here on a new event needs a new repair
                if self.book.get(symbol) is not entry or entry.status != "open":
                    return  # settled or being closed meanwhile
                if not any(p.symbol == symbol for p in await self.broker.positions()):
                    self.log.info("protection_repair_skipped", symbol=symbol, why=why,
                                  note="flat at the exchange: its fills (or the reconciliation) settle it")
                    return
                mark = self.marks.get(symbol) or entry.position.entry_price
                sl, tp = await self.manager.ensure_protection(entry.position, mark)
                ids = (client_id(sl) or entry.sl_client_id, client_id(tp) or entry.tp_client_id)
                if ids != (entry.sl_client_id, entry.tp_client_id):
                    self.stats.repairs += 1
                    entry.sl_client_id, entry.tp_client_id = ids
                    if self.book.get(symbol) is entry:
                        await self._save(entry)
        except Exception as exc:  # a failed repair is logged; the next reconciliation tries again
            self._repairing.discard(symbol)
            self.stats.errors += 1
            self.log.error("protection_repair_failed", symbol=symbol, why=why, error=f"{type(exc).__name__}: {exc}",
                           note="the reconciliation tries again")
            return
        if sl is None:  # the order manager closed the position at market (with an alarm), or could not verify it
            self.log.error("protection_not_restored", symbol=symbol, why=why,
                           note="closed at market if the stop could not be placed; else the reconciliation retries")
            self._notify(messages.error(f"stop not restored {symbol}", why), "error")
            return
        self.log.warning("protection_repaired", symbol=symbol, why=why, stop=entry.sl_client_id,
                         target=entry.tp_client_id)
        if "CANCELED" in why:  # by someone else (a person moving our stop in the app): told, or it goes unseen
            self._notify(messages.error(f"protection replaced {symbol}", f"our {why} by someone else: placed again "
                                        "(the service manages this position's stop and target; close the position "
                                        "to take it over)"), "error")

    def _on_funding(self, event: AccountUpdate) -> None:
        """A funding settlement: money the drawdown must count (:func:`smc_quant.risk.funding_amount`)."""
        amount = funding_amount(event.balance_change, event.wallet_balance, self.wallet if self._wallet_known else None)
        if amount is None:
            self.log.warning("funding_amount_unknown", note="not counted in the max drawdown")
            return
        self.stats.funding_settlements += 1
        self.drawdown_guard.on_funding(amount)
        self.log.info("funding_settled", amount=str(amount), wallet=str(event.wallet_balance))


__all__ = ["RECENT_FILLS", "AccountEvents", "FillKey", "forced_exit_reason", "nearest_leg"]
