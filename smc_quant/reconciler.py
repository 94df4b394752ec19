"""Bringing the executor's book in line with what PostgreSQL remembers (at start) and with what the exchange
holds (at start, every ``reconcile_interval_s`` and whenever the user-data stream was lost).

- **Recover**: the open book, each position's fills and the recently handled signal ids are read back;
  the risk manager gets today's trades and the cooldowns back. A position whose entry fills are missing (their
  events were still queued at a stop, their write was cut by the stop's drain, or the user-data stream was down
  when the entry filled) has them learned from the exchange: see :meth:`Reconciler._complete_entry`.
- **Reconcile**, per symbol:
  - ours and at the exchange: the size compared with what our fills leave (a difference is logged once),
    protection re-ensured;
  - ours, flat at the exchange — or on the other side (a person reversed it: that position is not ours): a
    missing entry fill is learned as at recovery (if that could not be asked then), the exit from our own orders
    (stop, target, market exits), and the trade finished, else the position is taken off the book with an alarm
    (``position_vanished``), its stop and target cancelled (they would close a person's next position on the
    symbol) and its entry recorded as ended (never adopted again);
  - at the exchange only: adopted when our own journalled entry order opened it (a crash between the fill
    and the position row; told), else an alarm for a human, once while it lasts — never touched, and no entry
    goes out on the symbol until it is flat (the executor's ``foreign`` set).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import structlog

from smc_quant.book import Book, BookEntry, filled, held, journalled_position, queried_fill
from smc_quant.domain.trading import ZERO, ExitReason, Fill, Position, entry_side, exit_side
from smc_quant.errors import SmcError, VenueRejected
from smc_quant.executor_config import ExecutorConfig, ExecutorStats
from smc_quant.order_sender import READ_FAILURES, error_text
from smc_quant.orders.broker import Broker, ExchangePosition, OrderState
from smc_quant.orders.client_ids import Leg, client_order_id, parse_client_order_id
from smc_quant.orders.fees import fee_in_quote
from smc_quant.risk import DAY_MS

MAX_EXIT_IDS = 64
"""Market exit ids of one trade asked about at least (each close tries ``exit_max_attempts`` = 8 ids); more when the
order journal records exits beyond."""
ADOPT_WINDOW_MS = DAY_MS
RESTING_ENTRY_WINDOW_MS = 7 * DAY_MS
"""How far back a start looks for LIMIT entries a dead process may have left resting (GTC)."""
"""How far back a journalled entry can be the origin of a position the book does not know: a restart after a
crash within a day is ours to adopt (and close, past the 2-hour limit); an entry of weeks ago is not the origin
of a position seen today — that is a human's, left alone with an alarm."""


