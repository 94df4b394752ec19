"""TradingRepository against a real PostgreSQL database (migration 0004)."""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import asyncpg
import orjson
import pytest

from smc_quant.domain.trading import ExitReason, Fill, Position, Signal, Trade
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.trading import ALARM_REPEAT_MS, AccountConflict, TradingRepository

pytestmark = pytest.mark.integration

D = Decimal
T0 = 1_700_000_000_000
FEATURES = (0.1, -0.0, 1e-300, 123456.789012345, -7.25, math.nan, math.inf, 2.0**-1074)
SCHEMA = "smc-features/1"


def _signal(signal_id: str = "sig-1", symbol: str = "BTCUSDT") -> Signal:
    return Signal(signal_id=signal_id, symbol=symbol, side="LONG", open_time=T0, price=D("37123.40"),
                  confidence=0.6375, stop_pct=0.8, target_pct=1.6, setup="sweep>choch>fvg@1700000000000",
                  features=FEATURES, expected_return_pct=0.42, model_version=3, schema_version=SCHEMA,
                  created_ms=T0 + 61_000)


def _position(symbol: str = "BTCUSDT", signal_id: str = "sig-1") -> Position:
    return Position(symbol=symbol, side="LONG", quantity=D("0.012"), entry_price=D("37125.10"),
                    entry_time_ms=T0 + 62_000, leverage=5, signal_id=signal_id, confidence=0.6375,
                    stop_price=D("36828.10"), target_price=D("37719.10"))


def _trade(signal_id: str = "sig-1", exit_ms: int = T0 + 3_600_000, exit_price: str = "37719.10",
           symbol: str = "BTCUSDT", exit_reason: ExitReason = ExitReason.TAKE_PROFIT) -> Trade:
    return Trade(signal_id=signal_id, symbol=symbol, side="LONG", quantity=D("0.012"), entry_price=D("37125.10"),
                 exit_price=D(exit_price), entry_time_ms=T0 + 62_000, exit_time_ms=exit_ms,
                 fees=D("0.44550120"), exit_reason=exit_reason, confidence=0.6375)


