"""A person on the same account leaves conditional orders of theirs on a symbol (the Binance app: a stop or a target
with ``closePosition``, a reduce-only stop, an opening stop). One-way mode holds one position per symbol, so any of
them would act on the position our next entry opens there: close it at a level the strategy did not choose, or add
to it. The order manager used to look only at its own algo orders before an entry (and only once per symbol and
process): our position opened with the person's ``my-target`` sitting on it. Found by a review of a person and the
service sharing an account. Now the symbol's open algo orders are read before every entry (in the same round trip
as the leverage and margin type) and a foreign one drops the entry; the person's order is never touched.

End to end: emulator (real 2023 candles) over real sockets, signed REST as the person's app sends it, the real
executor and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from smc_quant.order_manager import OrderConfig
from smc_quant.orders.broker import AlgoUpdate, OrderUpdate
from tests.integration.test_forced_exits import arrival, open_position
from tests.integration.trading_kit import Rig, our_orders, signed, trading_rig

pytestmark = pytest.mark.integration

SYMBOL = "ETHUSDT"


def _theirs(rig: Rig) -> dict[str, Any]:
    """The open algo orders on ``SYMBOL`` that are not ours, by client id."""
    return {a.client_algo_id: a for a in rig.account.open_algo_orders(SYMBOL)
            if not a.client_algo_id.startswith("smc-")}


async def _their_market(rig: Rig, ex: Executor, cid: str, side: str, *, reduce_only: bool = False) -> None:
    """A person's 0.1 MARKET order on ``SYMBOL`` from the app; returns once the executor heard of its fill."""
    seen = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.client_order_id == cid and e.has_fill)
    params: list[tuple[str, Any]] = [("symbol", SYMBOL), ("side", side), ("type", "MARKET"), ("quantity", "0.100"),
                                     ("newClientOrderId", cid)]
    status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/order",
                                [*params, ("reduceOnly", "true")] if reduce_only else params)
    assert status == 200, body
    await asyncio.wait_for(seen.wait(), 10)
    await ex.idle()


async def _their_algo(rig: Rig, ex: Executor, cid: str, params: list[tuple[str, Any]]) -> None:
    """A person's conditional order on ``SYMBOL``, sent as the app sends it; returns once the executor heard of it."""
    seen = arrival(ex, lambda e: isinstance(e, AlgoUpdate) and e.client_algo_id == cid)
    status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/algoOrder",
                                [("algoType", "CONDITIONAL"), ("symbol", SYMBOL), *params, ("clientAlgoId", cid)])
    assert status == 200, body
    await asyncio.wait_for(seen.wait(), 10)
    await ex.idle()


async def _their_order_left(rig: Rig, ex: Executor, cid: str, params: list[tuple[str, Any]]) -> None:
    """The person's conditional order left on ``SYMBOL`` while nobody holds a position there. A closePosition one
    needs a position when placed (the exchange refuses it with -2022 on a flat symbol), and outlives it: the person
    shorts 0.1, sets the order, closes the short by hand — the order stays."""
    if dict(params).get("closePosition") != "true":
        await _their_algo(rig, ex, cid, params)
        return
    await _their_market(rig, ex, f"{cid}-open", "SELL")
    await _their_algo(rig, ex, cid, params)
    await _their_market(rig, ex, f"{cid}-close", "BUY", reduce_only=True)
    await ex.reconcile()  # the person's position is gone: the symbol is no longer theirs
    await ex.idle()
    assert rig.account.positions() == [] and ex.foreign == set()


async def _their_cancel(rig: Rig, ex: Executor, cid: str) -> None:
    seen = arrival(ex, lambda e: isinstance(e, AlgoUpdate) and e.client_algo_id == cid and e.status == "CANCELED")
    status, body = await signed(rig.session, rig.emulator, "DELETE", "/fapi/v1/algoOrder",
                                [("symbol", SYMBOL), ("clientAlgoId", cid)])
    assert status == 200, body
    await asyncio.wait_for(seen.wait(), 10)
    await ex.idle()


def _target(rig: Rig) -> list[tuple[str, Any]]:
    """A closePosition TAKE_PROFIT_MARKET for a short (BUY), 5 % below the price: where a person takes profit."""
    price = (rig.price(SYMBOL) * Decimal("0.95")).quantize(Decimal("0.01"))
    return [("side", "BUY"), ("type", "TAKE_PROFIT_MARKET"), ("triggerPrice", str(price)), ("closePosition", "true")]


