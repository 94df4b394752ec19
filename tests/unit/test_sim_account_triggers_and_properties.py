"""The simulated USDT-M account (``smc_quant.sim``) on the real exchangeInfo and leverage brackets: what the
price does to it, and what holds for the whole account.

Covered here: algo orders (triggers, gaps, cancels, entry stops), liquidation (the price by hand and as the
margin/maintenance crossing, cross liquidation of every position), and account-wide properties (builder orders
accepted on every USDT perpetual, the wallet identity, pure modules, settings, id counters, the price feed,
determinism). MARKET and LIMIT orders, fills and rejections are in ``test_sim_account.py``; shared helpers
are in ``sim_account_kit.py`` and the fixtures in ``conftest.py``.

Hand computations use BTCUSDT: tick 0.10, step 0.001, MARKET max 120, MIN_NOTIONAL 100, band ±5 %,
first bracket [0, 50 000) at 125x with mmr 0.4 % and cum 0.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.orders.broker import AccountEvent, AlgoUpdate, OrderUpdate
from smc_quant.orders.filters import (
    FilterRejected,
    PriceRounding,
    Side,
    TriggerType,
    ceil_to_step,
    floor_to_step,
    validate_order,
    validate_trigger,
)
from smc_quant.sim import SimAccount, SimConfig, SimRejected
from tests.unit.sim_account_kit import BTC, NO_SLIP, T0, D, kinds, market

# -- algo orders ---------------------------------------------------------------------------------

TRIGGERS = [
    # position side, algo side, type, trigger, crossing price, expected fill (trigger ± 1 bp on the tick)
    ("BUY", "SELL", "STOP_MARKET", "49000", "48990", "48995.1"),
    ("BUY", "SELL", "TAKE_PROFIT_MARKET", "52000", "52100", "51994.8"),
    ("SELL", "BUY", "STOP_MARKET", "51000", "51200", "51005.1"),
    ("SELL", "BUY", "TAKE_PROFIT_MARKET", "48000", "47900", "48004.8"),
]


@pytest.mark.parametrize(("entry", "side", "type", "trigger", "cross", "fill"), TRIGGERS,
                         ids=["long-stop", "long-tp", "short-stop", "short-tp"])
def test_algo_triggers_and_fills_at_its_trigger(make: Callable[..., SimAccount], entry: str, side: str, type: str,
                                                trigger: str, cross: str, fill: str) -> None:
    """The position closes at the trigger price with slippage; events TRIGGERED, NEW, TRADE, ACCOUNT, FINISHED."""
    acc = make()
    market(acc, entry, "0.01")
    state, events = acc.new_algo(symbol=BTC, side=side, type=type, trigger_price=D(trigger), close_position=True,
                                 time_ms=T0, client_algo_id="sl-1")
    assert (state.status, kinds(events)) == ("NEW", ["algo:NEW"])
    assert acc.on_price(BTC, (D(trigger) + D(cross)) / 2 + (D(trigger) - D(cross)), T0 + 1) == []
    events = acc.on_price(BTC, D(cross), T0 + 2)
    assert kinds(events) == ["algo:TRIGGERED", "NEW", "TRADE", "ACCOUNT", "algo:FINISHED"]
    trade = events[2]
    assert isinstance(trade, OrderUpdate)
    assert (trade.client_order_id, trade.last_price, trade.reduce_only) == ("sl-1", D(fill), True)
    assert acc.positions() == [] and acc.open_algo_orders() == []
    assert acc.query_algo(client_algo_id="sl-1").status == "FINISHED"
    assert acc.query_order(BTC, client_order_id="sl-1").status == "FILLED"
    finished = events[-1]
    assert isinstance(finished, AlgoUpdate) and finished.executed_qty == D("0.01")  # ``aq``: it executed
    assert not finished.ended_unexecuted


def test_gap_through_the_stop_fills_at_the_gap_price(make: Callable[..., SimAccount]) -> None:
    """Long with a stop at 49 000; the price gaps to 48 000: the stop fills at 48 000 × 0.9999 = 47 995.2."""
    acc = make()
    market(acc, "BUY", "0.01")
    acc.new_algo(symbol=BTC, side="SELL", type="STOP_MARKET", trigger_price=D("49000"), close_position=True,
                 time_ms=T0)
    acc.on_price(BTC, D("48000"), T0 + 1, gap=True)
    assert acc.fills[-1].price == D("47995.2")
    assert acc.fills[-1].realized_pnl == (D("47995.2") - D("50005.0")) * D("0.01")


def test_trigger_without_position_is_rejected_and_algos_outlive_the_position(
        make: Callable[..., SimAccount]) -> None:
    """The stop is not cancelled when the position closes; when it fires: TRIGGERED, REJECTED "Reduce Only reject"."""
    acc = make()
    market(acc, "BUY", "0.01")
    acc.new_algo(symbol=BTC, side="SELL", type="STOP_MARKET", trigger_price=D("49000"), close_position=True,
                 time_ms=T0, client_algo_id="sl")
    market(acc, "SELL", "0.01")
    assert [a.client_algo_id for a in acc.open_algo_orders(BTC)] == ["sl"]
    fills = len(acc.fills)
    events = acc.on_price(BTC, D("48900"), T0 + 1)
    assert kinds(events) == ["algo:TRIGGERED", "algo:REJECTED"]
    rejected = events[-1]
    assert isinstance(rejected, AlgoUpdate) and rejected.reject_reason == "Reduce Only reject"
    assert len(acc.fills) == fills and acc.positions() == []
    assert acc.query_algo(client_algo_id="sl").status == "REJECTED"


def test_trailing_stop_follows_the_best_price_and_fires_on_the_callback(make: Callable[..., SimAccount]) -> None:
    """A person's TRAILING_STOP_MARKET (we never place one; the emulator takes it so that tests can leave one on a
    symbol): a SELL with 1 % callback and no activation price follows the highest price from its placement, and
    fires at 1 % below it — 51 000 → 50 490 — filling at the price that fired it."""
    acc = make(NO_SLIP)
    market(acc, "BUY", "0.01")
    state, _ = acc.new_algo(symbol=BTC, side="SELL", type="TRAILING_STOP_MARKET", trigger_price=None,
                            quantity=D("0.01"), reduce_only=True, callback_rate=D("1"), time_ms=T0, client_algo_id="tr")
    assert (state.type, state.trigger_price, state.callback_rate) == ("TRAILING_STOP_MARKET", None, D("1"))
    for t, price in enumerate(("50500", "50000", "51000", "50500"), 1):  # 50 000 > 50 500 × 0.99 = 49 995
        assert acc.on_price(BTC, D(price), T0 + t) == [], price
    events = acc.on_price(BTC, D("50480"), T0 + 9)
    assert kinds(events) == ["algo:TRIGGERED", "NEW", "TRADE", "ACCOUNT", "algo:FINISHED"]
    assert acc.fills[-1].price == D("50480") and acc.positions() == []


def test_trailing_stop_with_an_activation_price_waits_for_it(make: Callable[..., SimAccount]) -> None:
    """With ``activatePrice`` 51 000 a SELL trailing stop ignores a fall before the price reached it; once at
    51 200 it trails from there and fires at 2 % below: 50 176."""
    acc = make(NO_SLIP)
    market(acc, "BUY", "0.01")
    acc.new_algo(symbol=BTC, side="SELL", type="TRAILING_STOP_MARKET", trigger_price=D("51000"), quantity=D("0.01"),
                 reduce_only=True, callback_rate=D("2"), time_ms=T0)
    for t, price in enumerate(("50500", "48000", "51200", "50200"), 1):
        assert acc.on_price(BTC, D(price), T0 + t) == [], price
    assert kinds(acc.on_price(BTC, D("50170"), T0 + 9))[0] == "algo:TRIGGERED"


@pytest.mark.parametrize(("side", "activation", "rate", "close", "code"), [
    ("SELL", "50000", "1", False, -2021),  # a SELL activates above the price: at it, it would fire at once
    ("BUY", "50100", "1", False, -2021),
    ("SELL", None, "0.05", False, -1130),  # callbackRate 0.1–10
    ("SELL", None, "10.5", False, -1130),
    ("SELL", None, "1", True, -1106),  # no closePosition
])
def test_trailing_stop_refusals(make: Callable[..., SimAccount], side: str, activation: str | None, rate: str,
                                close: bool, code: int) -> None:
    acc = make()
    market(acc, "BUY", "0.01")
    with pytest.raises(SimRejected) as info:
        acc.new_algo(symbol=BTC, side=side, type="TRAILING_STOP_MARKET", callback_rate=D(rate), time_ms=T0,
                     trigger_price=None if activation is None else D(activation),
                     **({"close_position": True} if close else {"quantity": D("0.01")}))
    assert info.value.code == code


def test_algo_cancel_and_duplicate_client_id(make: Callable[..., SimAccount]) -> None:
    """An open algo id cannot be reused (-4116); after a cancel it can; a cancelled algo never fires."""
    acc = make()
    acc.new_algo(symbol=BTC, side="BUY", type="STOP_MARKET", trigger_price=D("51000"), quantity=D("0.01"),
                 time_ms=T0, client_algo_id="a")
    with pytest.raises(SimRejected) as info:
        acc.new_algo(symbol=BTC, side="BUY", type="STOP_MARKET", trigger_price=D("52000"), quantity=D("0.01"),
                     time_ms=T0, client_algo_id="a")
    assert info.value.code == -4116
    state, events = acc.cancel_algo(symbol=BTC, client_algo_id="a", time_ms=T0 + 1)
    assert (state.status, kinds(events)) == ("CANCELED", ["algo:CANCELED"])
    assert acc.on_price(BTC, D("51500"), T0 + 2) == []
    acc.new_algo(symbol=BTC, side="BUY", type="STOP_MARKET", trigger_price=D("52000"), quantity=D("0.01"),
                 time_ms=T0 + 3, client_algo_id="a")
    assert acc.order_log == ["a", "a"]


def test_entry_stop_opens_a_position(make: Callable[..., SimAccount]) -> None:
    """A non-reduce BUY stop at 51 000 opens a long when the price rises through it."""
    acc = make(NO_SLIP)
    acc.new_algo(symbol=BTC, side="BUY", type="STOP_MARKET", trigger_price=D("51000"), quantity=D("0.01"),
                 time_ms=T0)
    acc.on_price(BTC, D("51050"), T0 + 1)
    (pos,) = acc.positions()
    assert (pos.side, pos.quantity, pos.entry_price) == ("LONG", D("0.01"), D("51000"))


# -- liquidation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "hand_lp"), [
    ("BUY", (D("992.5") - D("0.3") * D("50000")) / (D("0.3") * D("0.004") - D("0.3"))),
    ("SELL", (D("992.5") + D("0.3") * D("50000")) / (D("0.3") * D("0.004") + D("0.3"))),
], ids=["long", "short"])
def test_liquidation_price_by_hand_and_liquidation_at_it(make: Callable[..., SimAccount], side: str,
                                                         hand_lp: Decimal) -> None:
    """1 000 USDT, 0.3 BTC at 50 000 (fee 7.5 → WB 992.5, mmr 0.4 %, cum 0): LP = (WB − s·q·e) / (q·mmr − s·q).

    Long: 46 879.18…, short: 53 095.28…. Just before the LP nothing happens; just past it the account is
    liquidated with an ``autoclose-`` order at the price, taker fee charged. As on Binance (the captured
    ``ws_futures_order_update_liquidation.json``), the fill is on the CALCULATED event itself: status FILLED,
    ``l`` = the position, no TRADE event after it.
    """
    acc = make(SimConfig(balance=D("1000"), slippage_bps=D(0)))
    market(acc, side, "0.3")
    (pos,) = acc.positions()
    assert pos.liquidation_price == hand_lp
    sign = 1 if side == "BUY" else -1
    assert acc.on_price(BTC, (hand_lp + sign * D("1")).quantize(D("0.1")), T0 + 1) == []
    past = (hand_lp - sign * D("1")).quantize(D("0.1"))
    events = acc.on_price(BTC, past, T0 + 2)
    assert kinds(events) == ["CALCULATED", "ACCOUNT"]
    close = events[0]
    assert isinstance(close, OrderUpdate) and close.client_order_id.startswith("autoclose-") and close.is_liquidation
    assert (close.status, close.last_qty, close.cum_qty, close.has_fill) == ("FILLED", D("0.3"), D("0.3"), True)
    assert close.trade_id == acc.fills[-1].trade_id
    assert (close.last_price, close.commission) == (past, D("0.0005") * D("0.3") * past)
    assert acc.positions() == []
    assert acc.balance().wallet == D("1000") + sum(f.realized_pnl - f.fee for f in acc.fills)


def test_liquidation_price_is_where_margin_balance_meets_maintenance(
        filters: dict[str, SymbolFilters], brackets: dict[str, SymbolBrackets]) -> None:
    """Two positions, BTC up to 20 (several brackets): at BTC = LP the margin balance equals the total
    maintenance margin (the formula, other positions and the bracket fixed point); one tick on the safe
    side nothing happens, two ticks past it the account is liquidated."""

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(st.integers(1, 400), st.sampled_from(["BUY", "SELL"]), st.integers(0, 300),
           st.sampled_from(["BUY", "SELL"]), st.integers(-500, 500))
    def check(btc_lots: int, btc_side: str, eth_lots: int, eth_side: str, eth_move: int) -> None:
        acc = SimAccount(filters, brackets, SimConfig(balance=D("100000"), slippage_bps=D(0)))
        acc.on_price(BTC, D("50000"), T0)
        acc.on_price("ETHUSDT", D("3000"), T0)
        market(acc, btc_side, str(D("0.05") * btc_lots))
        if eth_lots:
            market(acc, eth_side, str(D("0.1") * eth_lots), symbol="ETHUSDT")
        acc.on_price("ETHUSDT", D("3000") + eth_move, T0 + 1)
        btc = next(p for p in acc.positions() if p.symbol == BTC)
        lp = btc.liquidation_price
        assume(lp > 1)
        s = 1 if btc.side == "LONG" else -1
        others = [p for p in acc.positions() if p.symbol != BTC]
        other_up = sum((p.unrealized_pnl for p in others), D(0))
        other_mm = sum((brackets[p.symbol].maintenance_margin(p.quantity * p.mark_price) for p in others), D(0))
        at_lp = acc.balance().wallet + other_up + s * btc.quantity * (lp - btc.entry_price)
        maintenance = other_mm + brackets[BTC].maintenance_margin(btc.quantity * lp)
        assert abs(at_lp - maintenance) < D("1e-12")
        tick = filters[BTC].tick_size
        safe = floor_to_step(lp, tick) + tick if s > 0 else ceil_to_step(lp, tick) - tick
        assert "CALCULATED" not in kinds(acc.on_price(BTC, safe, T0 + 2))
        assert "CALCULATED" in kinds(acc.on_price(BTC, safe - s * 2 * tick, T0 + 3))
        assert acc.positions() == []
        tiers.add(brackets[BTC].tier(btc.quantity * lp))

    tiers: set[object] = set()
    check()
    assert len(tiers) >= 2


def test_liquidation_cancels_resting_orders_and_closes_every_position(make: Callable[..., SimAccount]) -> None:
    """Cross: a BTC crash liquidates the ETH position too, and the resting order is cancelled first."""
    acc = make(SimConfig(balance=D("1000"), slippage_bps=D(0)))
    market(acc, "BUY", "0.3")
    market(acc, "BUY", "0.1", symbol="ETHUSDT")
    acc.new_order(symbol="ETHUSDT", side="BUY", type="LIMIT", quantity=D("0.1"), price=D("2900"), time_ms=T0)
    events = acc.on_price(BTC, D("46000"), T0 + 1)
    assert kinds(events) == ["CANCELED", "CALCULATED", "ACCOUNT", "CALCULATED", "ACCOUNT"]
    assert all(e.has_fill for e in events if isinstance(e, OrderUpdate) and e.execution == "CALCULATED")
    assert acc.positions() == [] and acc.open_orders() == []


# -- properties over the real exchangeInfo -------------------------------------------------------


def _log_between(low: Decimal, high: Decimal, u: float) -> Decimal:
    return D(str(float(low) * (float(high) / float(low)) ** u))


def test_builder_orders_are_accepted_on_every_usdt_perpetual(filters: dict[str, SymbolFilters],
                                                              brackets: dict[str, SymbolBrackets]) -> None:
    """On every USDT perpetual, validate_order / validate_trigger output is never refused by the simulator.

    Per symbol: random marks (log-uniform from max(minPrice, 10 000 ticks) to maxPrice), LIMIT prices
    anywhere in the PERCENT_PRICE band, notionals from MIN_NOTIONAL to 100×, every rounding mode, and a
    reduce-only stop or take-profit; cases the builder itself refuses are skipped.
    """
    symbols = sorted(s for s in filters if s in brackets)
    assert len(symbols) > 300
    accepted: dict[str, int] = dict.fromkeys(symbols, 0)
    for symbol in symbols:
        _accept_builder_orders(symbol, filters[symbol], brackets[symbol], accepted)
    assert [s for s, n in accepted.items() if n == 0] == []


def _accept_builder_orders(symbol: str, f: SymbolFilters, b: SymbolBrackets, accepted: dict[str, int]) -> None:
    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.filter_too_much])
    @given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.sampled_from(["BUY", "SELL"]),
           st.sampled_from(["down", "up", "half_up"]), st.floats(1.001, 1.5))
    def check(u_mark: float, u_band: float, u_notional: float, side: Side, rounding: PriceRounding,
              distance: float) -> None:
        low = max(f.min_price, f.tick_size * 10_000)
        mark = (_log_between(low, max(low, f.max_price), u_mark) // f.tick_size) * f.tick_size
        limit = mark * (f.percent_down + (f.percent_up - f.percent_down) * D(str(u_band)))
        notional = _log_between(f.min_notional, f.min_notional * 100, u_notional)
        # the entry's protective exit: a stop below a long / above a short, a take-profit the other way
        kind: TriggerType = "STOP_MARKET" if u_band < 0.5 else "TAKE_PROFIT_MARKET"
        exit_side: Side = "SELL" if side == "BUY" else "BUY"
        below = (exit_side == "SELL") == (kind == "STOP_MARKET")
        trigger_at = mark / D(str(distance)) if below else mark * D(str(distance))
        try:
            lim = validate_order(f, side=side, order_type="LIMIT", quantity=notional / limit, mark_price=mark,
                                 price=limit, rounding=rounding)
            mkt = validate_order(f, side=side, order_type="MARKET", quantity=notional / mark, mark_price=mark)
            trigger, _ = validate_trigger(f, side=exit_side, order_type=kind, trigger=trigger_at,
                                          reference_price=mark, rounding=rounding)
        except FilterRejected:
            assume(False)
            return
        acc = SimAccount({symbol: f}, {symbol: b}, SimConfig(balance=D("1e15")))
        acc.on_price(symbol, mark, T0)
        acc.set_leverage(symbol, 1)
        acc.new_order(symbol=symbol, side=side, type="LIMIT", quantity=lim.quantity, price=lim.price, time_ms=T0)
        acc.new_order(symbol=symbol, side=side, type="MARKET", quantity=mkt.quantity, time_ms=T0)
        acc.new_algo(symbol=symbol, side=exit_side, type=kind, trigger_price=trigger, quantity=mkt.quantity,
                     reduce_only=True, time_ms=T0)
        accepted[symbol] += 1

    check()


STEPS = st.lists(st.tuples(st.sampled_from(["BTCUSDT", "ETHUSDT"]), st.sampled_from(["BUY", "SELL"]),
                           st.integers(1, 400), st.integers(-300, 300)), min_size=1, max_size=40)


def test_wallet_is_initial_plus_realised_minus_fees_after_ending_flat(
        filters: dict[str, SymbolFilters], brackets: dict[str, SymbolBrackets]) -> None:
    """Random MARKET trades and price moves, then flat: wallet = initial + Σ rp − Σ fee exactly, and equals
    initial + Σ cash flows − Σ fee up to the 8-decimal rounding of each realised PnL (≤ 0.5e-8 per fill)."""

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(STEPS)
    def check(steps: list[tuple[str, str, int, int]]) -> None:
        acc = SimAccount(filters, brackets, SimConfig(balance=D("1000000")))
        rejected: list[int | None] = []
        prices = {"BTCUSDT": D("50000"), "ETHUSDT": D("3000")}
        for symbol, price in prices.items():
            acc.on_price(symbol, price, T0)
        for i, (symbol, side, lots, move) in enumerate(steps):
            prices[symbol] += prices[symbol] * D(move) / D(10000)
            prices[symbol] = prices[symbol].quantize(filters[symbol].tick_size)
            acc.on_price(symbol, prices[symbol], T0 + i)
            try:
                acc.new_order(symbol=symbol, side=side, type="MARKET", quantity=filters[symbol].step_size * lots * 10,
                              time_ms=T0 + i)
            except SimRejected as exc:
                rejected.append(exc.code)
        for pos in acc.positions():
            acc.new_order(symbol=pos.symbol, side="SELL" if pos.side == "LONG" else "BUY", type="MARKET",
                          quantity=pos.quantity, reduce_only=True, time_ms=T0 + len(steps))
        assert acc.positions() == [] and set(rejected) <= {-4164, -2019, -2027}
        fills = acc.fills
        fees = sum((f.fee for f in fills), D(0))
        assert acc.balance().wallet == D("1000000") + sum((f.realized_pnl for f in fills), D(0)) - fees
        cash = sum((f.quantity * f.price * (1 if f.side == "SELL" else -1) for f in fills), D(0))
        assert abs(acc.balance().wallet - (D("1000000") + cash - fees)) <= len(fills) * D("0.000000005")

    check()


def test_sim_modules_are_pure() -> None:
    """No module of smc_quant.sim imports an I/O library or reads the clock (time is passed in)."""
    import ast

    import smc_quant.sim
    forbidden = {"asyncio", "aiohttp", "asyncpg", "redis", "websockets", "socket", "time", "datetime", "random",
                 "structlog", "logging"}
    roots: dict[str, set[str]] = {}
    for path in sorted(Path(smc_quant.sim.__file__).parent.glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        roots[path.name] = names & forbidden
    assert "account.py" in roots
    assert {k: v for k, v in roots.items() if v} == {}


def test_account_settings_leverage_and_margin_type(make: Callable[..., SimAccount], filters: dict[str, SymbolFilters],
                                                   brackets: dict[str, SymbolBrackets]) -> None:
    """Leverage defaults to min(20, the symbol's top bracket); it sets the initial margin; margin type changes
    only while flat (-4048), and a second identical change is -4046."""
    acc = make()
    low_cap = next(s for s in sorted(filters) if s in brackets and max(t.max_leverage for t in brackets[s].tiers) < 20)
    assert acc.leverage(low_cap) == max(t.max_leverage for t in brackets[low_cap].tiers)
    assert acc.leverage(BTC) == 20
    acc.set_leverage(BTC, 10)
    market(acc, "BUY", "0.1")
    balance = acc.balance()
    # available = wallet + unrealised − position IM at the mark (50 000 × 0.1 / 10 = 500)
    assert balance.available == balance.wallet + balance.unrealized_pnl - D("500")
    with pytest.raises(SimRejected) as info:
        acc.set_margin_type(BTC, "ISOLATED")
    assert info.value.code == -4048
    acc.set_margin_type("ETHUSDT", "ISOLATED")
    assert acc.margin_type("ETHUSDT") == "ISOLATED"
    with pytest.raises(SimRejected) as info:
        acc.set_margin_type("ETHUSDT", "ISOLATED")
    assert info.value.code == -4046


def test_ids_are_counters_and_queries_find_orders_by_either_id(make: Callable[..., SimAccount]) -> None:
    """orderId, algoId and tradeId count from 1; generated client ids are deterministic; open_orders spans
    symbols oldest first."""
    acc = make()
    first, _ = acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.01"), price=D("49000"), time_ms=T0)
    second, _ = acc.new_order(symbol="ETHUSDT", side="SELL", type="LIMIT", quantity=D("0.01"), price=D("3100"),
                              time_ms=T0)
    algo, _ = acc.new_algo(symbol=BTC, side="BUY", type="STOP_MARKET", trigger_price=D("51000"),
                           quantity=D("0.01"), time_ms=T0)
    assert (first.order_id, second.order_id, algo.algo_id) == (1, 2, 1)
    assert (first.client_order_id, algo.client_algo_id) == ("sim-1", "simalgo-1")
    assert [o.order_id for o in acc.open_orders()] == [1, 2]
    assert acc.query_order(BTC, order_id=1) == acc.query_order(BTC, client_order_id="sim-1") == first
    with pytest.raises(SimRejected) as info:
        acc.query_order("ETHUSDT", order_id=1)
    assert info.value.code == -2013
    assert acc.query_algo(algo_id=1) == algo
    market(acc, "BUY", "0.01")
    assert acc.fills[-1].trade_id == 1 and acc.fills[-1].order_id == 3


def test_bad_price_feed_is_a_clear_error(make: Callable[..., SimAccount]) -> None:
    """A non-positive or NaN price is refused with ValueError; the last price is kept."""
    acc = make()
    for bad in (D(0), D("-1"), D("NaN")):
        with pytest.raises(ValueError, match="not a positive number"):
            acc.on_price(BTC, bad, T0)
    assert acc.last_price(BTC) == D("50000")


def test_entry_stop_without_margin_is_rejected_when_it_triggers(make: Callable[..., SimAccount]) -> None:
    """No margin check at placement (Binance, after the algo migration); at trigger time 5 BTC at 20x needs
    12 750 USDT of 10 000: TRIGGERED, then REJECTED with the -2019 message, and no fill."""
    acc = make()
    acc.new_algo(symbol=BTC, side="BUY", type="STOP_MARKET", trigger_price=D("51000"), quantity=D("5"), time_ms=T0)
    events = acc.on_price(BTC, D("51000"), T0 + 1)
    assert kinds(events) == ["algo:TRIGGERED", "algo:REJECTED"]
    rejected = events[-1]
    assert isinstance(rejected, AlgoUpdate) and rejected.reject_reason.startswith("Margin is insufficient.")
    assert acc.fills == [] and acc.positions() == []


def test_same_calls_give_the_same_events(make: Callable[..., SimAccount]) -> None:
    """Determinism: ids are counters and nothing reads a clock, so a replay is event-for-event identical."""
    def run() -> list[AccountEvent]:
        acc = make()
        out = market(acc, "BUY", "0.05")
        out += acc.new_algo(symbol=BTC, side="SELL", type="STOP_MARKET", trigger_price=D("49500"),
                            close_position=True, time_ms=T0)[1]
        out += acc.new_order(symbol=BTC, side="BUY", type="LIMIT", quantity=D("0.02"), price=D("49800"),
                             time_ms=T0)[1]
        for i, price in enumerate(("49900", "49700", "49400", "50100")):
            out += acc.on_price(BTC, D(price), T0 + i + 1)
        return out
    first = run()
    assert kinds(first) == ["NEW", "TRADE", "ACCOUNT", "algo:NEW", "NEW", "TRADE", "ACCOUNT",
                            "algo:TRIGGERED", "NEW", "TRADE", "ACCOUNT", "algo:FINISHED"]
    assert run() == first
