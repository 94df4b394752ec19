"""``TradingRepository``: the SQL of the trading tables (migrations 0004–0007).

PostgreSQL is the source of truth for the trading path: after a restart the executor rebuilds its book
from ``positions`` (including ``entry_time_ms``, so the 2-hour clock keeps running), its pending work
from ``orders`` and its daily loss from ``trades``.

Idempotency: a signal is recorded once per ``signal_id``, a fill once per ``(symbol, trade_id,
client_order_id)`` and a trade once per ``signal_id`` — the stream and a REST query reporting the same
fact, or a restarted shard replaying a setup, store it once. ``close_trade`` writes the trade, the
learner's experience row and removes the position in ONE transaction: either all three happen or none.

Money goes in and out as ``Decimal`` over ``numeric`` columns, so values round-trip exactly (scale
included); features are ``float8[]`` and come back bit-identical.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from smc_quant.domain.trading import ZERO, ExitReason, ExperienceRow, Fill, Position, Signal, Trade
from smc_quant.errors import ConfigError
from smc_quant.tasks import within

DECISIONS = frozenset({"open", "skip", "rotate"})
ORDER_KINDS = frozenset({"entry", "stop_loss", "take_profit", "exit"})
POSITION_STATUSES = frozenset({"opening", "open", "closing"})
RESTING = frozenset({"sending", "interrupted", "unknown", "NEW", "PARTIALLY_FILLED"})
"""Journal statuses of an order that may still rest on the exchange's book (not known final)."""
ALARM_REPEAT_MS = 86_400_000
"""An open alarm with the same kind and detail is stored again after this long (a person may not have seen it)."""

_INSERT_SIGNAL = """
INSERT INTO signals (signal_id, symbol, side, open_time, price, confidence, expected_return_pct, stop_pct,
                     target_pct, setup, features, schema_version, model_version, created_ms, decision,
                     decision_reason, decision_detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb)
ON CONFLICT (signal_id) DO NOTHING"""

_ORDER_COLS = ("client_order_id, signal_id, symbol, side, kind, order_type, algo, quantity, price, trigger_price, "
               "reduce_only, close_position, status, exchange_id, attempt, last_error, created_ms, updated_ms, intent, "
               "executed_qty")
_UPSERT_ORDER = f"""
INSERT INTO orders ({_ORDER_COLS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $18::jsonb, $19)
ON CONFLICT (client_order_id) DO UPDATE SET
    signal_id = EXCLUDED.signal_id, symbol = EXCLUDED.symbol, side = EXCLUDED.side, kind = EXCLUDED.kind,
    order_type = EXCLUDED.order_type, algo = EXCLUDED.algo, quantity = EXCLUDED.quantity, price = EXCLUDED.price,
    trigger_price = EXCLUDED.trigger_price, reduce_only = EXCLUDED.reduce_only,
    close_position = EXCLUDED.close_position, status = EXCLUDED.status,
    exchange_id = COALESCE(EXCLUDED.exchange_id, orders.exchange_id), attempt = EXCLUDED.attempt,
    last_error = EXCLUDED.last_error, updated_ms = EXCLUDED.updated_ms, updated_at = now(),
    intent = COALESCE(EXCLUDED.intent, orders.intent),
    executed_qty = COALESCE(EXCLUDED.executed_qty, orders.executed_qty)"""
_FINISH_ORDER = """
UPDATE orders SET status = $2, executed_qty = $3, updated_ms = $4, updated_at = now() WHERE client_order_id = $1"""
_ORDER = f"SELECT {_ORDER_COLS} FROM orders WHERE client_order_id = $1"
_ORDERS_FOR_SIGNAL = f"SELECT {_ORDER_COLS} FROM orders WHERE signal_id = $1 ORDER BY created_ms, client_order_id"
_LATEST_ENTRY = f"""
SELECT {_ORDER_COLS} FROM orders
WHERE symbol = $1 AND kind = 'entry' AND status NOT IN ('REJECTED', 'failed')
  AND NOT (status IN ('CANCELED', 'EXPIRED', 'EXPIRED_IN_MATCH') AND COALESCE(executed_qty = 0, false))
  AND NOT EXISTS (SELECT 1 FROM trades t WHERE t.signal_id = orders.signal_id)
  AND NOT EXISTS (SELECT 1 FROM ended_entries e WHERE e.signal_id = orders.signal_id)
  AND ($2::timestamptz IS NULL OR inserted_at >= $2) AND ($3::bigint IS NULL OR created_ms >= $3)
ORDER BY created_ms DESC, client_order_id DESC LIMIT 1"""

