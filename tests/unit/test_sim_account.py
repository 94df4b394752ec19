"""The simulated USDT-M account (``smc_quant.sim``) on the real exchangeInfo and leverage brackets: orders,
fills and rejections.

Covered here: MARKET fills (price, slippage, fee, PnL, averaging, flips), the rejections with Binance's codes,
and LIMIT orders (resting, marketable, IOC, cancel, reduce-only expiry). Algo orders, liquidation and
account-wide properties are in ``test_sim_account_triggers_and_properties.py``; shared helpers are in
``sim_account_kit.py`` and the fixtures in ``conftest.py``.

Hand computations use BTCUSDT: tick 0.10, step 0.001, MARKET max 120, MIN_NOTIONAL 100, band ±5 %,
first bracket [0, 50 000) at 125x with mmr 0.4 % and cum 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.orders.broker import AccountUpdate, OrderUpdate
from smc_quant.sim import SimAccount, SimConfig, SimRejected
from smc_quant.sim.ledger import apply_fill
from tests.unit.sim_account_kit import BTC, NO_SLIP, T0, D, kinds, market

# -- fills, fees, PnL ----------------------------------------------------------------------------


def test_market_round_trip_price_fee_and_pnl_by_hand(make: Callable[..., SimAccount]) -> None:
    """BUY 0.01 at 50 000 fills at 50 005.0 (1 bp up), SELL at 51 000 fills at 50 994.9; fee 0.05 % each."""
    acc = make()
    events = market(acc, "BUY", "0.01", cid="e1")
    assert kinds(events) == ["NEW", "TRADE", "ACCOUNT"]
    trade = events[1]
    assert isinstance(trade, OrderUpdate)
    assert (trade.last_price, trade.last_qty, trade.commission, trade.is_maker) == (D("50005.0"), D("0.01"),
                                                                                   D("0.250025"), False)
    acc.on_price("BTCUSDT", D("51000"), T0 + 1)
    events = market(acc, "SELL", "0.01", t=T0 + 1, cid="x1")
    assert events[-1] == AccountUpdate("ORDER", acc.balance().wallet, (("BTCUSDT", None),), T0 + 1)
    sell = acc.fills[-1]
    assert sell.price == D("50994.9")
    assert sell.realized_pnl == (D("50994.9") - D("50005.0")) * D("0.01") == D("9.899")
    assert sell.fee == D("0.0005") * D("0.01") * D("50994.9")
    assert acc.balance().wallet == D("10000") - D("0.250025") + D("9.899") - D("0.2549745")
    assert acc.positions() == []
    flat = acc.query_order(BTC, client_order_id="x1")
    assert (flat.status, flat.executed_qty, flat.avg_price) == ("FILLED", D("0.01"), D("50994.9"))


def test_slippage_rounds_to_the_tick_away_from_the_taker(make: Callable[..., SimAccount]) -> None:
    """50 001 × 1.0001 = 50 006.0001 → 50 006.1 for a BUY; 50 001 × 0.9999 = 49 995.9999 → 49 995.9 for a SELL."""
    acc = make()
    acc.on_price("BTCUSDT", D("50001"), T0)
    market(acc, "BUY", "0.01")
    market(acc, "SELL", "0.01")
    assert [f.price for f in acc.fills] == [D("50006.1"), D("49995.9")]


def test_adds_average_the_entry_and_the_account_update_carries_the_position(
        make: Callable[..., SimAccount]) -> None:
    """0.01 at 50 000 + 0.02 at 53 000 → 0.03 at (500 + 1060) / 0.03 = 52 000."""
    acc = make(NO_SLIP)
    market(acc, "BUY", "0.01")
    acc.on_price("BTCUSDT", D("53000"), T0 + 1)
    events = market(acc, "BUY", "0.02", t=T0 + 1)
    update = events[-1]
    assert isinstance(update, AccountUpdate) and update.reason == "ORDER"
    (pos,) = acc.positions()
    assert (pos.side, pos.quantity, pos.entry_price) == ("LONG", D("0.03"), D("52000"))
    assert update.positions == (replace(pos, liquidation_price=D(0)),)
    assert update.wallet_balance == acc.balance().wallet
    assert pos.unrealized_pnl == (D("53000") - D("52000")) * D("0.03")


def test_flip_realises_the_closed_part_and_opens_the_rest_at_the_fill(make: Callable[..., SimAccount]) -> None:
    """Long 0.03 at 52 000, SELL 0.05 at 54 000: realised 60, then short 0.02 at 54 000."""
    acc = make(NO_SLIP)
    acc.on_price("BTCUSDT", D("52000"), T0)
    market(acc, "BUY", "0.03")
    acc.on_price("BTCUSDT", D("54000"), T0 + 1)
    market(acc, "SELL", "0.05", t=T0 + 1)
    assert acc.fills[-1].realized_pnl == D("60")
    (pos,) = acc.positions()
    assert (pos.side, pos.quantity, pos.entry_price) == ("SHORT", D("0.02"), D("54000"))


def test_apply_fill_closes_to_flat() -> None:
    """Closing exactly leaves amount 0, entry 0 and the realised PnL of a short."""
    effect = apply_fill(D("-2"), D("100"), D("2"), D("90"))
    assert (effect.amount, effect.entry_price, effect.realized_pnl) == (D(0), D(0), D("20"))


# -- rejections ----------------------------------------------------------------------------------


def _order(**kw: object) -> Callable[[SimAccount], object]:
    args: dict[str, object] = {"symbol": BTC, "side": "BUY", "type": "MARKET", "quantity": D("0.01"), "time_ms": T0}
    args.update(kw)
    return lambda acc: acc.new_order(**args)  # type: ignore[arg-type]


def _algo(**kw: object) -> Callable[[SimAccount], object]:
    args: dict[str, object] = {"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "trigger_price": D("49000"),
                               "quantity": D("0.01"), "reduce_only": True, "time_ms": T0}
    args.update(kw)
    return lambda acc: acc.new_algo(**args)  # type: ignore[arg-type]


REJECTIONS: list[tuple[str, Callable[[SimAccount], object], int]] = [
    ("unknown symbol", _order(symbol="NOPEUSDT"), -1121),
    ("zero quantity", _order(quantity=D(0)), -4003),
    ("negative quantity", _order(quantity=D("-0.01")), -4003),
    ("NaN quantity", _order(quantity=D("NaN")), -4003),
    ("missing quantity", _order(quantity=None), -1102),
    ("LIMIT without price", _order(type="LIMIT"), -1102),
    ("quantity finer than the step", _order(quantity=D("0.0105")), -1111),
    ("price finer than the tick", _order(type="LIMIT", price=D("49999.95")), -1111),
    ("quantity above MARKET_LOT_SIZE maxQty", _order(quantity=D("121")), -4005),
    ("price below minPrice", _order(type="LIMIT", price=D("500")), -4013),
    ("price zero", _order(type="LIMIT", price=D("0")), -4001),
    ("price not a number", _order(type="LIMIT", price=D("Infinity")), -1102),
    ("price above the PERCENT_PRICE cap", _order(type="LIMIT", price=D("52500.1")), -4016),
    ("price below the PERCENT_PRICE floor", _order(type="LIMIT", price=D("47499.9")), -4024),
    ("notional below MIN_NOTIONAL", _order(quantity=D("0.001")), -4164),
    ("reduce-only without a position", _order(reduce_only=True), -2022),
    ("margin above the available balance", _order(quantity=D("5")), -2019),
    ("conditional type on /order", _order(type="STOP_MARKET"), -4120),
    ("trailing stop on /order", _order(type="TRAILING_STOP_MARKET"), -4120),
    ("unknown type", _order(type="ICEBERG"), -1116),
    ("bad side", _order(side="LONG"), -1117),
    ("bad timeInForce", _order(type="LIMIT", price=D("49000"), time_in_force="DAY"), -1115),
    ("client id breaks the regex", _order(client_order_id="has space"), -4015),
    ("post-only that crosses", _order(type="LIMIT", price=D("50100"), time_in_force="GTX"), -5022),
    ("no price yet", _order(symbol="SOLUSDT"), -1000),
    ("algo SELL stop above the price", _algo(trigger_price=D("50000")), -2021),
    ("algo BUY take-profit above the price", _algo(side="BUY", type="TAKE_PROFIT_MARKET",
                                                   trigger_price=D("50500")), -2021),
    ("algo trigger finer than the tick", _algo(trigger_price=D("49000.01")), -1111),
    ("algo trigger below minPrice", _algo(trigger_price=D("100")), -4006),
    ("algo trigger above maxPrice", _algo(side="BUY", trigger_price=D("5000000")), -4007),
    ("algo LIMIT-style type", _algo(type="STOP"), -1116),
    ("algo closePosition without a position", _algo(quantity=None, reduce_only=False, close_position=True), -2022),
    ("algo closePosition with a quantity", _algo(reduce_only=False, close_position=True), -1106),
    ("algo below MIN_NOTIONAL", _algo(reduce_only=False, quantity=D("0.001")), -4164),
    ("algo without quantity", _algo(quantity=None), -1102),
    ("cancel unknown order", lambda acc: acc.cancel_order(BTC, order_id=99, time_ms=T0), -2011),
    ("query unknown order", lambda acc: acc.query_order(BTC, client_order_id="nope"), -2013),
    ("cancel unknown algo", lambda acc: acc.cancel_algo(client_algo_id="nope", time_ms=T0), -2011),
    ("query unknown algo", lambda acc: acc.query_algo(algo_id=7), -2013),
    ("leverage 0", lambda acc: acc.set_leverage(BTC, 0), -4028),
    ("leverage above the first bracket", lambda acc: acc.set_leverage(BTC, 126), -4028),
    ("margin type unchanged", lambda acc: acc.set_margin_type(BTC, "CROSSED"), -4046),
    ("margin type unknown", lambda acc: acc.set_margin_type(BTC, "CROSS"), -4044),
]


@pytest.mark.parametrize(("call", "code"), [(c, code) for _, c, code in REJECTIONS],
                         ids=[name for name, _, _ in REJECTIONS])
def test_rejections_carry_binance_codes_and_change_nothing(make: Callable[..., SimAccount],
                                                           call: Callable[[SimAccount], object], code: int) -> None:
    """Each bad request raises SimRejected with Binance's code, HTTP 400, and leaves the account untouched."""
    acc = make()
    with pytest.raises(SimRejected) as info:
        call(acc)
    assert (info.value.code, info.value.status) == (code, 400)
    assert acc.order_log == [] and acc.fills == [] and acc.open_orders() == [] and acc.open_algo_orders() == []
    assert acc.balance().wallet == D("10000")


