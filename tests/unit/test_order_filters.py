"""Order filters (tick, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL, PERCENT_PRICE) on the real exchangeInfo."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smc_quant.datasets import load_exchange_info
from smc_quant.errors import VenueRejected
from smc_quant.exchange.exchange_info import SymbolFilters, parse_exchange_info
from smc_quant.orders.filters import (
    FilterRejected,
    OrderType,
    PriceRounding,
    Side,
    TriggerType,
    ceil_to_step,
    decimals_of,
    floor_to_step,
    round_price,
    to_wire,
    validate_order,
    validate_trigger,
)

D = Decimal


@pytest.fixture(scope="module")
def real_filters(shared_data: Path) -> dict[str, SymbolFilters]:
    """Every symbol's filters from the real 2024-10-02 exchangeInfo."""
    info = parse_exchange_info(load_exchange_info(shared_data))
    return {s.symbol: s.filters for s in info.symbols if s.filters is not None}


@pytest.fixture(scope="module")
def btc(real_filters: dict[str, SymbolFilters]) -> SymbolFilters:
    """BTCUSDT: tick 0.10, step 0.001, market max 120, min notional 100, band ±5%."""
    return real_filters["BTCUSDT"]


def test_decimals_of_steps_seen_in_exchange_info() -> None:
    """Trailing zeros and exponent forms give the step's real number of decimals."""
    assert [decimals_of(D(s)) for s in ("0.10", "0.001", "0.0001000", "1E-7", "1", "10")] == [1, 3, 4, 7, 0, 0]


def test_to_wire_never_prints_float_noise_or_exponents() -> None:
    """A float-born quantity floors to the step and prints as a plain string with the step's decimals."""
    noisy = D(0.1 + 0.2)  # 0.3000000000000000444…
    assert to_wire(floor_to_step(noisy, D("0.001")), D("0.001")) == "0.300"
    assert to_wire(D("1E-7"), D("1E-7")) == "0.0000001"
    assert to_wire(D("12300"), D("1")) == "12300"
    assert to_wire(D("65000.1"), D("0.10")) == "65000.1"


def test_price_rounding_modes() -> None:
    """down/up go to the neighbouring ticks, half_up sends a half tick up, on-grid prices stay."""
    tick = D("0.10")
    assert round_price(D("65000.15"), tick, "down") == D("65000.1")
    assert round_price(D("65000.15"), tick, "up") == D("65000.2")
    assert round_price(D("65000.15"), tick, "half_up") == D("65000.2")
    assert round_price(D("65000.149"), tick, "half_up") == D("65000.1")
    assert round_price(D("65000.2"), tick, "up") == D("65000.2")
    assert ceil_to_step(D("7"), D("5")) == D("10")


def test_btcusdt_limit_rounds_price_toward_safety_and_quantity_down(btc: SymbolFilters) -> None:
    """A BUY limit never pays more than asked and never buys more than asked; SELL rounds the price up."""
    buy = validate_order(btc, side="BUY", order_type="LIMIT", quantity=D("0.0039"), price=D("64000.19"),
                         mark_price=D("64000"))
    assert (buy.quantity, buy.price, buy.wire_quantity, buy.wire_price) == (D("0.003"), D("64000.1"), "0.003",
                                                                            "64000.1")
    sell = validate_order(btc, side="SELL", order_type="LIMIT", quantity=D("0.0039"), price=D("64000.11"),
                          mark_price=D("64000"))
    assert sell.wire_price == "64000.2"


def test_btcusdt_min_notional_100_and_reduce_only_exemption(btc: SymbolFilters) -> None:
    """0.001 BTC at 64,000 is 64 USDT: rejected as MIN_NOTIONAL (-4164) unless reduce-only."""
    with pytest.raises(FilterRejected) as info:
        validate_order(btc, side="SELL", order_type="LIMIT", quantity=D("0.001"), price=D("64000"),
                       mark_price=D("64000"))
    assert (info.value.filter, info.value.code) == ("MIN_NOTIONAL", -4164)
    assert isinstance(info.value, VenueRejected)
    exit_order = validate_order(btc, side="SELL", order_type="MARKET", quantity=D("0.001"),
                                mark_price=D("64000"), reduce_only=True)
    assert exit_order.wire_quantity == "0.001" and exit_order.wire_price is None
    ok = validate_order(btc, side="BUY", order_type="MARKET", quantity=D("0.002"), mark_price=D("64000"))
    assert ok.quantity * D("64000") >= btc.min_notional