class Reconciler:
    """Recovery and reconciliation of one executor's book; see the module docstring.

    ``settle(symbol)`` finishes a position whose fills made it flat, ``save(entry)`` stores a book entry and
    ``refresh_balance()`` reads the wallet over REST — the executor's own steps, so a trade learned here is
    finished exactly like one learned from the user-data stream. A symbol ``busy(symbol)`` says has an entry
    or exit under way is left to it for this round. ``on_alarm(kind, detail)`` tells people of an alarm.
    ``foreign`` is the executor's set of symbols holding a position that is not ours (a person's, another
    tool's): no entry goes out on them; each round adds those it finds and removes those found flat.
    """

    def __init__(self, *, book: Book, broker: Broker, manager: Any, risk: Any, repo: Any | None,
                 marks: Mapping[str, Decimal], clock: Callable[[], int], config: ExecutorConfig,
                 stats: ExecutorStats, log: structlog.stdlib.BoundLogger, settle: Callable[[str], None],
                 save: Callable[[BookEntry], Awaitable[None]],
                 refresh_balance: Callable[[], Awaitable[Decimal]],
                 busy: Callable[[str], bool] = lambda _symbol: False,
                 on_alarm: Callable[[str, str], None] | None = None, foreign: set[str] | None = None) -> None:
        self.book = book
        self.foreign = foreign if foreign is not None else set()
        self._told_unknown: dict[str, str] = {}
        """symbol → the side of the position not ours last told as ``unknown_position`` (told again on a flip)."""
        self.broker = broker
        self.manager = manager
        self.risk = risk
        self.repo = repo
        self.marks = marks
        self.clock = clock
        self.config = config
        self.stats = stats
        self.log = log
        self._settle = settle
        self._save = save
        self._refresh_balance = refresh_balance
        self._busy = busy
        self._on_alarm = on_alarm
        self._mismatches: dict[str, tuple[Decimal, Decimal] | None] = {}
        """symbol → the (exchange quantity, our held quantity) last told as ``position_mismatch``."""

    async def recover(self) -> None:
        """Read the open book, its fills, the recent signal ids and the risk state back from PostgreSQL.

        A position whose stored entry fills fall short of it has them asked of the exchange now — before the event
        loop runs, so no fill of before the restart can come again and be counted twice. A query that fails for now
        leaves them missing (the start goes on): asked again when the position is found flat."""
        if self.repo is None:
            return
        for position, meta in await self.repo.open_positions():
            sig = await self.repo.signal(position.signal_id) if hasattr(self.repo, "signal") else None
            fills = list(await self.repo.fills_for_signal(position.signal_id))
            try:
                await self._complete_entry(position, fills)
            except READ_FAILURES as exc:
                self.log.warning("entry_fill_unknown", symbol=position.symbol, signal_id=position.signal_id,
                                 error=error_text(exc), note="asked again when the position is found flat")
            # a "closing" entry is open again: the exit is re-driven by the exit loop or reconciliation
            self.book.put(BookEntry.of(position, sig, meta.get("sl_client_id"), meta.get("tp_client_id")), fills)
        now = self.clock()
        for sid in await self.repo.recent_signal_ids(now - self.config.dedupe_window_ms):
            self.book.remember(sid)
        await self._cancel_resting_entries(now)
        day_start = now - now % DAY_MS
        equity = await self._refresh_balance()
        cooldown = int(getattr(getattr(self.risk, "config", None), "cooldown_ms", 0))
        recent = await self.repo.trades(since_ms=min(day_start, now - cooldown))
        today = [t for t in recent if t.exit_time_ms >= day_start]
        start_equity = equity - sum((t.net_pnl for t in today), ZERO)
        self.risk.restore(recent, start_equity, now)
        if self.book:
            self.log.info("book_recovered", positions=len(self.book), symbols=sorted(self.book))

    async def _cancel_resting_entries(self, now: int) -> None:
        """Cancel the LIMIT entries a process that died left resting on the exchange's book (its manager takes the
        rest off after ``fill_timeout_s``; a crash in between left it there, GTC, for days): filling later, one
        opened a position no book knew, with no stop, until a reconciliation adopted it — or never, a day on. Each
        ends final in the journal; what it executed before is adopted by the reconciliation that follows (its
        journal row names it). A cancel or query that fails for now is left for the next start (logged)."""
        if self.repo is None or not hasattr(self.repo, "resting_entries"):
            return
        for row in await self.repo.resting_entries(now - RESTING_ENTRY_WINDOW_MS):
            symbol, cid = str(row["symbol"]), str(row["client_order_id"])
            try:
                state = await self.broker.cancel_order(symbol, cid)
                if state is None:  # gone: filled or cancelled meanwhile, or it never reached the exchange
                    _, state = await self._query(symbol, cid, "entry")
            except READ_FAILURES as exc:
                self.stats.errors += 1
                self.log.error("resting_entry_not_cancelled", symbol=symbol, client_id=cid, error=error_text(exc),
                               note="tried again at the next start")
                continue
            status = state.status if state is not None else "CANCELED"
            executed = state.executed_qty if state is not None else ZERO
            await self.repo.finish_order(cid, status=status, executed_qty=executed, time_ms=now)
            self.stats.repairs += 1
            self.log.warning("resting_entry_cancelled", symbol=symbol, client_id=cid, status=status,
                             executed=str(executed), note="left on the book by a process that died")

    async def reconcile(self) -> None:
        """Exchange positions and protection vs our book; repair and log every mismatch."""
        self.stats.reconciliations += 1
        await self._refresh_balance()
        remote = {p.symbol: p for p in await self.broker.positions()}
        for symbol, entry in list(self.book.items()):
            if self._busy(symbol):  # an exit under way: its own result settles it (the next round checks)
                continue
            pos = remote.get(symbol)
            if pos is None or pos.side != entry.position.side:  # flat, or the other side: a person reversed it
                await self._closed_while_away(entry)  # (the other side is never ours: not protected as ours)
                continue
            held = self.book.held(symbol)
            mismatch = (pos.quantity, held) if pos.quantity != held else None
            if mismatch is not None and self._mismatches.get(symbol) != mismatch:  # told once, not every round
                self.log.warning("position_mismatch", symbol=symbol, ours=str(held), exchange=str(pos.quantity),
                                 side=pos.side, note="a fill we did not see (stream down), or one made by hand")
            self._mismatches[symbol] = mismatch
            mark = self.marks.get(symbol) or pos.mark_price or entry.position.entry_price
            sl, tp = await self.manager.ensure_protection(entry.position, mark)
            new_ids = (client_id(sl) or entry.sl_client_id, client_id(tp) or entry.tp_client_id)
            if new_ids != (entry.sl_client_id, entry.tp_client_id):
                self.stats.repairs += 1
                entry.sl_client_id, entry.tp_client_id = new_ids
                await self._save(entry)
        self._mismatches = {s: m for s, m in self._mismatches.items() if s in self.book}
        for symbol, pos in remote.items():
            if symbol in self.book or self._busy(symbol):
                # An entry under way has filled but is not booked yet: it books and protects the position
                # itself; adopting it here would raise a false alarm and protect it twice.
                continue
            if await self._adopt(pos):
                self.foreign.discard(symbol)
                continue
            self.foreign.add(symbol)
            if self._told_unknown.get(symbol) != pos.side:  # once, not at every round nor at every size change
                self._told_unknown[symbol] = pos.side
                await self._alarm("unknown_position", f"{symbol} {pos.side} {pos.quantity}", symbol=symbol,
                                  side=pos.side, qty=str(pos.quantity),
                                  note="not opened by this executor; left alone, and no entry on it while it is open")
        for symbol in [s for s in set(self.foreign) | set(self._told_unknown) if s not in remote]:
            self.foreign.discard(symbol)  # flat again: entries may go out on it
            self._told_unknown.pop(symbol, None)

    async def _adopt(self, remote: ExchangePosition) -> bool:
        """A position the book does not know, opened by our own entry order: take it over and protect it.

        This is the crash between the entry's fill and the position row (the journal row ``sending`` is written
        before every order leaves, with the decision as its ``intent``). The entry must be ours (the newest
        entry journalled on the symbol whose trade is not stored), on the same side: see
        :func:`~smc_quant.book.journalled_position`. The entry fill is read from the stored fills, else
        learned as at recovery (:meth:`_complete_entry`). Returns ``False`` when nothing matches.
        """
        if self.repo is None or not hasattr(self.repo, "latest_entry"):
            return False
        row = await self.repo.latest_entry(remote.symbol, self.clock() - ADOPT_WINDOW_MS)
        position = None if row is None else journalled_position(remote, row)
        if row is None or position is None:
            return False
        signal_id, cid = position.signal_id, str(row["client_order_id"])
        sig = await self.repo.signal(signal_id) if hasattr(self.repo, "signal") else None
        fills = list(await self.repo.fills_for_signal(signal_id))
        await self._complete_entry(position, fills, [cid])
        self.book.remember(signal_id)
        entry = BookEntry.of(position, sig)
        self.book.put(entry, fills)
        mark = self.marks.get(remote.symbol) or remote.mark_price or remote.entry_price
        sl, tp = await self.manager.ensure_protection(position, mark)
        entry.sl_client_id, entry.tp_client_id = client_id(sl), client_id(tp)
        if remote.symbol in self.book:
            await self._save(entry)
        self.stats.repairs += 1
        self.log.warning("position_adopted", symbol=remote.symbol, side=remote.side, qty=str(remote.quantity),
                         signal_id=signal_id, client_id=cid, protected=sl is not None,
                         note="opened by an entry of ours whose position row was never written (crash)")
        detail = f"{remote.symbol} {remote.side} {remote.quantity}"
        if self._on_alarm is not None:  # told: a person should know the service took a position over
            self._on_alarm("position_adopted", detail)
        if self.repo is not None:
            await self.repo.record_alarm("position_adopted", detail, self.clock())
        return True

    async def _closed_while_away(self, entry: BookEntry) -> None:
        """Our position is flat at the exchange: learn a missing entry fill and the exit from the orders we own, then
        finish. A query that fails for now raises: the round fails, the position is kept and asked about again."""
        pos = entry.position
        fills = self.book.fills(pos.signal_id)
        await self._complete_entry(pos, fills)  # without an entry fill no trade can be made of the exit
        known = {f.client_order_id for f in fills}
        for cid, reason in ((entry.sl_client_id, ExitReason.STOP_LOSS), (entry.tp_client_id, ExitReason.TAKE_PROFIT)):
            if cid and cid in known:  # its fill was stored before a crash: the exit is known, and why
                entry.exit_reason = entry.exit_reason or reason
            if not cid or cid in known:
                continue
            asked, state = await self._query(pos.symbol, cid)
            if asked and state is None:  # its order may carry an id the exchange made up: found by actualOrderId
                state = await self._triggered_order(pos.symbol, cid)
            if asked and self._found(entry, cid, state):
                entry.exit_reason = entry.exit_reason or reason
        # Our own market exits (time limit, rotation, breaker, delisting, flatten) whose fills we did not see: a
        # crash after the exit left, or a user-stream gap while it filled. Their ids run ex-0, ex-1, …: asked
        # forward until the exchange does not know one — past an id it refused (journalled REJECTED: never at the
        # exchange, the closer's next try took the next id). The reason is the one this process gave the exit, if
        # it still knows it (after a restart: ``reconciled``).
        refused, last = await self._journalled_exits(pos.signal_id)
        for attempt in range(max(MAX_EXIT_IDS, last + 2)):  # past every journalled one, however many were refused
            cid = client_order_id(pos.signal_id, Leg.EXIT, attempt)
            if cid in known:
                continue
            asked, state = await self._query(pos.symbol, cid)
            if asked and state is None and cid in refused:
                continue
            if not asked or state is None:
                break
            self._found(entry, cid, state)
        self.stats.repairs += 1
        self._settle(pos.symbol)
        if pos.symbol in self.book:  # not flat by our orders: closed by someone (a person, the exchange)
            await self._exits_by_others(entry)
            self._settle(pos.symbol)
        if pos.symbol in self.book:  # still no exit fills: nothing to learn from; close the book entry
            if any(p.symbol == pos.symbol and p.side == pos.side for p in await self.broker.positions()):
                # The round's reading of the positions was older than this position (an entry that filled after
                # it was taken, booked before it was read): it is not gone. Ending it would cancel its stop.
                self.log.warning("position_flat_unconfirmed", symbol=pos.symbol, signal_id=pos.signal_id,
                                 note="held at a second reading: kept, asked about again next round")
                return
            # Closed by someone else (a person, while the user-data stream was down): our stop and target are
            # still armed at the exchange and would close a position the person opens next on the symbol.
            with contextlib.suppress(SmcError):
                await self.manager.cancel_protection(pos)
            self.manager.forget(pos.signal_id)
            if self.repo is not None:  # its entry is over: never adopted again for a position opened later
                await self.repo.end_without_trade(pos.signal_id, pos.symbol, "position_vanished", self.clock())
            self.book.drop(pos.symbol)
            if self.repo is not None:
                await self.repo.delete_position(pos.symbol)
            await self._alarm("position_vanished", f"{pos.symbol} {pos.signal_id}", symbol=pos.symbol,
                              signal_id=pos.signal_id)

    async def _complete_entry(self, position: Position, fills: list[Fill], cids: Sequence[str] = ()) -> None:
        """Add to ``fills`` what they lack of ``position``'s entry, when their entry quantity falls short of it.

        Its entry orders (``cids``, else the signal's journalled entries not refused) are queried by client id, and
        what each executed beyond the fills stored for it is added as one fill whose price keeps the order's average
        (a partial fill seen, the rest not; fee estimated at the taker rate). When no query reports an execution —
        the exchange does not know the order (a paper account rebuilt at a restart never does) or refuses the query
        — the book's own record of the entry (its quantity at its entry price, from the entry's answer) stands for
        what is missing. A query that fails for now raises (``READ_FAILURES``): never taken as an answer.

        Idempotent: fills already complete are not asked about, and a learned fill is in memory only (it has no
        trade id; stored, it would sit beside the real one under another key) — asked again after a restart."""
        side = entry_side(position.side)
        if filled(fills, side) >= position.quantity:
            return
        cids = list(cids) or await self._entry_ids(position.signal_id)
        learned = False
        for cid in cids:
            _, state = await self._query(position.symbol, cid, "entry")
            whole = queried_fill(position.symbol, cid, state, side, self.config.taker_fee, position.entry_time_ms)
            if whole is not None:
                learned = True
                self._add_missing(fills, whole, [f for f in fills if f.side == side and f.client_order_id == cid],
                                  "exchange")
        if not learned:
            whole = Fill(position.symbol, cids[0], side, position.quantity, position.entry_price,
                         position.quantity * position.entry_price * self.config.taker_fee, position.entry_time_ms)
            self._add_missing(fills, whole, [f for f in fills if f.side == side], "book")

    def _add_missing(self, fills: list[Fill], whole: Fill, have: list[Fill], source: str) -> None:
        """Append the part of ``whole`` (every execution of an order, or of the entry) the fills ``have`` lack."""
        rest = whole.quantity - filled(have, whole.side)
        if rest <= 0:
            return
        price = whole.price
        if have:  # the rest at the price that makes the whole's average
            price = (whole.quantity * whole.price - sum((f.quantity * f.price for f in have), ZERO)) / rest
            price = price if price > 0 else whole.price
        fills.append(Fill(whole.symbol, whole.client_order_id, whole.side, rest, price,
                          rest * price * self.config.taker_fee, whole.time_ms))
        self.stats.repairs += 1
        self.log.warning("entry_found_by_reconciliation", symbol=whole.symbol, client_id=whole.client_order_id,
                         qty=str(rest), price=str(price), source=source, fee="estimated")

    async def _entry_ids(self, signal_id: str) -> list[str]:
        """Client ids of the trade's entry orders the journal does not record as refused (the first try's id when
        it records none)."""
        if self.repo is not None and hasattr(self.repo, "orders_for_signal"):
            ids = [str(o["client_order_id"]) for o in await self.repo.orders_for_signal(signal_id)
                   if o["kind"] == "entry" and o["status"] != "REJECTED"]
            if ids:
                return ids
        return [client_order_id(signal_id, Leg.ENTRY, 0)]

    async def _journalled_exits(self, signal_id: str) -> tuple[set[str], int]:
        """The client ids of the trade's exits the order journal records as refused by the exchange, and the highest
        exit attempt it records (−1: none). A long run of refusals (a price band that holds for minutes, 8 ids per
        close) used to push the exit that filled past the :data:`MAX_EXIT_IDS` asked about: its trade was lost."""
        if self.repo is None or not hasattr(self.repo, "orders_for_signal"):
            return set(), -1
        exits = [o for o in await self.repo.orders_for_signal(signal_id) if o["kind"] == "exit"]
        attempts = [p.attempt for o in exits if (p := parse_client_order_id(str(o["client_order_id"]))) is not None]
        return {str(o["client_order_id"]) for o in exits if o["status"] == "REJECTED"}, max(attempts, default=-1)

    async def _query(self, symbol: str, cid: str, leg: str = "exit") -> tuple[bool, OrderState | None]:
        """``(True, state)`` — ``None`` when the exchange does not know the id — or ``(False, None)`` when the
        exchange refuses the query (a symbol no longer listed): logged, nothing to learn from that id. A query
        that fails for now (no answer, throttled, unreadable) raises: the round fails and the next one asks
        again, the position kept — taking it for "no exit" would drop a trade that may have closed."""
        try:
            return True, await self.broker.query_order(symbol, cid)
        except VenueRejected as exc:
            self.log.warning(f"{leg}_query_refused", symbol=symbol, client_id=cid, error=error_text(exc))
            return False, None

    async def _triggered_order(self, symbol: str, cid: str) -> OrderState | None:
        """The order our stop or target ``cid`` placed when it fired, by the algo order's ``actualOrderId``:
        Binance does not document that this order carries our ``clientAlgoId`` as its client id, so the query by
        client id may not know it. ``None`` when the algo order never fired (or is unknown, or refused)."""
        try:
            algo = await self.broker.query_algo(symbol, cid)
            if algo is None or algo.actual_order_id is None:
                return None
            return await self.broker.query_order_id(symbol, algo.actual_order_id)
        except VenueRejected as exc:
            self.log.warning("exit_query_refused", symbol=symbol, client_id=cid, error=error_text(exc))
            return None

    async def _exits_by_others(self, entry: BookEntry) -> None:
        """The exits of ``entry`` that no order of ours made and no event told (the user-data stream was down, or the
        process): a person's close in the app, the exchange's liquidation or ADL. Read from the account's trade
        history since the entry (:meth:`~smc_quant.orders.broker.Broker.user_trades`): the executions on the exit
        side we do not have, oldest first, until they make the position flat. Each one's order is asked for once
        (by the exchange's id) for its client id: an order of ours is skipped (its fills are learned from our own
        ids), and the others give the exit's reason (:func:`exit_reason_of`; the first one found replaces a reason
        left by an exit of ours that failed, but not a stop's or target's found above). A read that fails for now
        raises: the round fails, the position is kept and asked about again. A refusal (a delisted symbol, say) is
        no history: the position ends as ``position_vanished`` — it used to stop every round and the next start."""
        pos = entry.position
        fills = self.book.fills(pos.signal_id)
        left = held(pos, fills)
        history = getattr(self.broker, "user_trades", None)
        if left <= 0 or history is None:
            return
        side = exit_side(pos.side)
        seen = {(f.order_id, f.trade_id) for f in fills if f.trade_id > 0}  # executions we have
        asked = {f.order_id for f in fills if f.trade_id <= 0 and f.order_id > 0}  # orders known as a whole (queried)
        try:
            trades = await history(pos.symbol, pos.entry_time_ms)
        except VenueRejected as exc:
            self.log.warning("trade_history_refused", symbol=pos.symbol, error=error_text(exc))
            return
        reasons: dict[int, ExitReason | None] = {}
        found_others = False
        for t in trades:
            if left <= 0:
                break
            if t.side != side or (t.order_id, t.trade_id) in seen or t.order_id in asked:
                continue
            if t.order_id not in reasons:
                reasons[t.order_id] = await self._order_reason(pos.symbol, t.order_id)
            reason = reasons[t.order_id]
            if reason is None:  # an order of ours: learned from its own id, or not at all (never twice)
                continue
            fee, _ = fee_in_quote(t.commission, t.commission_asset, t.quantity, t.price, self.marks,
                                  self.config.taker_fee)
            fills.append(Fill(pos.symbol, f"exchange-{t.order_id}", side, t.quantity, t.price, fee, t.time_ms,
                              t.realized_pnl, t.trade_id, t.order_id, t.is_maker))
            left -= t.quantity
            if entry.exit_reason not in (ExitReason.STOP_LOSS, ExitReason.TAKE_PROFIT) and not found_others:
                entry.exit_reason = reason  # the first one names it
            found_others = True
            self.stats.repairs += 1
            self.log.warning("exit_found_in_trade_history", symbol=pos.symbol, order_id=t.order_id,
                             trade_id=t.trade_id, qty=str(t.quantity), price=str(t.price), reason=reason.value)

    async def _order_reason(self, symbol: str, order_id: int) -> ExitReason | None:
        """:func:`exit_reason_of` the order with the exchange's ``order_id``; one the exchange refuses to tell of is
        a person's (``manual``). A query that fails for now raises (the round is asked again)."""
        try:
            state = await self.broker.query_order_id(symbol, order_id)
        except VenueRejected as exc:
            self.log.warning("order_not_told", symbol=symbol, order_id=order_id, error=error_text(exc))
            state = None
        return exit_reason_of(state.client_order_id if state is not None else "")

    def _found(self, entry: BookEntry, cid: str, state: OrderState | None) -> bool:
        """Record the exit fill an order query reports for ``entry`` (``False`` when nothing executed)."""
        pos = entry.position
        fill = queried_fill(pos.symbol, cid, state, exit_side(pos.side), self.config.taker_fee)
        if fill is None:
            return False
        self.book.fills(pos.signal_id).append(fill)
        self.log.warning("exit_found_by_reconciliation", symbol=pos.symbol, client_id=cid, fee="estimated")
        return True

    async def _alarm(self, kind: str, detail: str, **fields: Any) -> None:
        """Something a human must look at: counted, logged as ``kind``, told (``on_alarm``) and stored in the
        alarms table."""
        self.stats.alarms += 1
        self.log.error(kind, **fields)
        if self._on_alarm is not None:
            self._on_alarm(kind, detail)
        if self.repo is not None:
            await self.repo.record_alarm(kind, detail, self.clock())