_RESTING_ENTRIES = f"""
SELECT {_ORDER_COLS} FROM orders
WHERE kind = 'entry' AND order_type = 'LIMIT' AND status IN ({", ".join(f"'{s}'" for s in sorted(RESTING))})
  AND ($1::timestamptz IS NULL OR inserted_at >= $1) AND created_ms >= $2
ORDER BY created_ms, client_order_id"""

_INSERT_FILL = """
INSERT INTO fills (symbol, trade_id, client_order_id, order_id, side, qty, price, fee, realized_pnl, time_ms, is_maker)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (symbol, trade_id, client_order_id) DO NOTHING"""
_FILLS_FOR_SIGNAL = """
SELECT f.symbol, f.client_order_id, f.side, f.qty, f.price, f.fee, f.time_ms, f.realized_pnl, f.trade_id,
       f.order_id, f.is_maker
FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id
WHERE o.signal_id = $1 ORDER BY f.time_ms, f.id"""

_SAVE_POSITION = """
INSERT INTO positions (symbol, side, quantity, entry_price, entry_time_ms, signal_id, confidence, leverage,
                       stop_price, target_price, sl_client_id, tp_client_id, status, updated_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
        COALESCE($14, (extract(epoch FROM clock_timestamp()) * 1000)::bigint))
ON CONFLICT (symbol) DO UPDATE SET
    side = EXCLUDED.side, quantity = EXCLUDED.quantity, entry_price = EXCLUDED.entry_price,
    entry_time_ms = EXCLUDED.entry_time_ms, signal_id = EXCLUDED.signal_id, confidence = EXCLUDED.confidence,
    leverage = EXCLUDED.leverage, stop_price = EXCLUDED.stop_price, target_price = EXCLUDED.target_price,
    sl_client_id = EXCLUDED.sl_client_id, tp_client_id = EXCLUDED.tp_client_id, status = EXCLUDED.status,
    updated_ms = EXCLUDED.updated_ms, updated_at = now()"""
_OPEN_POSITIONS = "SELECT * FROM positions ORDER BY symbol"

_INSERT_TRADE = """
INSERT INTO trades (signal_id, symbol, side, quantity, entry_price, exit_price, entry_time_ms, exit_time_ms, fees,
                    gross_pnl, net_pnl, net_return_pct, exit_reason, confidence, model_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (signal_id) DO NOTHING RETURNING id"""
_INSERT_EXPERIENCE = """
INSERT INTO experience (trade_id, symbol, side, features, schema_version, net_return_pct, signal_time_ms,
                        closed_ms, model_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""
_DELETE_CLOSED_POSITION = "DELETE FROM positions WHERE symbol = $1 AND signal_id = $2"
_TRADES = """
SELECT signal_id, symbol, side, quantity, entry_price, exit_price, entry_time_ms, exit_time_ms, fees, exit_reason,
       confidence
FROM trades WHERE exit_time_ms >= $1 AND exit_time_ms <= $2 AND ($3::timestamptz IS NULL OR inserted_at >= $3)
ORDER BY exit_time_ms, id"""
_EXPERIENCE = """
SELECT e.symbol, e.side, e.features, e.schema_version, e.net_return_pct, e.signal_time_ms, e.closed_ms, e.model_version,
       t.exit_reason