def _their_orders(rig: Rig) -> dict[str, list[tuple[str, Any]]]:
    """Conditional orders a person may leave, each would act on a short of ours (one-way mode: one position)."""
    price = rig.price(SYMBOL)
    above = str((price * Decimal("1.05")).quantize(Decimal("0.01")))
    below = str((price * Decimal("0.95")).quantize(Decimal("0.01")))
    return {
        "close_target": _target(rig),
        # a reduce-only stop for a long, the other side: the entry is dropped too (any side)
        "reduce_only_stop": [("side", "SELL"), ("type", "STOP_MARKET"), ("triggerPrice", below),
                             ("quantity", "0.100"), ("reduceOnly", "true")],
        # an opening stop (no reduceOnly): it would add 0.1 to our short when it fires
        "opening_stop": [("side", "SELL"), ("type", "STOP_MARKET"), ("triggerPrice", below), ("quantity", "0.100")],
        "close_stop": [("side", "BUY"), ("type", "STOP_MARKET"), ("triggerPrice", above), ("closePosition", "true")],
        # a trailing stop for a long (the parser used to reject the type: the listing showed nothing on the symbol)
        "trailing_stop": [("side", "SELL"), ("type", "TRAILING_STOP_MARKET"), ("callbackRate", "1.5"),
                          ("quantity", "0.100"), ("reduceOnly", "true")],
        # one that starts trailing once the price reaches its activation price; a BUY one would add to our short
        "trailing_from": [("side", "BUY"), ("type", "TRAILING_STOP_MARKET"), ("callbackRate", "2"),
                          ("activatePrice", below), ("quantity", "0.100")],
    }


def _described(params: list[tuple[str, Any]]) -> str:
    """How the drop reason names the person's order ``my-order`` placed with ``params``."""
    p = dict(params)
    size = "closePosition" if p.get("closePosition") else "qty 0.100"
    if "callbackRate" not in p:
        return f"my-order {p['side']} {p['type']} {size} @{p['triggerPrice']}"
    start = f" from @{p['activatePrice']}" if "activatePrice" in p else ""
    return f"my-order {p['side']} {p['type']} {size} callback {p['callbackRate']}%{start}"


async def _signal(rig: Rig, ex: Executor, suffix: str = "") -> list[dict[str, Any]]:
    """Our SHORT signal on ``SYMBOL`` (a fresh id with ``suffix``), run to the end; the logs it left."""
    signal = rig.signal(SYMBOL, "SHORT", confidence=0.75, stop_pct=8.0, target_pct=30.0)
    with structlog.testing.capture_logs() as logs:
        assert ex.submit(replace(signal, signal_id=f"{signal.signal_id}{suffix}") if suffix else signal)
        await ex.idle()
    return logs


def _dropped(logs: list[dict[str, Any]]) -> list[str]:
    return [e["reason"] for e in logs if e["event"] == "entry_dropped"]


@pytest.mark.parametrize("kind", ["close_target", "reduce_only_stop", "opening_stop", "close_stop", "trailing_stop",
                                  "trailing_from"])