def test_market_orders_use_market_lot_size(btc: SymbolFilters) -> None:
    """BTCUSDT allows 1000 on LIMIT but only 120 on MARKET (MARKET_LOT_SIZE, -4005)."""
    limit = validate_order(btc, side="BUY", order_type="LIMIT", quantity=D("500"), price=D("64000"),
                           mark_price=D("64000"))
    assert limit.quantity == D("500")
    with pytest.raises(FilterRejected) as info:
        validate_order(btc, side="BUY", order_type="MARKET", quantity=D("500"), mark_price=D("64000"))
    assert (info.value.filter, info.value.code) == ("MARKET_LOT_SIZE", -4005)


def test_quantity_that_floors_below_min_qty_is_rejected(btc: SymbolFilters) -> None:
    """0.0009 BTC floors to 0: LOT_SIZE, -4004; a non-positive quantity is -4003."""
    with pytest.raises(FilterRejected) as info:
        validate_order(btc, side="BUY", order_type="LIMIT", quantity=D("0.0009"), price=D("64000"),
                       mark_price=D("64000"))
    assert (info.value.filter, info.value.code) == ("LOT_SIZE", -4004)
    with pytest.raises(FilterRejected) as info:
        validate_order(btc, side="BUY", order_type="MARKET", quantity=D("0"), mark_price=D("64000"))
    assert info.value.code == -4003


@pytest.mark.parametrize(("price", "code"), [("67300", -4016), ("60700", -4024), ("500", -1013)])
def test_percent_price_band_and_price_filter(btc: SymbolFilters, price: str, code: int) -> None:
    """Limits more than 5% away from the mark, or below minPrice, are rejected before sending."""
    with pytest.raises(FilterRejected) as info:
        validate_order(btc, side="SELL", order_type="LIMIT", quantity=D("0.01"), price=D(price),
                       mark_price=D("64000"))
    assert info.value.code == code
    assert info.value.filter == ("PRICE_FILTER" if code == -1013 else "PERCENT_PRICE")


def test_price_above_max_is_rejected_before_any_rounding(btc: SymbolFilters) -> None:
    """An absurd price is rejected as PRICE_FILTER rather than divided on the tick grid."""
    with pytest.raises(FilterRejected) as info:
        validate_order(btc, side="BUY", order_type="LIMIT", quantity=D("1"), price=D("1E40"), mark_price=D("1"))
    assert info.value.filter == "PRICE_FILTER"


def test_market_order_with_a_price_is_a_programming_error(btc: SymbolFilters) -> None:
    """Passing a price to a MARKET order, or a non-positive mark, raises ValueError (a bug, not a rejection)."""
    with pytest.raises(ValueError, match="MARKET"):
        validate_order(btc, side="BUY", order_type="MARKET", quantity=D("1"), price=D("1"), mark_price=D("1"))
    with pytest.raises(ValueError, match="mark"):
        validate_order(btc, side="BUY", order_type="MARKET", quantity=D("1"), mark_price=D("0"))


@pytest.mark.parametrize(("side", "kind", "trigger", "ok"), [
    ("SELL", "STOP_MARKET", "62000.07", True), ("SELL", "STOP_MARKET", "64500", False),
    ("BUY", "STOP_MARKET", "66000", True), ("BUY", "STOP_MARKET", "63000", False),
    ("SELL", "TAKE_PROFIT_MARKET", "66000", True), ("SELL", "TAKE_PROFIT_MARKET", "64000", False),
    ("BUY", "TAKE_PROFIT_MARKET", "62000", True), ("BUY", "TAKE_PROFIT_MARKET", "65000", False),
])
def test_protective_trigger_sits_on_the_right_side_of_the_price(
        btc: SymbolFilters, side: Side, kind: TriggerType, trigger: str, ok: bool) -> None:
    """A long's stop (SELL STOP_MARKET) must be below the price, its take-profit above; else -2021 up front."""
    def check() -> tuple[Decimal, str]:
        return validate_trigger(btc, side=side, order_type=kind, trigger=D(trigger), reference_price=D("64000"),
                                rounding="half_up")
    if ok:
        px, wire = check()
        assert px % btc.tick_size == 0 and D(wire) == px
    else:
        with pytest.raises(FilterRejected) as info:
            check()
        assert (info.value.filter, info.value.code) == ("TRIGGER", -2021)