def _bits(values: tuple[float, ...]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a freshly migrated database."""
    assert "0004_trading.sql" in await apply_migrations(pg_dsn)
    p = await create_pool(pg_dsn, max_size=3)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> TradingRepository:
    return TradingRepository(pool)


async def test_migrations_apply_twice_cleanly(pg_dsn: str) -> None:
    """A second run applies nothing and leaves the trading tables in place."""
    first = await apply_migrations(pg_dsn)
    assert first[-1] == "0015_journal_indexes.sql"
    assert await apply_migrations(pg_dsn) == []
    conn = await asyncpg.connect(pg_dsn)
    try:
        names = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
    finally:
        await conn.close()
    assert {"signals", "orders", "fills", "positions", "trades", "experience", "alarms", "account_epochs",
            "funding_payments", "control_events", "daily_summaries", "ended_entries"} <= names


async def test_signal_round_trip_and_idempotency(repo: TradingRepository, pool: asyncpg.Pool) -> None:
    """A signal is stored once with its exact price, bit-identical features and the decision detail."""
    detail = {"action": "open", "quantity": "0.012", "notional": "445.50"}
    assert await repo.record_signal(_signal(), "open", "ok", detail) is True
    assert await repo.record_signal(_signal(), "skip", "again", {}) is False
    row = await pool.fetchrow("SELECT *, decision_detail::text AS detail_text FROM signals")
    assert row["price"] == D("37123.40") and str(row["price"]) == "37123.40"
    assert _bits(tuple(row["features"])) == _bits(FEATURES)
    assert (row["decision"], row["decision_reason"], row["model_version"]) == ("open", "ok", 3)
    assert orjson.loads(row["detail_text"]) == detail
    assert await pool.fetchval("SELECT count(*) FROM signals") == 1


async def test_bad_decision_is_a_clear_error(repo: TradingRepository) -> None:
    with pytest.raises(ValueError, match="decision must be one of"):
        await repo.record_signal(_signal(), "maybe", "", {})


async def test_order_upsert_keeps_created_ms_and_exchange_id(repo: TradingRepository) -> None:
    """An order is inserted, then updated; created_ms and a known exchange id survive later updates."""
    await repo.upsert_order(client_id="e-sig-1-0", signal_id="sig-1", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.012"), status="PENDING", time_ms=T0)
    await repo.upsert_order(client_id="e-sig-1-0", signal_id="sig-1", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.012"), status="NEW",
                            exchange_id=987654321012, attempt=1, time_ms=T0 + 5)
    await repo.upsert_order(client_id="e-sig-1-0", signal_id="sig-1", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.012"), status="FILLED", attempt=1,
                            last_error=None, time_ms=T0 + 9)
    await repo.upsert_order(client_id="s-sig-1-0", signal_id="sig-1", symbol="BTCUSDT", side="SELL",
                            kind="stop_loss", order_type="STOP_MARKET", algo=True, quantity=None,
                            trigger_price=D("36828.10"), close_position=True, status="NEW", exchange_id=42,
                            last_error="-2021 would trigger", time_ms=T0 + 10)
    entry = await repo.order("e-sig-1-0")
    assert entry is not None
    assert (entry["status"], entry["exchange_id"], entry["created_ms"], entry["updated_ms"]) == (
        "FILLED", 987654321012, T0, T0 + 9)
    assert entry["quantity"] == D("0.012") and entry["algo"] is False and entry["attempt"] == 1
    orders = await repo.orders_for_signal("sig-1")
    assert [o["client_order_id"] for o in orders] == ["e-sig-1-0", "s-sig-1-0"]
    stop = orders[1]
    assert (stop["algo"], stop["close_position"], stop["quantity"], stop["trigger_price"]) == (
        True, True, None, D("36828.10"))
    assert stop["last_error"] == "-2021 would trigger"
    assert await repo.order("nope") is None
    assert await repo.orders_for_signal("other") == []
    with pytest.raises(ValueError, match="order kind"):
        await repo.upsert_order(client_id="x", signal_id="s", symbol="BTCUSDT", side="BUY", kind="bogus",
                                order_type="MARKET", algo=False, quantity=D(1), status="NEW", time_ms=T0)


async def test_latest_entry_names_the_open_entry_with_its_intent(repo: TradingRepository) -> None:
    """The entry journalled with its intent is found by symbol (the restart's way to adopt a position whose row
    was never written); a refused entry, a later retry without intent, or a stored trade never hide or fake it."""
    intent = {"stop_price": "36828.10", "target_price": "37719.10", "leverage": 5, "confidence": 0.6375}
    assert await repo.latest_entry("BTCUSDT") is None
    await repo.upsert_order(client_id="e-1", signal_id="sig-1", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.012"), status="sending", time_ms=T0,
                            intent=intent)
    await repo.upsert_order(client_id="e-1", signal_id="sig-1", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.012"), status="unknown", time_ms=T0 + 5)
    await repo.upsert_order(client_id="e-2", signal_id="sig-2", symbol="BTCUSDT", side="SELL", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.5"), status="REJECTED", time_ms=T0 + 9,
                            intent=intent)
    row = await repo.latest_entry("BTCUSDT")
    assert row is not None
    assert (row["client_order_id"], row["signal_id"], row["status"], row["created_ms"]) == (
        "e-1", "sig-1", "unknown", T0)
    assert row["intent"] == intent  # kept through the update without one; prices exact as decimal strings
    assert await repo.latest_entry("ETHUSDT") is None
    await repo.close_trade(_trade(), features=FEATURES, schema_version=SCHEMA, signal_time_ms=T0, model_version=3)
    assert await repo.latest_entry("BTCUSDT") is None  # its trade is stored: nothing left to adopt


async def test_fill_idempotency_and_fills_for_signal(repo: TradingRepository, pool: asyncpg.Pool) -> None:
    """The same fill twice is one row; fills come back by signal with exact Decimals."""
    await repo.upsert_order(client_id="e-1", signal_id="sig-1", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.012"), status="FILLED", time_ms=T0)
    await repo.upsert_order(client_id="e-2", signal_id="sig-2", symbol="ETHUSDT", side="SELL", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.5"), status="FILLED", time_ms=T0)
    a = Fill(symbol="BTCUSDT", client_order_id="e-1", side="BUY", quantity=D("0.005"), price=D("37125.10"),
             fee=D("0.07425020"), time_ms=T0 + 1, realized_pnl=D("0"), trade_id=5001, order_id=77, is_maker=False)
    b = replace(a, quantity=D("0.007"), fee=D("0.10395028"), time_ms=T0 + 2, trade_id=5002, is_maker=True)
    other = replace(a, symbol="ETHUSDT", client_order_id="e-2", side="SELL", trade_id=5001)
    assert await repo.record_fill(a) is True
    assert await repo.record_fill(a) is False
    assert await repo.record_fill(b) is True
    assert await repo.record_fill(other) is True
    assert await pool.fetchval("SELECT count(*) FROM fills") == 3
    assert await repo.fills_for_signal("sig-1") == [a, b]
    assert await repo.fills_for_signal("sig-2") == [other]


async def test_positions_round_trip_update_and_delete(repo: TradingRepository) -> None:
    """The book survives a 'restart' with entry time, exits and protective order ids; status updates in place."""
    pos = _position()
    await repo.save_position(pos, status="opening", sl_client_id=None, tp_client_id=None, time_ms=T0 + 62_000)
    await repo.save_position(pos, status="open", sl_client_id="s-sig-1-0", tp_client_id="t-sig-1-0",
                             time_ms=T0 + 63_000)
    eth = Position(symbol="ETHUSDT", side="SHORT", quantity=D("0.5"), entry_price=D("2010.55"), entry_time_ms=T0)
    await repo.save_position(eth, status="closing", sl_client_id=None, tp_client_id=None)
    book = await repo.open_positions()
    assert [p.symbol for p, _ in book] == ["BTCUSDT", "ETHUSDT"]
    assert book[0] == (pos, {"status": "open", "sl_client_id": "s-sig-1-0", "tp_client_id": "t-sig-1-0",
                             "updated_ms": T0 + 63_000})
    assert book[1][0] == eth and book[1][1]["status"] == "closing" and book[1][1]["updated_ms"] > T0
    await repo.delete_position("ETHUSDT")
    await repo.delete_position("ETHUSDT")
    assert [p.symbol for p, _ in await repo.open_positions()] == ["BTCUSDT"]
    with pytest.raises(ValueError, match="position status"):
        await repo.save_position(pos, status="gone", sl_client_id=None, tp_client_id=None)


async def test_close_trade_writes_trade_experience_and_removes_position(repo: TradingRepository,
                                                                        pool: asyncpg.Pool) -> None:
    """One call: trade with exact PnL, experience with bit-identical features, position gone; twice → None."""
    await repo.save_position(_position(), status="open", sl_client_id="s", tp_client_id="t")
    await repo.save_position(_position("ETHUSDT", "sig-eth"), status="open", sl_client_id=None, tp_client_id=None)
    trade = _trade()
    trade_id = await repo.close_trade(trade, features=FEATURES, schema_version=SCHEMA, signal_time_ms=T0,
                                      model_version=3)
    assert isinstance(trade_id, int)
    assert await repo.trades() == [trade]
    row = await pool.fetchrow("SELECT gross_pnl, net_pnl, net_return_pct, model_version FROM trades")
    assert row["gross_pnl"] == D("7.128000") == trade.gross_pnl
    assert row["net_pnl"] == D("6.68249880") == trade.net_pnl
    assert row["net_return_pct"] == trade.net_return_pct and row["model_version"] == 3
    [exp] = await repo.experience(SCHEMA)
    assert _bits(exp.features) == _bits(FEATURES)
    assert (exp.symbol, exp.side, exp.net_return_pct, exp.signal_time_ms, exp.closed_ms, exp.model_version) == (
        "BTCUSDT", "LONG", trade.net_return_pct, T0, trade.exit_time_ms, 3)
    assert exp.win
    assert [p.symbol for p, _ in await repo.open_positions()] == ["ETHUSDT"]
    assert await repo.close_trade(trade, features=FEATURES, schema_version=SCHEMA, signal_time_ms=T0,
                                  model_version=3) is None
    assert await repo.trades_count() == 1 and len(await repo.experience(SCHEMA)) == 1


async def test_close_trade_is_atomic(repo: TradingRepository, pool: asyncpg.Pool) -> None:
    """A failing experience insert (a signal time beyond bigint) leaves no trade, keeps the position."""
    await repo.save_position(_position(), status="closing", sl_client_id="s", tp_client_id="t")
    with pytest.raises(asyncpg.DataError):
        await repo.close_trade(_trade(), features=FEATURES, schema_version=SCHEMA, signal_time_ms=2**63,
                               model_version=None)
    assert await repo.trades() == []
    assert await pool.fetchval("SELECT count(*) FROM experience") == 0
    book = await repo.open_positions()
    assert [(p.symbol, meta["status"]) for p, meta in book] == [("BTCUSDT", "closing")]
    assert await repo.close_trade(_trade(), features=FEATURES, schema_version=SCHEMA, signal_time_ms=T0,
                                  model_version=None) is not None
    assert await repo.open_positions() == []


async def test_a_trade_without_its_signal_is_stored_without_an_experience_row(repo: TradingRepository,
                                                                              pool: asyncpg.Pool) -> None:
    """A position adopted after a crash whose signal row was never written has no features and no schema. Its
    trade is stored and its position row removed; it gives the learner nothing. (The experience CHECK used to
    refuse it, rolling the trade back at every try: never stored, counted again after every restart.)"""
    await repo.save_position(_position(), status="closing", sl_client_id="s", tp_client_id="t")
    assert await repo.close_trade(_trade(), features=(), schema_version="", signal_time_ms=0,
                                  model_version=None) is not None
    assert [t.signal_id for t in await repo.trades()] == ["sig-1"] and await repo.open_positions() == []
    assert await pool.fetchval("SELECT count(*) FROM experience") == 0


async def test_every_exit_reason_is_stored_and_read_back(repo: TradingRepository, pool: asyncpg.Pool) -> None:
    """The table's CHECK follows the enum (``delisting`` came with migration 0009); anything else is refused."""
    for i, reason in enumerate(ExitReason):
        trade = replace(_trade(f"sig-{i}", exit_ms=T0 + 3_600_000 + i), exit_reason=reason)
        assert await repo.close_trade(trade, features=(), schema_version=SCHEMA, signal_time_ms=T0,
                                      model_version=None) is not None
    assert [t.exit_reason for t in await repo.trades()] == list(ExitReason)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE trades SET exit_reason = 'expired' WHERE signal_id = 'sig-0'")


async def test_close_trade_keeps_a_newer_position_of_the_same_symbol(repo: TradingRepository) -> None:
    """Closing an old signal's trade never deletes a position opened since by another signal."""
    await repo.save_position(_position(signal_id="sig-new"), status="open", sl_client_id=None, tp_client_id=None)
    assert await repo.close_trade(_trade("sig-old"), features=(), schema_version=SCHEMA, signal_time_ms=T0,
                                  model_version=None) is not None
    assert [p.signal_id for p, _ in await repo.open_positions()] == ["sig-new"]


async def test_trades_window_order_count_and_realized(repo: TradingRepository) -> None:
    """Trades come back ordered by exit time and filtered by window; realized_since sums net PnL exactly."""
    day = 86_400_000
    late = _trade("a", exit_ms=T0 + day + 5_000, exit_price="37000.00", exit_reason=ExitReason.STOP_LOSS)  # loss
    early = _trade("b", exit_ms=T0 + 3_600_000)                           # win
    mid = _trade("c", exit_ms=T0 + day + 1_000, exit_price="37500.25", symbol="ETHUSDT",
                 exit_reason=ExitReason.TIME)  # a net gain at the time limit
    for t in (late, early, mid):
        assert await repo.close_trade(t, features=(1.0,), schema_version=SCHEMA, signal_time_ms=T0,
                                      model_version=None) is not None
    assert await repo.trades() == [early, mid, late]
    assert await repo.trades(since_ms=T0 + day) == [mid, late]
    assert await repo.trades(until_ms=T0 + day + 1_000) == [early, mid]
    assert await repo.trades(since_ms=T0 + day, until_ms=T0 + day + 1_000) == [mid]
    assert await repo.trades_count() == 3 and await repo.trades_count(T0 + day) == 2
    assert await repo.realized_since(T0 + day) == mid.net_pnl + late.net_pnl
    assert await repo.realized_since(T0 + day) == D("4.05629880") + D("-1.94670120")
    assert await repo.realized_since(T0 + 10 * day) == D(0)
    rows = await repo.experience(SCHEMA)
    assert [r.closed_ms for r in rows] == [early.exit_time_ms, mid.exit_time_ms, late.exit_time_ms]
    assert [r.exit_reason for r in rows] == ["take_profit", "time_limit", "stop_loss"]
    assert mid.net_pnl > 0 and [r.win for r in rows] == [True, False, False]  # the history labels' rule: the target
    assert [r.closed_ms for r in await repo.experience(SCHEMA, since_ms=T0 + day)] == [mid.exit_time_ms,
                                                                                        late.exit_time_ms]
    assert await repo.experience("smc-features/0") == []


async def test_alarms(repo: TradingRepository) -> None:
    """Alarms are stored and listed oldest first."""
    await repo.record_alarm("unknown_position", "SOLUSDT 3.0 LONG found at the exchange", T0 + 5)
    await repo.record_alarm("exit_failed", "BTCUSDT exit failed after 5 attempts", T0)
    alarms = await repo.open_alarms()
    assert [(a["kind"], a["time_ms"]) for a in alarms] == [("exit_failed", T0), ("unknown_position", T0 + 5)]
    assert alarms[1]["detail"] == "SOLUSDT 3.0 LONG found at the exchange"


LIVE = "live https://fapi.binance.com"


async def test_account_epochs_scope_the_restored_history_and_refuse_a_switch_over_an_open_book(
        pool: asyncpg.Pool) -> None:
    """The first account owns the history; another account may start only on a flat book, and then sees none of
    the first one's trades, realised PnL or journalled entries; a restart keeps its epoch; the learner's
    experience is not scoped."""
    paper = TradingRepository(pool)
    first = await paper.bind_account("paper", T0)
    assert (first.account, first.previous, first.started_at, first.switched) == ("paper", None, None, False)
    await paper.close_trade(_trade("sig-p"), features=FEATURES, schema_version=SCHEMA, signal_time_ms=T0,
                            model_version=3)
    await paper.upsert_order(client_id="e-p", signal_id="sig-open", symbol="ETHUSDT", side="BUY", kind="entry",
                             order_type="MARKET", algo=False, quantity=D("0.5"), status="unknown", time_ms=T0)
    await paper.save_position(_position("ETHUSDT", "sig-open"), status="open", sl_client_id=None, tp_client_id=None)
    assert await paper.realized_since(0) == _trade("sig-p").net_pnl
    assert await paper.record_funding("ETHUSDT", T0 + 60_000, D("0.0001"), D("0.10"))
    assert await paper.funding_paid() == D("0.10")

    live = TradingRepository(pool)
    with pytest.raises(AccountConflict, match=r"1 position\(s\): ETHUSDT\) belongs to account 'paper'.*DATABASE_URL"):
        await live.bind_account(LIVE, T0 + 1)
    assert await pool.fetchval("SELECT count(*) FROM account_epochs") == 1  # refused: nothing recorded

    await paper.delete_position("ETHUSDT")  # the paper book is flat: live may take the database over
    epoch = await live.bind_account(LIVE, T0 + 2)
    assert (epoch.account, epoch.previous, epoch.switched, epoch.started_ms) == (LIVE, "paper", True, T0 + 2)
    assert epoch.started_at is not None
    assert await live.trades() == []
    assert await live.realized_since(0) == 0 and await live.funding_paid() == 0
    assert await live.latest_entry("ETHUSDT") is None  # paper's journalled entry is never adopted by live
    assert await paper.latest_entry("ETHUSDT") is not None  # (still there for a reader of the first epoch)

    won = _trade("sig-l", exit_ms=T0 + 7_200_000, exit_price="38000.00")
    await live.close_trade(won, features=FEATURES, schema_version=SCHEMA, signal_time_ms=T0, model_version=3)
    assert await live.trades() == [won]
    assert await live.realized_since(0) == won.net_pnl

    restart = TradingRepository(pool)
    again = await restart.bind_account(LIVE, T0 + 3)
    assert (again.previous, again.started_at, again.switched, again.started_ms) == (
        "paper", epoch.started_at, False, T0 + 2)
    assert await restart.trades() == [won]

    back = TradingRepository(pool)
    assert (await back.bind_account("paper", T0 + 4)).switched  # a new paper epoch: it starts afresh
    assert await back.trades() == [] and await back.realized_since(0) == 0
    assert len(await back.experience(SCHEMA)) == 2  # the learner keeps every trade the database saw
    with pytest.raises(ValueError, match="empty"):
        await back.bind_account("", T0)


async def test_an_entry_of_weeks_ago_is_never_the_origin_of_a_position_seen_now(repo: TradingRepository) -> None:
    """A human's position on a symbol where our entry of weeks ago never became a stored trade must not be adopted
    as ours — it would be closed at once as past the 2-hour limit."""
    day = 86_400_000
    await repo.upsert_order(client_id="e-old", signal_id="sig-old", symbol="BTCUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("0.05"), status="unknown", time_ms=T0)
    assert await repo.latest_entry("BTCUSDT") is not None  # no bound given: found
    assert await repo.latest_entry("BTCUSDT", since_ms=T0 + 21 * day - day) is None  # weeks later: not ours
    assert await repo.latest_entry("BTCUSDT", since_ms=T0) is not None  # within the window: adoptable
    await repo.upsert_order(client_id="e-exp", signal_id="sig-exp", symbol="ETHUSDT", side="BUY", kind="entry",
                            order_type="MARKET", algo=False, quantity=D("1"), status="EXPIRED", time_ms=T0)
    assert await repo.latest_entry("ETHUSDT", since_ms=T0) is not None  # may have filled in part before expiring


async def test_an_alarm_already_open_is_not_stored_again(repo: TradingRepository, pool: asyncpg.Pool) -> None:
    """Every reconciliation (3 min) meets the same unknown position: one open alarm, not 480 a day."""
    for i in range(3):
        await repo.record_alarm("unknown_position", "BTCUSDT LONG 0.010", T0 + i)
    await repo.record_alarm("unknown_position", "ETHUSDT SHORT 1", T0 + 5)
    assert [(a["kind"], a["detail"], a["time_ms"]) for a in await repo.open_alarms()] == [
        ("unknown_position", "BTCUSDT LONG 0.010", T0), ("unknown_position", "ETHUSDT SHORT 1", T0 + 5)]
    await pool.execute("UPDATE alarms SET resolved_at = now() WHERE detail = 'BTCUSDT LONG 0.010'")
    await repo.record_alarm("unknown_position", "BTCUSDT LONG 0.010", T0 + 9)  # back after it was resolved
    assert [a["time_ms"] for a in await repo.open_alarms()] == [T0 + 5, T0 + 9]


async def test_an_alarm_left_open_is_stored_again_after_a_day(repo: TradingRepository) -> None:
    """Nothing resolves an alarm but a person: the same unknown position found again three weeks later, with the
    first alarm never resolved, used to leave no row at all. It is stored again once a day while it is open."""
    await repo.record_alarm("unknown_position", "BTCUSDT LONG 0.010", T0)
    await repo.record_alarm("unknown_position", "BTCUSDT LONG 0.010", T0 + ALARM_REPEAT_MS - 1)  # within the day: no
    await repo.record_alarm("unknown_position", "BTCUSDT LONG 0.010", T0 + 21 * ALARM_REPEAT_MS)
    assert [a["time_ms"] for a in await repo.open_alarms()] == [T0, T0 + 21 * ALARM_REPEAT_MS]