def test_min_qty_and_step_multiple_codes(make: Callable[..., SimAccount], filters: dict[str, SymbolFilters]) -> None:
    """Steps that are not powers of ten: 0.003 with step 0.002 → -4023; below minQty 0.01 → -4004; a price
    of 50 000.3 with tick 0.5 → -4014."""
    odd = replace(filters[BTC], market_step_size=D("0.002"), market_min_qty=D("0.01"), tick_size=D("0.5"))
    acc = make(BTCUSDT=odd)
    with pytest.raises(SimRejected) as info:
        acc.new_order(symbol=BTC, side="BUY", type="MARKET", quantity=D("0.003"), time_ms=T0)
    assert info.value.code == -4023
    with pytest.raises(SimRejected) as info:
        acc.new_order(symbol=BTC, side="BUY", type="MARKET", quantity=D("0.004"), time_ms=T0)
    assert info.value.code == -4004
    with pytest.raises(SimRejected) as info:
        acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("50000.3"), time_ms=T0)
    assert info.value.code == -4014


def test_reduce_only_that_would_increase_is_rejected_and_a_larger_one_is_clipped(
        make: Callable[..., SimAccount]) -> None:
    """Long 0.01: reduce-only BUY → -2022; reduce-only SELL 5 closes only the 0.01 and needs no margin (100 USDT
    could not margin 4.99 BTC) nor MIN_NOTIONAL."""
    acc = make(SimConfig(balance=D("100"), slippage_bps=D(0)))
    market(acc, "BUY", "0.01")
    with pytest.raises(SimRejected) as info:
        market(acc, "BUY", "0.01", reduce_only=True)
    assert info.value.code == -2022
    market(acc, "SELL", "5", reduce_only=True)
    assert acc.fills[-1].quantity == D("0.01") and acc.positions() == []


