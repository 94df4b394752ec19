"""A stop whose triggered order carries a client id the exchange made up.

Binance does not document that the MARKET order a fired stop places carries our ``clientAlgoId`` as its client id;
it names it in the algo order's ``actualOrderId`` (``ALGO_UPDATE``'s ``ai``). The emulator's
``trigger_ids="exchange"`` makes one up, and the executor must still book the stop as a stop — while it runs, and
when it fired while no executor ran (it used to end as ``position_vanished``: no trade, the day's PnL and the
learner never told)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason, Trade
from smc_quant.executor import Executor
from tests.integration.test_trading_e2e import _sl_case
from tests.integration.trading_kit import Rig, trading_rig

pytestmark = pytest.mark.integration


async def _sol_with_a_stop(rig: Rig, ex: Executor) -> str:
    """A SOLUSDT position whose stop the next 20 real minutes reach; the stop's client id."""
    side, stop, target = _sl_case(rig, "SOLUSDT")
    assert ex.submit(rig.signal("SOLUSDT", side, confidence=0.75, stop_pct=stop, target_pct=target))
    await ex.idle()
    return ex.book["SOLUSDT"].sl_client_id or ""


def _assert_booked_from_the_made_up_order(rig: Rig, trade: Trade, stop_id: str) -> None:
    """The trade's exit is the exchange's fill of the order the stop placed, whose client id is not ours."""
    [child] = [f for f in rig.account.fills if f.symbol == trade.symbol and f.client_order_id.startswith("algo")]
    assert child.client_order_id != stop_id
    assert trade.exit_reason == ExitReason.STOP_LOSS
    assert (trade.quantity, trade.exit_price) == (child.quantity, child.price)


async def test_a_stop_whose_order_has_an_exchange_id_is_booked_as_a_stop_while_running(shared_data: Path,
                                                                                      pg_dsn: str) -> None:
    async with trading_rig(shared_data, pg_dsn, trigger_ids="exchange") as rig:
        ex = await rig.executor()
        stop_id = await _sol_with_a_stop(rig, ex)
        await rig.minutes(20)
        await ex.idle()
        assert "SOLUSDT" not in ex.book and ex.stats.alarms == 0
        [trade] = [t for t in await rig.repo.trades() if t.symbol == "SOLUSDT"]
        _assert_booked_from_the_made_up_order(rig, trade, stop_id)


async def test_a_stop_that_fired_while_away_is_found_by_its_actual_order_id(shared_data: Path, pg_dsn: str) -> None:
    async with trading_rig(shared_data, pg_dsn, trigger_ids="exchange") as rig:
        first = await rig.executor()
        stop_id = await _sol_with_a_stop(rig, first)
        await rig.kill(first)
        await rig.minutes(20)  # the stop fires while no executor runs
        assert [p for p in rig.account.positions() if p.symbol == "SOLUSDT"] == []

        second = await rig.executor()
        await second.idle()
        assert "SOLUSDT" not in second.book and second.stats.alarms == 0
        [trade] = [t for t in await rig.repo.trades() if t.symbol == "SOLUSDT"]
        _assert_booked_from_the_made_up_order(rig, trade, stop_id)
