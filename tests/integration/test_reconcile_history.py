"""The reconciliation's last resorts for a position it finds flat with no exit of ours — the account's trade history,
then ``position_vanished`` — must not do harm when the exchange says less than it knows: a trade history it refuses
to give is no history (the round goes on for every other symbol, and the next start works), and a positions answer
that lags an entry which just filled does not end that position (its stop and target stay, it is not written off
as ended). Both found by a review of the session that added them; emulator (real 2023 candles) over real sockets,
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from smc_quant.domain.trading import ExitReason
from smc_quant.exchange.emulator.account import account_filters
from tests.integration.test_forced_exits import open_position
from tests.integration.trading_kit import Rig, trading_rig

pytestmark = pytest.mark.integration


def _ours(rig: Rig, symbol: str) -> list[str]:
    """Our algo orders open on ``symbol`` (client ids)."""
    return [a.client_algo_id for a in rig.account.open_algo_orders(symbol) if a.client_algo_id.startswith("smc-")]


async def test_a_refused_trade_history_is_no_history_and_the_round_goes_on(shared_data: Path, pg_dsn: str) -> None:
    """Our ETHUSDT short is closed by a person while the stream is down, and the exchange refuses the symbol's trade
    history (400 -1121, as for a symbol no longer listed); BTCUSDT's stop disappeared meanwhile. The refusal used to
    fail every round — BTCUSDT's stop never placed again — and the next start. Now ETHUSDT ends as
    ``position_vanished`` (as before the history was read) and BTCUSDT is protected again."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        eth = await open_position(rig, ex, "ETHUSDT", "SHORT")
        btc = await open_position(rig, ex, "BTCUSDT", "LONG")
        old_stop = btc.sl_client_id
        assert old_stop is not None
        rig.account.new_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=eth.position.quantity,
                              time_ms=rig.clock(), client_order_id="by-hand", reduce_only=True)
        rig.account.cancel_algo(symbol="BTCUSDT", client_algo_id=old_stop, time_ms=rig.clock())
        rig.emulator.faults.http_error(400, 1000, "/fapi/v1/userTrades")

        await ex.reconcile()
        await ex.idle()
        assert "ETHUSDT" not in ex.book and [a["kind"] for a in await rig.repo.open_alarms()] == ["position_vanished"]
        assert _ours(rig, "ETHUSDT") == []
        assert len(_ours(rig, "BTCUSDT")) == 2 and ex.book["BTCUSDT"].sl_client_id not in (None, old_stop)

        again = await rig.executor()  # a restart over the same database and exchange
        await again.idle()
        assert set(again.book) == {"BTCUSDT"}


async def test_a_positions_answer_that_lags_our_entry_does_not_end_the_position(shared_data: Path,
                                                                                pg_dsn: str) -> None:
    """The positions answer of a round lags the fill of an entry booked a moment ago: the position looks flat, with
    no exit anywhere. Ending it there cancelled its stop and target and wrote its entry off for good (never adopted
    again): the position ran on with no protection and no 2-hour exit. It is read again first: still held, kept."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        entry = await open_position(rig, ex, "ETHUSDT", "SHORT")
        protection = sorted(_ours(rig, "ETHUSDT"))
        rig.emulator.faults.lagging_positions(["ETHUSDT"], n=1)

        await ex.reconcile()
        await ex.idle()
        assert ex.book.get("ETHUSDT") is entry and sorted(_ours(rig, "ETHUSDT")) == protection
        assert await rig.repo.open_alarms() == [] and ex.foreign == set()
        assert await rig.repo.latest_entry("ETHUSDT") is not None, "written off as ended"

        await ex.reconcile()  # the next round, answered in time: nothing to do
        await ex.idle()
        assert ex.book.get("ETHUSDT") is entry and sorted(_ours(rig, "ETHUSDT")) == protection


async def test_a_close_found_in_the_history_names_the_exit_over_a_failed_exit_of_ours(shared_data: Path,
                                                                                      pg_dsn: str) -> None:
    """Our 2-hour exit of SOLUSDT was refused (its price band), so the position stayed open, protected again; then
    a person closed it while the stream was down. The trade is the person's ``manual`` close, not ``time_limit``
    (the reason the failed exit had left on the position)."""
    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(orders={"exit_max_attempts": 1})
        entry = await open_position(rig, ex, "SOLUSDT", "LONG")
        band = account_filters(rig.emulator.market)["SOLUSDT"]
        rig.emulator.set_filter("SOLUSDT", "PERCENT_PRICE", multiplierUp="1", multiplierDown="1")
        assert not await ex.close("SOLUSDT", ExitReason.TIME)
        await ex.idle()
        rig.emulator.set_filter("SOLUSDT", "PERCENT_PRICE", multiplierUp=str(band.percent_up),
                                multiplierDown=str(band.percent_down))
        assert ex.book["SOLUSDT"].status == "open", "precondition: the exit failed"

        rig.account.new_order(symbol="SOLUSDT", side="SELL", type="MARKET", quantity=entry.position.quantity,
                              time_ms=rig.clock(), client_order_id="by-hand", reduce_only=True)
        await ex.reconcile()
        await ex.idle()
        (trade,) = await rig.repo.trades()
        assert trade.exit_reason == ExitReason.MANUAL and "SOLUSDT" not in ex.book