def test_bracket_cap_at_high_leverage(make: Callable[..., SimAccount]) -> None:
    """At 125x BTC's cap is 50 000 notional: 1.1 BTC (55 000) → -2027; set_leverage reports the cap."""
    acc = make(SimConfig(balance=D("100000")))
    assert acc.set_leverage(BTC, 125) == (125, D("50000"))
    with pytest.raises(SimRejected) as info:
        market(acc, "BUY", "1.1")
    assert info.value.code == -2027
    market(acc, "BUY", "0.9")
    assert acc.leverage(BTC) == 125


def test_market_fill_outside_the_band_is_4131(make: Callable[..., SimAccount]) -> None:
    """With 600 bp of slippage the fill would leave the ±5 % band: -4131."""
    with pytest.raises(SimRejected) as info:
        market(make(SimConfig(slippage_bps=D(600))), "BUY", "0.01")
    assert info.value.code == -4131


def test_client_id_reuse_after_fill_but_not_while_open(make: Callable[..., SimAccount]) -> None:
    """A filled order's id is free again; an open one is not (-4116) until it is cancelled."""
    acc = make()
    market(acc, "BUY", "0.01", cid="same")
    market(acc, "SELL", "0.01", cid="same")
    acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("49000"), time_ms=T0,
                  client_order_id="rest")
    with pytest.raises(SimRejected) as info:
        acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("48000"), time_ms=T0,
                      client_order_id="rest")
    assert info.value.code == -4116
    acc.cancel_order(BTC, client_order_id="rest", time_ms=T0)
    state, _ = acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("48000"),
                             time_ms=T0, client_order_id="rest")
    assert acc.query_order(BTC, client_order_id="rest") == state
    assert acc.order_log == ["same", "same", "rest", "rest"]