async def test_no_entry_on_a_symbol_carrying_a_persons_conditional_order(shared_data: Path, pg_dsn: str,
                                                                         kind: str) -> None:
    """A person's conditional order rests on ETHUSDT, where we hold nothing: our signal sends no order (it used to
    open a short the person's order would then close or add to), the person's order is untouched, and the drop
    names it. Once the person cancels it, a new signal on the symbol opens normally."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        params = _their_orders(rig)[kind]
        await _their_order_left(rig, ex, "my-order", params)
        before = _theirs(rig)["my-order"]

        logs = await _signal(rig, ex)

        assert our_orders(rig) == [], "our entry went out onto the person's order"
        assert SYMBOL not in ex.book and rig.account.positions() == []
        assert _theirs(rig) == {"my-order": before}  # never cancelled nor changed
        (reason,) = _dropped(logs)
        assert reason == f"foreign_orders: {_described(params)}"
        assert ex.manager.stats["foreign_orders"] == 1 and ex.manager.stats["dropped"] == 1

        await _their_cancel(rig, ex, "my-order")
        await _signal(rig, ex, ":again")

        assert SYMBOL in ex.book and our_orders(rig), "the entry after the person's order was gone was dropped"
        assert _theirs(rig) == {}
        entry = ex.book[SYMBOL]
        assert {a.client_algo_id for a in rig.account.open_algo_orders(SYMBOL)} == {entry.sl_client_id,
                                                                                   entry.tp_client_id}


@pytest.mark.parametrize("when", ["after_our_trade", "during_our_trade"])
async def test_a_symbol_we_traded_before_is_checked_again_for_a_persons_order(shared_data: Path, pg_dsn: str,
                                                                              when: str) -> None:
    """We traded ETHUSDT once in this process (the manager then remembered the symbol as clean and skipped its check
    from then on). The person's closePosition target is left there after our trade (their own short, target, close
    by hand), or set on our short while it was open (moving our target in the app) and outliving it: our next signal
    on the symbol sends nothing."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await open_position(rig, ex, SYMBOL, "SHORT")
        if when == "during_our_trade":
            await _their_algo(rig, ex, "my-target", _target(rig))
        assert await ex.close(SYMBOL, ExitReason.TIME)
        await ex.idle()
        assert SYMBOL not in ex.book and rig.account.positions() == []
        await rig.minutes(1)
        if when == "after_our_trade":
            assert rig.account.open_algo_orders(SYMBOL) == []
            await _their_order_left(rig, ex, "my-target", _target(rig))
        sent = len(our_orders(rig))

        logs = await _signal(rig, ex)

        assert len(our_orders(rig)) == sent, "our entry went out onto the person's target"
        assert SYMBOL not in ex.book and rig.account.positions() == []
        assert list(_theirs(rig)) == ["my-target"]
        (reason,) = _dropped(logs)
        assert reason.startswith("foreign_orders: my-target BUY TAKE_PROFIT_MARKET closePosition @")


@pytest.mark.parametrize("failures", [1, 1000], ids=["once", "every_try"])
async def test_an_entry_whose_check_of_the_algo_orders_fails_is_dropped_unless_a_retry_reads_them(
        shared_data: Path, pg_dsn: str, failures: int) -> None:
    """The open algo orders cannot be read (a WAF 403): asked again; when every try fails the entry is dropped
    (``foreign_orders_not_checked``) — an order we cannot see could close the position at any level."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(orders={"exit_retry_base_s": 0.01})
        rig.emulator.faults.http_error(403, count=failures, path="/fapi/v1/openAlgoOrders")

        logs = await _signal(rig, ex)
        rig.emulator.faults.http_error(403, count=0)

        if failures == 1:
            assert SYMBOL in ex.book and _dropped(logs) == []
        else:
            assert our_orders(rig) == [] and SYMBOL not in ex.book and rig.account.positions() == []
            assert rig.emulator.faults.counters["http_403"] >= OrderConfig().entry_max_attempts  # asked again
            (reason,) = _dropped(logs)
            assert reason.startswith("foreign_orders_not_checked: ")


async def test_no_entry_on_a_symbol_carrying_a_persons_resting_order(shared_data: Path, pg_dsn: str) -> None:
    """A person's ordinary LIMIT order rests on ETHUSDT, 4 % below the price: it would add to (or reverse) our short
    when it fills, and it keeps the exchange from setting the margin type (-4048). Our signal used to go out beside it
    (margin type left as it was); now it sends no order and names it. Once the person cancels it, the entry goes."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        price = (rig.price(SYMBOL) * Decimal("0.96")).quantize(Decimal("0.01"))
        seen = arrival(ex, lambda e: isinstance(e, OrderUpdate) and e.client_order_id == "person-limit")
        status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/order",
                                    [("symbol", SYMBOL), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
                                     ("quantity", "1.000"), ("price", str(price)),
                                     ("newClientOrderId", "person-limit")])
        assert status == 200, body
        await asyncio.wait_for(seen.wait(), 10)

        logs = await _signal(rig, ex)
        assert our_orders(rig) == [] and SYMBOL not in ex.book
        assert _dropped(logs) == ["foreign_orders: person-limit BUY LIMIT qty 1.000"]
        assert [o.client_order_id for o in rig.account.open_orders(SYMBOL)] == ["person-limit"]

        status, body = await signed(rig.session, rig.emulator, "DELETE", "/fapi/v1/order",
                                    [("symbol", SYMBOL), ("origClientOrderId", "person-limit")])
        assert status == 200, body
        await _signal(rig, ex, ":again")
        assert SYMBOL in ex.book and our_orders(rig)