def test_trigger_outside_price_filter_is_rejected(btc: SymbolFilters) -> None:
    """Triggers below minPrice (556.80) or above maxPrice are PRICE_FILTER rejections."""
    for trigger in ("100", "1E12"):
        with pytest.raises(FilterRejected) as info:
            validate_trigger(btc, side="SELL", order_type="STOP_MARKET", trigger=D(trigger),
                             reference_price=D("64000"), rounding="down")
        assert info.value.filter == "PRICE_FILTER"


quantities = st.decimals(min_value=D("0.00000001"), max_value=D("100000"), allow_nan=False, allow_infinity=False,
                         places=9)
steps = st.sampled_from([D("0.001"), D("0.01"), D("0.1"), D("1"), D("10"), D("0.0001000"), D("1E-7")])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(quantities, steps)
def test_floor_is_a_multiple_of_step_never_above_input_and_within_one_step(q: Decimal, step: Decimal) -> None:
    """floor_to_step(q) is on the grid, ≤ q, and > q − step; its wire string parses back to itself."""
    f = floor_to_step(q, step)
    assert f % step == 0 and f <= q < f + step
    assert D(to_wire(f, step)) == f and "E" not in to_wire(f, step)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), steps,
       st.sampled_from(["down", "up", "half_up"]))
def test_float_born_values_with_many_digits_land_exactly_on_the_grid(
        x: float, step: Decimal, mode: PriceRounding) -> None:
    """Decimal(float) has up to ~50 digits; rounding still gives an exact grid value within one step."""
    value = D(x)
    rounded = round_price(value, step, mode)
    assert rounded % step == 0 and abs(rounded - value) < step
    assert (rounded <= value) if mode == "down" else (rounded >= value) if mode == "up" else True
    assert D(to_wire(rounded, step)) == rounded


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_every_accepted_order_on_real_symbols_satisfies_every_filter(
        real_filters: dict[str, SymbolFilters], data: st.DataObject) -> None:
    """For random symbols, sides, sizes and prices, an accepted order meets all filters; a rejection names one."""
    symbol = data.draw(st.sampled_from(sorted(real_filters)))
    f = real_filters[symbol]
    mark = data.draw(st.decimals(min_value=f.min_price * 2, max_value=f.min_price * 10_000, places=8))
    price = mark * data.draw(st.decimals(min_value=D("0.9"), max_value=D("1.1"), places=4))
    notional = data.draw(st.decimals(min_value=D("1"), max_value=D("5000"), places=2))
    side: Side = data.draw(st.sampled_from(("BUY", "SELL")))
    kind: OrderType = data.draw(st.sampled_from(("LIMIT", "MARKET")))
    reduce_only = data.draw(st.booleans())
    qty = notional / price
    rejected: str | None = None
    try:
        o = validate_order(f, side=side, order_type=kind, quantity=qty, mark_price=mark,
                           price=price if kind == "LIMIT" else None, reduce_only=reduce_only)
    except FilterRejected as exc:
        rejected = exc.filter
    if rejected is not None:
        assert rejected in {"LOT_SIZE", "MARKET_LOT_SIZE", "PERCENT_PRICE", "PRICE_FILTER"} or (
            rejected == "MIN_NOTIONAL" and not reduce_only)
        return
    step = f.market_step_size if kind == "MARKET" else f.step_size
    assert o.quantity % step == 0 and o.quantity <= qty and D(o.wire_quantity) == o.quantity
    ref = mark if o.price is None else o.price
    assert reduce_only or o.quantity * ref >= f.min_notional
    if o.price is not None:
        assert o.price % f.tick_size == 0 and D(o.wire_price or "") == o.price
        assert (o.price <= price) if side == "BUY" else (o.price >= price)
        assert mark * f.percent_down <= o.price <= mark * f.percent_up