# -- LIMIT ---------------------------------------------------------------------------------------


def test_limit_rests_holds_margin_then_fills_at_its_price_as_maker(make: Callable[..., SimAccount]) -> None:
    """BUY 0.01 @ 49 000 rests (margin 24.5 at 20x), ignores 49 500, fills at 49 000 on 48 900 with 0.02 % fee."""
    acc = make()
    state, events = acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("49000"),
                                  time_ms=T0, client_order_id="lim")
    assert (state.status, kinds(events)) == ("NEW", ["NEW"])
    assert [o.client_order_id for o in acc.open_orders(BTC)] == ["lim"]
    assert acc.balance().available == D("10000") - D("24.5")
    assert acc.on_price(BTC, D("49500"), T0 + 1) == []
    events = acc.on_price(BTC, D("48900"), T0 + 2)
    assert kinds(events) == ["TRADE", "ACCOUNT"]
    fill = acc.fills[-1]
    assert (fill.price, fill.fee, fill.is_maker) == (D("49000"), D("0.0002") * D("490"), True)
    assert acc.query_order(BTC, client_order_id="lim").status == "FILLED"
    assert acc.open_orders() == []
    with pytest.raises(SimRejected) as info:
        acc.cancel_order(BTC, client_order_id="lim", time_ms=T0 + 3)
    assert info.value.code == -2011