FROM experience e LEFT JOIN trades t ON t.id = e.trade_id
WHERE e.schema_version = $1 AND e.closed_ms >= $2 ORDER BY e.closed_ms, e.id"""

_MIN_MS = -(2**63)
_MAX_MS = 2**63 - 1


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {sorted(allowed)}, got {value!r}")


def _json(detail: Mapping[str, object]) -> str:
    """Decision detail as JSON text; Decimals and other non-JSON values are written as their str()."""
    return orjson.dumps(dict(detail), default=str).decode()


def _order(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    raw = out.get("intent")
    out["intent"] = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return out


def _position(row: asyncpg.Record) -> Position:
    return Position(symbol=row["symbol"], side=row["side"], quantity=row["quantity"], entry_price=row["entry_price"],
                    entry_time_ms=row["entry_time_ms"], leverage=row["leverage"], signal_id=row["signal_id"],
                    confidence=row["confidence"], stop_price=row["stop_price"], target_price=row["target_price"])


def _trade(row: asyncpg.Record) -> Trade:
    return Trade(signal_id=row["signal_id"], symbol=row["symbol"], side=row["side"], quantity=row["quantity"],
                 entry_price=row["entry_price"], exit_price=row["exit_price"], entry_time_ms=row["entry_time_ms"],
                 exit_time_ms=row["exit_time_ms"], fees=row["fees"], exit_reason=ExitReason(row["exit_reason"]),
                 confidence=row["confidence"])


def _fill(row: asyncpg.Record) -> Fill:
    return Fill(symbol=row["symbol"], client_order_id=row["client_order_id"], side=row["side"], quantity=row["qty"],
                price=row["price"], fee=row["fee"], time_ms=row["time_ms"], realized_pnl=row["realized_pnl"],
                trade_id=row["trade_id"], order_id=row["order_id"], is_maker=row["is_maker"])


def _experience(row: asyncpg.Record) -> ExperienceRow:
    return ExperienceRow(symbol=row["symbol"], side=row["side"], features=tuple(row["features"]),
                         schema_version=row["schema_version"], net_return_pct=row["net_return_pct"],
                         signal_time_ms=row["signal_time_ms"], closed_ms=row["closed_ms"],
                         model_version=row["model_version"], exit_reason=row["exit_reason"])


@dataclass(frozen=True, slots=True)
class AccountEpoch:
    """The account this database's trading state belongs to since ``started_at`` (``None``: since the first row);
    ``previous`` is the account of the epoch before (``None`` for the first); ``started_ms`` the service clock;
    ``switched``: this call started the epoch, replacing ``previous``."""

    account: str
    previous: str | None
    started_at: datetime | None
    started_ms: int
    switched: bool = False


class AccountConflict(ConfigError):
    """The database holds an open book of another account: starting would mix the two (message says what to do)."""


_EPOCH_LOCK = 0x534D_4351_4143_43  # "SMCQACC": binding an account is serialised across processes
_EXECUTOR_LOCK = 0x534D_4351_4558_45  # "SMCQEXE": held by the one executor of this database's account
_EXECUTOR_HOLDER = """
SELECT min(pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = $1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
_EXECUTOR_HELD = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
               AND ((classid::bigint << 32) | objid::bigint) = $1)"""
_LOCK_SESSION = (  # the lock lives as long as its session: never end it for idleness, notice a dead peer
    "SET idle_session_timeout = 0", "SET tcp_keepalives_idle = 60", "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 6")
_LATEST_EPOCH = "SELECT account, previous, started_at, started_ms FROM account_epochs ORDER BY id DESC LIMIT 1"


class TradingRepository:
    """Signals, orders, fills, the open book, closed trades, experience and alarms in PostgreSQL.

    After :meth:`bind_account` the history that describes one account — :meth:`trades`,
    :meth:`realized_since`, :meth:`funding_paid` and :meth:`latest_entry` — is read from the current account
    epoch only, so a switch from paper to live (or between venues) never restores the other account's daily
    loss, cooldowns, wallet or journalled entries. Signals, fills of open positions, experience and alarms are
    not scoped: the learner learns from every trade the database saw, paper and live alike.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._epoch_start: datetime | None = None
        self._executor_lock: asyncpg.Connection | None = None
        self.down_since: float | None = None
        """Monotonic time of the first failed :meth:`check_executor` since the last one PostgreSQL answered: the
        executor's probe of its database (``/health``'s ``database_down``)."""

    async def claim_executor(self) -> None:
        """Become this database's one executor: a session advisory lock, held on a connection of its own until
        :meth:`release_executor` (or until this process dies: PostgreSQL drops it with the connection).
        ``AccountConflict`` when another process holds it — two executors on one account would each place
        orders, count positions on their own, and adopt and close each other's."""
        if self._executor_lock is not None:
            return
        conn = await self._pool.acquire()
        try:
            for statement in _LOCK_SESSION:
                with contextlib.suppress(asyncpg.PostgresError):  # a server without the setting (or a socket)
                    await conn.execute(statement)
            held = await conn.fetchval("SELECT pg_try_advisory_lock($1)", _EXECUTOR_LOCK)
            if not held:
                holder = await conn.fetchval(_EXECUTOR_HOLDER, _EXECUTOR_LOCK)
                raise AccountConflict(
                    f"another executor is running on this database (PostgreSQL backend pid {holder}): one account "
                    "has exactly one executor — stop the other (`smc-quant run` or `smc-quant executor`) first")
        except BaseException:
            await self._pool.release(conn)
            raise
        self._executor_lock = conn

    async def executor_holder(self) -> int | None:
        """The PostgreSQL backend pid of the session holding this database's executor lock (``None``: no executor
        runs on this database)."""
        pid = await self._pool.fetchval(_EXECUTOR_HOLDER, _EXECUTOR_LOCK)
        return None if pid is None else int(pid)

    async def check_executor(self, timeout_s: float = 10.0) -> bool:
        """Whether this process still holds the executor lock — ``True`` — or had lost it and took it again —
        ``False``. PostgreSQL drops a session lock with its connection (a server restart or failover, a proxy's
        idle timeout), silently: without this check a second executor could then start beside us.
        ``AccountConflict`` when another process took it meanwhile; a database error (or ``TimeoutError`` after
        ``timeout_s``: a database that hangs) when it cannot be told — and ``down_since`` says since when."""
        try:
            held = await within(self._check_executor(), timeout_s)
        except AccountConflict:
            self.down_since = None  # it answered
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if self.down_since is None:
                self.down_since = time.monotonic()
            raise
        self.down_since = None
        return held

    async def _check_executor(self) -> bool:
        conn = self._executor_lock
        if conn is not None:
            try:
                if await conn.fetchval(_EXECUTOR_HELD, _EXECUTOR_LOCK):
                    return True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # the session is gone, and its lock with it
            self._executor_lock = None
            await self._discard(conn)
        await self.claim_executor()
        return False

    async def release_executor(self) -> None:
        """Give the executor lock back (at a graceful stop; a session already gone has given it back)."""
        conn, self._executor_lock = self._executor_lock, None
        if conn is None:
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _EXECUTOR_LOCK)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self._discard(conn)
        else:
            await self._pool.release(conn)

    async def _discard(self, conn: asyncpg.Connection) -> None:
        """Close a lock session that failed and hand its slot back to the pool (asyncpg may have taken back the
        connection of a lost session already: then both calls refuse, and there is nothing left to do)."""
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        with contextlib.suppress(asyncpg.InterfaceError):
            await self._pool.release(conn)

    async def bind_account(self, account: str, now_ms: int) -> AccountEpoch:
        """Claim this database's trading state for ``account`` (e.g. ``paper``, ``live https://fapi.binance.com``).

        - No epoch yet: ``account`` owns everything stored so far (a database from before epochs existed).
        - The same account as the latest epoch: nothing changes (a restart).
        - Another account: refused with :class:`AccountConflict` while the book holds positions (they belong
          to the other account; closing or adopting them here would be wrong); with a flat book a new epoch
          starts now, and the account-scoped history starts empty.
        """
        if not account:
            raise ValueError("account must not be empty")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _EPOCH_LOCK)
            row = await conn.fetchrow(_LATEST_EPOCH)
            if row is not None and row["account"] == account:
                epoch = AccountEpoch(account, row["previous"], row["started_at"], row["started_ms"])
            elif row is None:
                await conn.execute("INSERT INTO account_epochs (account, started_ms) VALUES ($1, $2)", account, now_ms)
                epoch = AccountEpoch(account, None, None, now_ms)
            else:
                open_book = [r["symbol"] for r in await conn.fetch("SELECT symbol FROM positions ORDER BY symbol")]
                if open_book:
                    raise AccountConflict(
                        f"this database's open book ({len(open_book)} position(s): {', '.join(open_book[:10])}) "
                        f"belongs to account '{row['account']}'; starting as '{account}' would mix the two. Run as "
                        f"'{row['account']}' until the book is flat, or point DATABASE_URL at another database")
                started = await conn.fetchval(
                    "INSERT INTO account_epochs (account, previous, started_at, started_ms) "
                    "VALUES ($1, $2, clock_timestamp(), $3) RETURNING started_at", account, row["account"], now_ms)
                epoch = AccountEpoch(account, row["account"], started, now_ms, switched=True)
        self._epoch_start = epoch.started_at
        return epoch

    async def read_epoch(self) -> AccountEpoch | None:
        """The latest account epoch, read only (a report or a status, not a service claiming the database): the
        account-scoped reads (:meth:`trades`, :meth:`funding_paid`, …) then cover that epoch. ``None``: no
        account was ever bound, everything stored is read."""
        row = await self._pool.fetchrow(_LATEST_EPOCH)
        if row is None:
            return None
        self._epoch_start = row["started_at"]
        return AccountEpoch(row["account"], row["previous"], row["started_at"], row["started_ms"])

    async def record_signal(self, signal: Signal, decision: str, reason: str, detail: Mapping[str, object]) -> bool:
        """Store ``signal`` with the risk decision (``open``/``skip``/``rotate``); ``False`` if already stored."""
        _check(decision, DECISIONS, "decision")
        status = await self._pool.execute(
            _INSERT_SIGNAL, signal.signal_id, signal.symbol, signal.side, signal.open_time, signal.price,
            signal.confidence, signal.expected_return_pct, signal.stop_pct, signal.target_pct, signal.setup,
            list(signal.features), signal.schema_version, signal.model_version, signal.created_ms, decision,
            reason, _json(detail))
        return bool(status == "INSERT 0 1")

    async def recent_signal_ids(self, since_ms: int) -> set[str]:
        """Ids of the signals created since ``since_ms`` (the executor's duplicate filter after a restart)."""
        rows = await self._pool.fetch("SELECT signal_id FROM signals WHERE created_ms >= $1", since_ms)
        return {r["signal_id"] for r in rows}

    async def signal(self, signal_id: str) -> Signal | None:
        """The stored signal (frozen features, model version), e.g. to rebuild the book after a restart."""
        row = await self._pool.fetchrow(
            "SELECT signal_id, symbol, side, open_time, price, confidence, expected_return_pct, stop_pct, target_pct,"
            " setup, features, schema_version, model_version, created_ms FROM signals WHERE signal_id = $1",
            signal_id)
        if row is None:
            return None
        return Signal(signal_id=row["signal_id"], symbol=row["symbol"], side=row["side"], open_time=row["open_time"],
                      price=row["price"], confidence=row["confidence"], stop_pct=row["stop_pct"],
                      target_pct=row["target_pct"], setup=row["setup"], features=tuple(row["features"]),
                      expected_return_pct=row["expected_return_pct"], model_version=row["model_version"],
                      schema_version=row["schema_version"], created_ms=row["created_ms"])

    async def upsert_order(self, *, client_id: str, signal_id: str, symbol: str, side: str, kind: str,
                           order_type: str, algo: bool, quantity: Decimal | None, price: Decimal | None = None,
                           trigger_price: Decimal | None = None, reduce_only: bool = False,
                           close_position: bool = False, status: str, exchange_id: int | None = None,
                           attempt: int = 0, last_error: str | None = None, time_ms: int,
                           intent: Mapping[str, object] | None = None, executed_qty: Decimal | None = None) -> None:
        """Insert or update our order ``client_id`` (plain or algo).

        On update ``created_ms`` keeps its first value, ``updated_ms`` becomes ``time_ms``, and a known
        ``exchange_id`` or ``intent`` is never overwritten by ``None`` (a retry that has not heard back yet).
        ``intent`` (entries): the decision's stop/target prices, leverage and confidence — what a restart
        needs to protect the position should the process die before the position row is written.
        ``executed_qty``: how much the exchange executed, when its answer said (``None`` keeps what is stored).
        """
        _check(kind, ORDER_KINDS, "order kind")
        await self._pool.execute(
            _UPSERT_ORDER, client_id, signal_id, symbol, side, kind, order_type, algo, quantity, price,
            trigger_price, reduce_only, close_position, status, exchange_id, attempt, last_error, time_ms,
            None if intent is None else _json(intent), executed_qty)

    async def finish_order(self, client_id: str, *, status: str, executed_qty: Decimal, time_ms: int) -> None:
        """The final state of our order ``client_id`` (a LIMIT entry filled, or its rest cancelled)."""
        await self._pool.execute(_FINISH_ORDER, client_id, status, executed_qty, time_ms)

    async def probe_journal(self) -> None:
        """Write an order journal row and roll it back: raises what an entry's row would meet now (PostgreSQL out
        of reach, a write refused, a lock held — the caller bounds the wait). The check before a rotation gives
        a position up for an entry that could not be journalled."""
        async with self._pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(_UPSERT_ORDER, "journal-probe", "journal-probe", "PROBEUSDT", "BUY", "entry",
                                   "MARKET", False, Decimal(1), None, None, False, False, "probe", None, 0, None, 0,
                                   None, None)
            finally:
                await tx.rollback()

    async def order(self, client_id: str) -> dict[str, Any] | None:
        """The row of order ``client_id`` as a dict (column names as keys; ``intent`` decoded), or ``None``."""
        row = await self._pool.fetchrow(_ORDER, client_id)
        return None if row is None else _order(row)

    async def orders_for_signal(self, signal_id: str) -> list[dict[str, Any]]:
        """Every order of ``signal_id``, oldest first."""
        return [_order(r) for r in await self._pool.fetch(_ORDERS_FOR_SIGNAL, signal_id)]

    async def latest_entry(self, symbol: str, since_ms: int | None = None) -> dict[str, Any] | None:
        """Our newest entry order on ``symbol`` that was not refused, did not end with nothing executed (CANCELED
        or EXPIRED with ``executed_qty`` 0: a LIMIT entry whose rest was cancelled unfilled opened nothing) and
        whose trade is not stored — the order that opened a position the book does not know (a crash between the
        fill and the position row); journalled at ``since_ms`` or later when given (an entry of weeks ago is not
        the origin of a position seen today: a human's)."""
        row = await self._pool.fetchrow(_LATEST_ENTRY, symbol, self._epoch_start, since_ms)
        return None if row is None else _order(row)

    async def resting_entries(self, since_ms: int) -> list[dict[str, Any]]:
        """Our LIMIT entries journalled since ``since_ms`` not known to be final (:data:`RESTING`), oldest first:
        at a start, those a process that died left on the exchange's book."""
        return [_order(r) for r in await self._pool.fetch(_RESTING_ENTRIES, self._epoch_start, since_ms)]

    async def record_fill(self, fill: Fill) -> bool:
        """Store one execution; ``False`` when this (symbol, trade_id, client_order_id) is already stored."""
        status = await self._pool.execute(
            _INSERT_FILL, fill.symbol, fill.trade_id, fill.client_order_id, fill.order_id, fill.side,
            fill.quantity, fill.price, fill.fee, fill.realized_pnl, fill.time_ms, fill.is_maker)
        return bool(status == "INSERT 0 1")

    async def fills_for_signal(self, signal_id: str) -> list[Fill]:
        """The fills of every order of ``signal_id`` (joined through ``orders.signal_id``), by time."""
        return [_fill(r) for r in await self._pool.fetch(_FILLS_FOR_SIGNAL, signal_id)]

    async def save_position(self, position: Position, *, status: str, sl_client_id: str | None,
                            tp_client_id: str | None, time_ms: int | None = None) -> None:
        """Insert or replace the book entry of ``position.symbol``.

        ``status`` is ``opening``, ``open`` or ``closing``; ``time_ms`` (default: the database clock) is
        stored as ``updated_ms``. ``mark_price`` is transient and not stored.
        """
        _check(status, POSITION_STATUSES, "position status")
        p = position
        await self._pool.execute(
            _SAVE_POSITION, p.symbol, p.side, p.quantity, p.entry_price, p.entry_time_ms, p.signal_id,
            p.confidence, p.leverage, p.stop_price, p.target_price, sl_client_id, tp_client_id, status, time_ms)

    async def open_positions(self) -> list[tuple[Position, dict[str, Any]]]:
        """The open book by symbol: each position with ``{status, sl_client_id, tp_client_id, updated_ms}``."""
        rows = await self._pool.fetch(_OPEN_POSITIONS)
        keys = ("status", "sl_client_id", "tp_client_id", "updated_ms")
        return [(_position(r), {k: r[k] for k in keys}) for r in rows]

    async def delete_position(self, symbol: str) -> None:
        """Remove ``symbol`` from the book (no error when it is not there)."""
        await self._pool.execute("DELETE FROM positions WHERE symbol = $1", symbol)

    async def close_trade(self, trade: Trade, *, features: Sequence[float], schema_version: str,
                          signal_time_ms: int, model_version: int | None) -> int | None:
        """Record a closed round trip in ONE transaction; return the new trade id, ``None`` if already recorded.

        Inserts the trade (gross = (exit − entry)·qty·dir, net = gross − fees), its experience row
        (signal-time ``features``, ``net_return_pct`` = net / (entry·qty) · 100; none when ``schema_version`` is
        empty: a position adopted after a crash whose signal row was never written) and removes the book entry
        of ``trade.symbol`` if it still belongs to ``trade.signal_id``. Any failure rolls all three back.
        """
        t = trade
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO on")  # a closed trade is durable on commit
            trade_id: int | None = await conn.fetchval(
                _INSERT_TRADE, t.signal_id, t.symbol, t.side, t.quantity, t.entry_price, t.exit_price,
                t.entry_time_ms, t.exit_time_ms, t.fees, t.gross_pnl, t.net_pnl, t.net_return_pct,
                t.exit_reason.value, t.confidence, model_version)
            if trade_id is None:
                return None
            if schema_version:  # a position adopted without its signal row has no features to learn from
                await conn.execute(_INSERT_EXPERIENCE, trade_id, t.symbol, t.side, [float(f) for f in features],
                                   schema_version, t.net_return_pct, signal_time_ms, t.exit_time_ms, model_version)
            await conn.execute(_DELETE_CLOSED_POSITION, t.symbol, t.signal_id)
            return trade_id

    async def trades(self, since_ms: int | None = None, until_ms: int | None = None) -> list[Trade]:
        """Closed trades of the current account epoch with ``since_ms ≤ exit_time_ms ≤ until_ms`` (bounds
        optional), by exit time."""
        rows = await self._pool.fetch(_TRADES, _MIN_MS if since_ms is None else since_ms,
                                      _MAX_MS if until_ms is None else until_ms, self._epoch_start)
        return [_trade(r) for r in rows]

    async def trades_count(self, since_ms: int | None = None) -> int:
        """How many trades closed at or after ``since_ms`` (all when ``None``)."""
        count: int = await self._pool.fetchval("SELECT count(*) FROM trades WHERE exit_time_ms >= $1",
                                               _MIN_MS if since_ms is None else since_ms)
        return count

    async def experience(self, schema_version: str, since_ms: int | None = None) -> list[ExperienceRow]:
        """The learner's rows of one feature schema closed at or after ``since_ms``, oldest first."""
        rows = await self._pool.fetch(_EXPERIENCE, schema_version, _MIN_MS if since_ms is None else since_ms)
        return [_experience(r) for r in rows]

    @property
    def epoch_start(self) -> datetime | None:
        """When the current account epoch began (``None`` before :meth:`bind_account`, or with no epoch)."""
        return self._epoch_start

    async def pnl_steps(self, since: datetime | None = None) -> list[tuple[int, Decimal]]:
        """The max-drawdown PnL path of the current account epoch since ``since`` (all when ``None``), as
        ``(time_ms, amount)``: each trade stored since then at its exit time with its net PnL, and each paper
        funding payment stored since then at its funding time, negated (a payment lowers the PnL).
        ``smc_quant.risk.pnl_path`` folds them."""
        rows = await self._pool.fetch(
            "SELECT exit_time_ms AS t, net_pnl AS amount FROM trades"
            " WHERE ($1::timestamptz IS NULL OR inserted_at >= $1) AND ($2::timestamptz IS NULL OR inserted_at >= $2)"
            " UNION ALL SELECT time_ms, -amount FROM funding_payments"
            " WHERE ($1::timestamptz IS NULL OR inserted_at >= $1) AND ($2::timestamptz IS NULL OR inserted_at >= $2)"
            " ORDER BY t", since, self._epoch_start)
        return [(int(r["t"]), Decimal(r["amount"])) for r in rows]

    async def realized_since(self, since_ms: int) -> Decimal:
        """Σ net_pnl of the current account epoch's trades closed at or after ``since_ms`` (the paper wallet)."""
        total: Decimal | None = await self._pool.fetchval(
            "SELECT sum(net_pnl) FROM trades "
            "WHERE exit_time_ms >= $1 AND ($2::timestamptz IS NULL OR inserted_at >= $2)", since_ms, self._epoch_start)
        return ZERO if total is None else total

    async def record_funding(self, symbol: str, time_ms: int, rate: Decimal, amount: Decimal) -> bool:
        """Store a paper funding payment once per (symbol, funding time); ``False`` when it was already stored."""
        status = await self._pool.execute(
            "INSERT INTO funding_payments (symbol, time_ms, rate, amount) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (symbol, time_ms) DO NOTHING", symbol, time_ms, rate, amount)
        return bool(status.endswith(" 1"))

    async def funding_between(self, start_ms: int, end_ms: int) -> Decimal:
        """Σ paper funding the current account epoch paid (received counts negative) at funding times in
        ``[start_ms, end_ms]``."""
        total: Decimal | None = await self._pool.fetchval(
            "SELECT sum(amount) FROM funding_payments WHERE time_ms BETWEEN $1 AND $2"
            " AND ($3::timestamptz IS NULL OR inserted_at >= $3)", start_ms, end_ms, self._epoch_start)
        return ZERO if total is None else total

    async def funding_paid(self) -> Decimal:
        """Σ funding the current account epoch paid (received counts negative), at any funding time."""
        return await self.funding_between(_MIN_MS, _MAX_MS)

    async def last_summary_day(self) -> int | None:
        """The newest UTC day (epoch ms // ``DAY_MS``) whose daily summary was told (``None``: none yet)."""
        day: int | None = await self._pool.fetchval("SELECT max(day) FROM daily_summaries")
        return day

    async def claim_summary(self, day: int, trades: int, net_pnl: Decimal, equity: Decimal) -> bool:
        """Record that ``day``'s summary is being told; ``False`` when it already was (then it is not told)."""
        status = await self._pool.execute(
            "INSERT INTO daily_summaries (day, trades, net_pnl, equity) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (day) DO NOTHING", day, trades, net_pnl, equity)
        return bool(status.endswith(" 1"))

    async def end_without_trade(self, signal_id: str, symbol: str, reason: str, time_ms: int) -> None:
        """Record that ``signal_id``'s position ended without a trade of ours (``reason``: ``position_vanished``):
        :meth:`latest_entry` never returns its entry again. Idempotent."""
        await self._pool.execute(
            "INSERT INTO ended_entries (signal_id, symbol, reason, time_ms) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (signal_id) DO NOTHING", signal_id, symbol, reason, time_ms)

    async def record_alarm(self, kind: str, detail: str, time_ms: int) -> None:
        """Store something that needs a human (an exit that failed after its retries, an unknown position) —
        once a day while it is open: the same kind and detail again (every reconciliation finds the same unknown
        position) adds no row until it is resolved or a day has passed. Nothing resolves alarms but a person, so
        "until resolved" alone made it once ever: the same position found again weeks later left no row."""
        await self._pool.execute(
            "INSERT INTO alarms (kind, detail, time_ms) SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM alarms "
            "WHERE kind = $1 AND detail = $2 AND resolved_at IS NULL AND time_ms > $3::bigint - $4::bigint)",
            kind, detail, time_ms, ALARM_REPEAT_MS)

    async def open_alarms(self) -> list[dict[str, Any]]:
        """Unresolved alarms, oldest first."""
        rows = await self._pool.fetch(
            "SELECT id, kind, detail, time_ms FROM alarms WHERE resolved_at IS NULL ORDER BY time_ms, id")
        return [dict(r) for r in rows]
