"""The executor's book and its pure arithmetic (``smc_quant.book``): closed trades from fills, fills learned
from order queries, positions rebuilt from the order journal, and the bounded memory of handled signals."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from smc_quant.book import Book, BookEntry, journalled_position, queried_fill, round_trip
from smc_quant.domain.trading import ExitReason, Fill, Position, Signal
from smc_quant.orders.broker import ExchangePosition, OrderState
from smc_quant.orders.client_ids import Leg, client_order_id, parse_client_order_id, signal_digest
from smc_quant.reconciler import exit_reason_of

T0 = 1_688_342_400_000
SID = f"BTCUSDT:LONG:{T0}"


def position(side: str = "LONG", qty: str = "0.010", signal_id: str = SID, symbol: str = "BTCUSDT") -> Position:
    return Position(symbol, side, D(qty), D("30000.0"), T0, 10, signal_id, 0.7, D("29700"), D("30600"))  # type: ignore[arg-type]


def fill(side: str, qty: str, price: str, fee: str, t: int, cid: str = "x") -> Fill:
    return Fill("BTCUSDT", cid, side, D(qty), D(price), D(fee), t)  # type: ignore[arg-type]


def test_round_trip_averages_each_side_by_quantity_and_sums_every_fee() -> None:
    fills = [fill("BUY", "0.004", "30000.0", "0.06", T0 + 5), fill("BUY", "0.006", "30010.0", "0.09", T0 + 9),
             fill("SELL", "0.010", "30600.0", "0.153", T0 + 60_000)]
    trade = round_trip(position(), fills, ExitReason.TAKE_PROFIT)
    assert trade is not None
    assert trade.quantity == D("0.010")
    assert trade.entry_price == (D("0.004") * D("30000.0") + D("0.006") * D("30010.0")) / D("0.010")
    assert trade.exit_price == D("30600.0")
    assert trade.fees == D("0.303")
    assert (trade.entry_time_ms, trade.exit_time_ms) == (T0 + 5, T0 + 60_000)
    assert trade.exit_reason is ExitReason.TAKE_PROFIT and trade.signal_id == SID and trade.confidence == 0.7


def test_round_trip_counts_only_our_share_of_an_exit_that_closed_more_than_we_opened() -> None:
    """Our exit closed 0.010 more than our entry (a person's addition we never saw, the stream down): the trade is
    ours — 0.010 at the exit's price, and 0.010 / 0.020 of the exit's fee, not all of it."""
    fills = [fill("BUY", "0.010", "30000.0", "0.15", T0 + 5), fill("SELL", "0.020", "30600.0", "0.306", T0 + 60_000)]
    trade = round_trip(position(), fills, ExitReason.TIME)
    assert trade is not None
    assert (trade.quantity, trade.exit_price) == (D("0.010"), D("30600.0"))
    assert trade.fees == D("0.15") + D("0.153")
    assert trade.gross_pnl == D("6.0000")


def test_round_trip_of_a_short_uses_sells_as_entries() -> None:
    fills = [fill("SELL", "0.010", "30000.0", "0.15", T0), fill("BUY", "0.004", "29700.0", "0.06", T0 + 1),
             fill("BUY", "0.006", "29800.0", "0.09", T0 + 2)]
    trade = round_trip(position("SHORT"), fills, ExitReason.STOP_LOSS)
    assert trade is not None
    assert trade.entry_price == D("30000.0")
    assert trade.exit_price == (D("0.004") * D("29700.0") + D("0.006") * D("29800.0")) / D("0.010")
    assert trade.gross_pnl > 0


@pytest.mark.parametrize("fills", [
    [],
    [fill("BUY", "0.010", "30000.0", "0.15", T0)],
    [fill("BUY", "0.010", "30000.0", "0.15", T0), fill("SELL", "0.009", "30100.0", "0.13", T0 + 1)],
    [fill("SELL", "0.010", "30100.0", "0.15", T0)],  # exit fills alone: nothing went in
])
def test_round_trip_is_none_until_the_exits_cover_the_entries(fills: list[Fill]) -> None:
    assert round_trip(position(), fills, ExitReason.TIME) is None


def state(executed: str, update_ms: int = 0) -> OrderState:
    return OrderState("BTCUSDT", "smc-sl", 7, "FILLED", "SELL", "STOP_MARKET", D("0.010"), D(executed),
                      D("29700.0"), True, update_ms)


def test_queried_fill_estimates_the_fee_and_falls_back_to_the_given_time() -> None:
    """It carries the order's exchange id: the reconciliation then knows that order's executions are counted."""
    got = queried_fill("BTCUSDT", "smc-sl", state("0.010"), "SELL", D("0.0005"), T0 + 7)
    assert got == Fill("BTCUSDT", "smc-sl", "SELL", D("0.010"), D("29700.0"), D("0.010") * D("29700.0") * D("0.0005"),
                       T0 + 7, order_id=state("0.010").order_id)
    timed = queried_fill("BTCUSDT", "smc-sl", state("0.010", T0 + 99), "SELL", D("0.0005"), T0 + 7)
    assert timed is not None and timed.time_ms == T0 + 99


@pytest.mark.parametrize("st", [None, state("0")])
def test_queried_fill_is_none_when_nothing_executed(st: OrderState | None) -> None:
    assert queried_fill("BTCUSDT", "smc-sl", st, "SELL", D("0.0005")) is None


def remote(side: str = "LONG") -> ExchangePosition:
    return ExchangePosition("BTCUSDT", side, D("0.010"), D("30012.5"), D("30050.0"), leverage=5)  # type: ignore[arg-type]


def journal(side: str = "BUY", **intent: object) -> dict[str, object]:
    return {"signal_id": SID, "client_order_id": "smc-en", "side": side, "created_ms": T0 + 3, "quantity": D("0.010"),
            "intent": {"stop_price": "29700.0", "target_price": "30600.0", "leverage": 10, "confidence": 0.81,
                       **intent}}


def test_journalled_position_takes_size_and_price_from_the_exchange_and_the_rest_from_the_intent() -> None:
    got = journalled_position(remote(), journal())
    assert got == Position("BTCUSDT", "LONG", D("0.010"), D("30012.5"), T0 + 3, 10, SID, 0.81, D("29700.0"),
                           D("30600.0"), D("30050.0"))
    no_target = journalled_position(remote(), journal(target_price=None, leverage=None))
    assert no_target is not None and no_target.target_price is None and no_target.leverage == 5


@pytest.mark.parametrize(("side", "row"), [("SHORT", journal("BUY")), ("LONG", journal("SELL")),
                                           ("LONG", journal(stop_price=None)), ("LONG", {**journal(), "intent": None}),
                                           ("LONG", {**journal(), "quantity": D("0.005")}),
                                           ("LONG", {**journal(), "quantity": None})])
def test_journalled_position_refuses_a_row_that_cannot_have_opened_it(side: str, row: dict[str, object]) -> None:
    assert journalled_position(remote(side), row) is None


def signal(signal_id: str = SID) -> Signal:
    return Signal(signal_id, "BTCUSDT", "LONG", T0, D("30000.0"), 0.7, 1.0, 2.0, "sweep", (0.5, 1.5),
                  model_version=3, schema_version="smc-v4")


def test_book_entry_of_a_signal_carries_what_the_learner_needs() -> None:
    entry = BookEntry.of(position(), signal(), "sl-id", "tp-id")
    assert (entry.features, entry.schema_version, entry.model_version, entry.signal_time_ms) == \
        ((0.5, 1.5), "smc-v4", 3, T0)
    bare = BookEntry.of(position(), None)
    assert (bare.features, bare.schema_version, bare.model_version, bare.signal_time_ms) == ((), "", None, 0)


def test_book_routes_fills_by_digest_and_settles_a_flat_position_once() -> None:
    book = Book(seen_max=10)
    book.expect(SID)
    cid = client_order_id(SID, Leg.ENTRY)
    parts = parse_client_order_id(cid)
    assert parts is not None and book.owner(parts.digest) == SID and book.seen(SID)
    book.fills(SID).append(fill("BUY", "0.010", "30000.0", "0.15", T0, cid))  # before the entry call returned
    book.put(BookEntry.of(position(), signal()))
    assert list(book) == ["BTCUSDT"] and book.settle("BTCUSDT") is None
    book.fills(SID).append(fill("SELL", "0.010", "30300.0", "0.15", T0 + 1))
    settled = book.settle("BTCUSDT")
    assert settled is not None and settled[1].exit_reason is ExitReason.RECONCILED
    assert len(book) == 0 and book.settle("BTCUSDT") is None and book.fills(SID) == []


def test_book_forgets_the_oldest_signals_but_keeps_an_open_position_routable() -> None:
    book = Book(seen_max=3)
    book.put(BookEntry.of(position(signal_id="open-one"), None))
    book.expect("open-one")
    ids = [f"s{k}" for k in range(5)]
    for sid in ids:
        book.expect(sid)
        book.fills(sid).append(fill("SELL", "0.001", "30000.0", "0", T0, sid))  # stray fills after settlement
    assert [book.seen(s) for s in ["open-one", *ids]] == [False, False, False, True, True, True]
    assert book.owner(signal_digest("open-one")) == "open-one"  # its position is still open
    assert book.owner(signal_digest("s0")) is None and book.owner(signal_digest("s4")) == "s4"
    assert book.fills("s0") == [] and len(book.fills("s4")) == 1


def test_book_drop_takes_a_position_off_without_a_trade() -> None:
    book = Book(seen_max=10)
    book.put(BookEntry.of(position(), None), [fill("BUY", "0.010", "30000.0", "0.15", T0)])
    book.drop("BTCUSDT")
    assert "BTCUSDT" not in book and book.fills(SID) == []


@pytest.mark.parametrize(("cid", "reason"), [
    ("autoclose-1689679020412", ExitReason.LIQUIDATION), ("adl_autoclose", ExitReason.ADL),
    ("settlement_autoclose-ETHUSDT", ExitReason.DELISTING), ("delivery_autoclose-X", ExitReason.DELISTING),
    ("by-hand", ExitReason.MANUAL), ("", ExitReason.MANUAL), ("web_abc123", ExitReason.MANUAL),
])
def test_an_execution_not_ours_is_named_by_its_order_client_id(cid: str, reason: ExitReason) -> None:
    """What the reconciliation calls an exit it found in the trade history (the order's client id, asked by the
    exchange's order id; an order the exchange no longer knows is a person's)."""
    assert exit_reason_of(cid) == reason


def test_an_execution_of_our_own_order_is_not_an_exit_by_others() -> None:
    assert exit_reason_of(client_order_id("ETHUSDT:SHORT:1", Leg.EXIT, 0)) is None