def test_marketable_limit_fills_at_once_and_ioc_expires(make: Callable[..., SimAccount]) -> None:
    """A BUY limit above the price fills now as taker at the slipped price; an IOC below it expires."""
    acc = make()
    state, _ = acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("50100"),
                             time_ms=T0)
    assert (state.status, state.avg_price) == ("FILLED", D("50005.0"))
    state, events = acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("49000"),
                                  time_ms=T0, time_in_force="IOC")
    assert (state.status, kinds(events)) == ("EXPIRED", ["NEW", "EXPIRED"])


def test_cancel_releases_the_order_margin(make: Callable[..., SimAccount]) -> None:
    """After a cancel the available balance is whole again and the order reports CANCELED."""
    acc = make()
    state, _ = acc.new_order(symbol=BTC, side="SELL", type="LIMIT", quantity=D("0.01"), price=D("51000"),
                             time_ms=T0)
    cancelled, events = acc.cancel_order(BTC, order_id=state.order_id, time_ms=T0 + 1)
    assert (cancelled.status, kinds(events)) == ("CANCELED", ["CANCELED"])
    assert acc.balance().available == D("10000")


def test_resting_reduce_only_expires_when_the_position_is_gone(make: Callable[..., SimAccount]) -> None:
    """A reduce-only take-profit LIMIT outlives a manual close; when the price reaches it, it EXPIRES unfilled."""
    acc = make()
    market(acc, "BUY", "0.01")
    acc.new_order(symbol=BTC, side="SELL", type="LIMIT", quantity=D("0.01"), price=D("51000"), reduce_only=True,
                  time_ms=T0, client_order_id="tp")
    market(acc, "SELL", "0.01")
    fills = len(acc.fills)
    assert kinds(acc.on_price(BTC, D("51000"), T0 + 1)) == ["EXPIRED"]
    assert acc.query_order(BTC, client_order_id="tp").status == "EXPIRED" and len(acc.fills) == fills


def test_a_restored_account_equals_the_one_that_traded(make: Callable[..., SimAccount]) -> None:
    """A paper account rebuilt after a restart from (wallet, positions) — what the database holds — shows the
    same positions, liquidation prices and balance as the account that traded, and ends the same way."""
    traded = make(NO_SLIP)
    traded.set_leverage("BTCUSDT", 7)
    market(traded, "BUY", "0.5")
    market(traded, "SELL", "4", symbol="ETHUSDT")
    held = {p.symbol: p for p in traded.positions()}
    restored = make(NO_SLIP)
    restored.restore(traded.balance().wallet, {
        s: (p.quantity if p.side == "LONG" else -p.quantity, p.entry_price, p.leverage, T0) for s, p in held.items()})
    assert restored.positions() == traded.positions()
    assert restored.balance() == traded.balance()
    for acc in (traded, restored):
        acc.on_price("BTCUSDT", D("49000"), T0 + 60_000)
        acc.on_price("ETHUSDT", D("3100"), T0 + 60_000)
        assert acc.positions()[0].liquidation_price > 0
    assert restored.positions() == traded.positions() and restored.balance() == traded.balance()
    for acc in (traded, restored):
        market(acc, "SELL", "0.5", t=T0 + 120_000, reduce_only=True)
        market(acc, "BUY", "4", t=T0 + 120_000, symbol="ETHUSDT", reduce_only=True)
    assert restored.positions() == [] and restored.balance() == traded.balance()
    with pytest.raises(ValueError, match="has not traded"):
        traded.restore(D(1000), {})
    with pytest.raises(ValueError, match="unknown symbol"):
        make().restore(D(1000), {"NOPEUSDT": (D(1), D(1), 1, T0)})
    with pytest.raises(ValueError, match="bad position"):
        make().restore(D(1000), {"BTCUSDT": (D(0), D(50000), 5, T0)})


