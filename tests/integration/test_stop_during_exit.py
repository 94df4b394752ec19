"""A stop (SIGTERM) while the minute's exit check runs an exit the exchange keeps refusing. The trading stack's stop
waited for that check — a minute of retries — before the executor's own stop could begin, and the process's stop
budget ran out there: the executor's drain, which bounds an exit under way and protects its position again, never
ran. The check is cancelled now; its exit is the executor's task, drained within the executor's bound. Real emulator
(signed orders, the user-data stream), real PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from shards.trading import TradingStack
from smc_quant.domain.trading import Signal
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.rest import BinanceRestClient
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.tasks import within
from smc_quant.universe import BinanceUniverse
from tests.integration.trading_kit import FEATURES, live_settings, trading_rig

pytestmark = pytest.mark.integration


async def test_a_stop_during_a_refused_exit_ends_in_its_bound_with_the_position_protected(
        shared_data: Path, pg_dsn: str, tmp_path: Path) -> None:
    async with trading_rig(shared_data, pg_dsn, symbols=("BTCUSDT", "ETHUSDT")) as rig:
        em = rig.emulator
        settings = live_settings(em, tmp_path)
        governor = WeightGovernor(2400, 0.1)
        universe = await BinanceUniverse(BinanceRestClient(rig.session, em.rest_url, governor), None, None,
                                         settings.universe).load()
        stack = TradingStack(settings, filters=universe.filters, session=rig.session, pool=rig.pool,
                             governor=governor)
        await stack.start()
        stopped = False
        try:
            ex = stack.executor
            ex.config = replace(ex.config, stop_wait_s=0.5)  # the drain's bound on an exit under way
            ex.risk.config = replace(ex.risk.config, max_hold_ms=60_000)  # due at the next minute's exit check

            def closes() -> None:
                for symbol in em.symbols:
                    stack.on_candle(em.candles(symbol)[-1], [])

            closes()
            last = em.candles("ETHUSDT")[-1]
            assert ex.submit(Signal(f"ETHUSDT:LONG:{last.open_time}", "ETHUSDT", "LONG", last.open_time,
                                    Decimal(repr(last.close)), 0.75, 1.03, 2.07, "stop-during-exit", FEATURES,
                                    schema_version=FEATURE_SCHEMA.version, created_ms=stack.clock()))
            await ex.idle()
            entry = ex.book["ETHUSDT"]
            refused = asyncio.Event()
            em.faults.order_fault_listeners.append(lambda kind, placement: refused.set())
            em.faults.order_reject_503(8, only="reduce_only")  # every try of the exit: about a minute of retries
            await rig.minutes(2)
            closes()  # the minute's exit check: the hold is over, the exit goes out and is refused
            await refused.wait()

            await within(stack.stop(), 30)
            stopped = True
        finally:
            if not stopped:
                await stack.stop()
        assert [p.symbol for p in rig.account.positions()] == ["ETHUSDT"]  # not closed: refused to the end
        assert entry.sl_client_id in {a.client_algo_id for a in rig.account.open_algo_orders("ETHUSDT")}
