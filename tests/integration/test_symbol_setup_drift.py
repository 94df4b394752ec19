"""A trader on the same account changes a symbol's leverage or margin type between our trades.

End to end: emulator (real 2023 candles), signed REST, the real executor and PostgreSQL. The order manager used to
set a symbol's margin type once per process and its leverage only when the decision's differed from the last value
it had set, so a change made by hand in the Binance app between two of our trades went unnoticed: the next entry ran
at x50, or isolated, while the risk manager had sized it for its own leverage, cross. Every entry now asserts both
settings at the exchange before its order is sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.executor import Executor
from tests.integration.test_forced_exits import open_position
from tests.integration.trading_kit import Rig, signed, trading_rig

pytestmark = pytest.mark.integration

SYMBOL = "ETHUSDT"


async def trade_then_flat(rig: Rig, ex: Executor) -> int:
    """Open and close one SHORT on ``SYMBOL`` through the executor; the leverage the risk manager chose."""
    entry = await open_position(rig, ex, SYMBOL, "SHORT")
    leverage = int(entry.position.leverage)
    assert rig.account.leverage(SYMBOL) == leverage and rig.account.margin_type(SYMBOL) == "CROSSED"
    assert await ex.close(SYMBOL, ExitReason.TIME)
    await ex.idle()
    assert SYMBOL not in ex.book and rig.account.positions() == []
    return leverage


async def enter_again(rig: Rig, ex: Executor) -> int:
    """A new signal on ``SYMBOL`` a minute later; the new position's leverage as decided by the risk manager."""
    await rig.minutes(1)
    assert ex.submit(rig.signal(SYMBOL, "SHORT", confidence=0.75, stop_pct=8.0, target_pct=30.0))
    await ex.idle()
    assert SYMBOL in ex.book, "the new entry was dropped"
    return int(ex.book[SYMBOL].position.leverage)


async def exchange_row(rig: Rig) -> dict[str, str]:
    """The symbol's ``GET /fapi/v2/positionRisk`` row (it carries leverage and marginType)."""
    status, rows = await signed(rig.session, rig.emulator, "GET", "/fapi/v2/positionRisk", [("symbol", SYMBOL)])
    assert status == 200, rows
    (row,) = [r for r in rows if float(r["positionAmt"]) != 0]
    return dict(row)


async def test_a_leverage_changed_by_hand_between_trades_is_set_back_before_the_next_entry(
        shared_data: Path, pg_dsn: str) -> None:
    """The trader sets x50 while we are flat: our next position runs at the risk manager's leverage, not x50."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        first = await trade_then_flat(rig, ex)
        assert first != 50
        status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/leverage",
                                    [("symbol", SYMBOL), ("leverage", "50")])
        assert status == 200 and body["leverage"] == 50, body
        assert rig.account.leverage(SYMBOL) == 50

        decided = await enter_again(rig, ex)

        assert rig.account.leverage(SYMBOL) == decided, "the new position runs at the trader's leverage"
        (held,) = rig.account.positions()
        assert held.leverage == decided
        assert int((await exchange_row(rig))["leverage"]) == decided
        assert ex.manager.stats["leverage_set"] == 2  # asserted before each entry


async def test_a_margin_type_changed_by_hand_between_trades_is_set_back_before_the_next_entry(
        shared_data: Path, pg_dsn: str) -> None:
    """The trader switches the symbol to ISOLATED (and x50) while we are flat: our next position is cross again,
    at the risk manager's leverage."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        await trade_then_flat(rig, ex)
        status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/marginType",
                                    [("symbol", SYMBOL), ("marginType", "ISOLATED")])
        assert status == 200, body
        status, body = await signed(rig.session, rig.emulator, "POST", "/fapi/v1/leverage",
                                    [("symbol", SYMBOL), ("leverage", "50")])
        assert status == 200, body
        assert rig.account.margin_type(SYMBOL) == "ISOLATED"

        decided = await enter_again(rig, ex)

        assert rig.account.margin_type(SYMBOL) == "CROSSED", "the new position runs isolated"
        row = await exchange_row(rig)
        assert row["marginType"] == "cross" and int(row["leverage"]) == decided
        assert rig.account.leverage(SYMBOL) == decided
        assert ex.manager.stats["margin_type_set"] == 2  # asserted before each entry (-4046 included)