def test_funding_by_hand(make: Callable[..., SimAccount]) -> None:
    """Long 0.01 BTC marked at 51 000, rate 0.0001: pays 0.051 USDT (FUNDING_FEE update, wallet only); short
    0.02 at a −0.0003 rate pays 0.306; flat: nothing; a NaN rate is refused."""
    acc = make()
    assert acc.settle_funding("BTCUSDT", D("0.0001"), T0) == (D(0), [])
    market(acc, "BUY", "0.01", cid="e1")
    acc.on_price("BTCUSDT", D("51000"), T0 + 1)
    before = acc.balance().wallet
    paid, events = acc.settle_funding("BTCUSDT", D("0.0001"), T0 + 2)
    assert paid == D("0.05100000")
    assert events == [AccountUpdate("FUNDING_FEE", before - paid, (), T0 + 2, -paid)]  # bc: the change
    market(acc, "SELL", "0.03", t=T0 + 3, cid="x1")  # flip to a 0.02 short
    paid, _ = acc.settle_funding("BTCUSDT", D("-0.0003"), T0 + 4)
    assert paid == D("0.30600000")  # −0.02 × 51 000 × −0.0003: shorts pay a negative rate
    with pytest.raises(ValueError, match="not a number"):
        acc.settle_funding("BTCUSDT", D("NaN"), T0 + 5)


def test_funding_income_ledger(make: Callable[..., SimAccount]) -> None:
    """Every non-zero funding charge is one FUNDING_FEE row: income = −payment (a long paying a positive rate is
    negative, a short receiving it positive), the funding time, tranIds counting from 1; flat or zero-rate
    funding books nothing. Filters: symbol, both bounds inclusive, limit keeps the oldest; rows stay sorted by
    time even when recorded out of order, and the list handed out is a copy."""
    acc = make()
    acc.settle_funding("BTCUSDT", D("0.0001"), T0)  # flat: nothing
    market(acc, "BUY", "0.01", cid="e1")
    market(acc, "SELL", "1", symbol="ETHUSDT", cid="e2")
    acc.on_price("BTCUSDT", D("51000"), T0 + 1)
    paid, _ = acc.settle_funding("BTCUSDT", D("0.0001"), T0 + 10)
    received, _ = acc.settle_funding("ETHUSDT", D("0.0001"), T0 + 10)
    assert (paid, received) == (D("0.05100000"), D("-0.30000000"))
    assert acc.settle_funding("BTCUSDT", D("0"), T0 + 20)[1]  # the update is still sent, no row booked
    acc.settle_funding("BTCUSDT", D("0.0002"), T0 + 30)
    acc.settle_funding("ETHUSDT", D("0.0001"), T0 + 5)  # late: sorted in before the others
    rows = acc.funding_income()
    assert [(r.symbol, r.income, r.time_ms, r.tran_id) for r in rows] == [
        ("ETHUSDT", D("0.30000000"), T0 + 5, 4),
        ("BTCUSDT", D("-0.05100000"), T0 + 10, 1),
        ("ETHUSDT", D("0.30000000"), T0 + 10, 2),
        ("BTCUSDT", D("-0.10200000"), T0 + 30, 3),
    ]
    assert {(r.income_type, r.asset) for r in rows} == {("FUNDING_FEE", "USDT")}
    assert sum(r.income for r in rows) == acc.balance().wallet - (D(10000) - sum(f.fee for f in acc.fills))
    assert [r.tran_id for r in acc.funding_income("BTCUSDT")] == [1, 3]
    assert [r.tran_id for r in acc.funding_income(start_ms=T0 + 10, end_ms=T0 + 30)] == [1, 2, 3]
    assert [r.tran_id for r in acc.funding_income(start_ms=T0 + 11, end_ms=T0 + 29)] == []
    assert [r.tran_id for r in acc.funding_income(end_ms=T0 + 10, limit=2)] == [4, 1]
    rows.clear()
    assert len(acc.funding_income()) == 4
    with pytest.raises(ValueError, match="not positive"):
        acc.funding_income(limit=0)