def exchange_close_reason(order_client_id: str) -> ExitReason | None:
    """The exit a close the exchange made on its own implies, by its order's client id: settlement of a delisted (or
    delivered) contract (``settlement_autoclose-``, ``delivery_autoclose-``), ADL (``adl_autoclose``), liquidation
    (``autoclose-``); ``None`` for any other order (ours, a person's)."""
    if order_client_id.startswith(("settlement_autoclose", "delivery_autoclose")):
        return ExitReason.DELISTING
    if order_client_id.startswith("adl_autoclose"):
        return ExitReason.ADL
    if order_client_id.startswith("autoclose-"):
        return ExitReason.LIQUIDATION
    return None


def exit_reason_of(order_client_id: str) -> ExitReason | None:
    """The exit an execution of an order that is not ours makes, by the order's client id (``None``: it is ours):
    the exchange's own close (:func:`exchange_close_reason`), else a person's (or another tool's) close — an order
    the exchange no longer knows too."""
    if parse_client_order_id(order_client_id) is not None:
        return None
    return exchange_close_reason(order_client_id) or ExitReason.MANUAL


def client_id(state: Any) -> str | None:
    """The client id of a protection order's state (``None`` when there is none)."""
    return getattr(state, "client_algo_id", None) if state is not None else None


__all__ = ["Reconciler", "client_id", "exchange_close_reason", "exit_reason_of"]
