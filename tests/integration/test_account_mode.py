"""The exchange account's Position Mode and Asset Mode, over real sockets: the emulator keeps Binance's rules
for them (routes, error codes, the order-side rule, the ``ACCOUNT_CONFIG_UPDATE`` push), a live start refuses an
account it cannot trade before it touches the database, and Multi-Assets Mode switched on while the stack runs
halts new entries with a recorded request (PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog

from shards.app import Service
from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.errors import TemporaryError
from smc_quant.exchange.brackets import DEFAULT_TIER
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.emulator.account import account_brackets, account_filters
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.trade_client import ExchangeRejected, LiveBroker
from smc_quant.orders.account_mode import HEDGE, MULTI_ASSETS, AccountModeRefused, multi_assets_halt_reason
from smc_quant.orders.broker import AccountConfig, AccountModeChanged, OrderRequest
from smc_quant.orders.limiter import OrderLimiter
from smc_quant.orders.signing import RequestSigner
from smc_quant.store.control import ACCOUNT_MODE_BY, ControlRepository
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from tests.integration.trading_kit import live_settings, signed

pytestmark = pytest.mark.integration
D = Decimal
START_MS = 1_689_696_000_000  # 2023-07-18 16:00 UTC, inside the shared data


def emulator(shared_data: Path) -> Emulator:
    return Emulator(EmulatorConfig(data_dir=shared_data, speed=0, start_paused=True, symbols=("BTCUSDT",),
                                   start_time_ms=START_MS, max_minutes=10))


def make_broker(http: aiohttp.ClientSession, em: Emulator) -> LiveBroker:
    signer = RequestSigner(em.config.api_key, em.config.api_secret, lambda: time.time_ns() // 1_000_000)
    return LiveBroker(http, em.rest_url, signer, governor=WeightGovernor(),
                      limiter=OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event), timeout_s=5.0,
                      ws_base_url=em.ws_private_base.removesuffix("/private"))


async def switch(http: aiohttp.ClientSession, em: Emulator, what: str, on: bool) -> tuple[int, Any]:
    path = {"dualSidePosition": "/fapi/v1/positionSide/dual", "multiAssetsMargin": "/fapi/v1/multiAssetsMargin"}
    return await signed(http, em, "POST", path[what], [(what, "true" if on else "false")])


async def test_the_emulator_keeps_binances_rules_for_the_account_modes(
        shared_data: Path, http: aiohttp.ClientSession) -> None:
    """Read through ``LiveBroker.account_config``; changed the way Binance allows (not again, not with a position
    or an open order); in Hedge Mode our one-way orders are rejected -4061 (an alarm); a Multi-Assets change is
    pushed on the user-data stream as ``ACCOUNT_CONFIG_UPDATE``."""
    async with emulator(shared_data) as em:
        broker = make_broker(http, em)
        changes: asyncio.Queue[AccountModeChanged] = asyncio.Queue()
        broker.subscribe(lambda e: changes.put_nowait(e) if isinstance(e, AccountModeChanged) else None)
        await broker.start()
        try:
            assert await broker.account_config() == AccountConfig(False, False, can_trade=True, fee_tier=0)
            assert await switch(http, em, "dualSidePosition", False) == (
                400, {"code": -4059, "msg": "No need to change position side."})

            assert await switch(http, em, "dualSidePosition", True) == (200, {"code": 200, "msg": "success"})
            assert (await broker.account_config()).dual_side_position is True
            with pytest.raises(ExchangeRejected) as err:
                await broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-mode-hedge-en-0"))
            assert err.value.code == -4061 and err.value.reaction.action == "check_position_mode"
            assert em.account.positions() == []
            assert (await switch(http, em, "dualSidePosition", False))[0] == 200

            entry = OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-mode-oneway-en-0")
            assert (await broker.place_order(entry)).status == "FILLED"
            assert await switch(http, em, "dualSidePosition", True) == (
                400, {"code": -4068, "msg": "Position side cannot be changed if there exists position."})
            exit_ = OrderRequest("BTCUSDT", "SELL", "MARKET", D("0.010"), "smc-mode-oneway-ex-0", reduce_only=True)
            assert (await broker.place_order(exit_)).status == "FILLED"
            first = em.market.candle("BTCUSDT", START_MS)
            assert first is not None
            below = int(first.open * 0.98)  # rests: 2 % under the price, inside the percent-price band
            rest = OrderRequest("BTCUSDT", "BUY", "LIMIT", D("0.010"), "smc-mode-rest-en-0", price=D(below))
            assert (await broker.place_order(rest)).status == "NEW"
            assert await switch(http, em, "dualSidePosition", True) == (
                400, {"code": -4067, "msg": "Position side cannot be changed if there exists open orders."})
            assert (await switch(http, em, "multiAssetsMargin", True))[1]["code"] == -4170
            await broker.cancel_order("BTCUSDT", "smc-mode-rest-en-0")

            assert (await switch(http, em, "multiAssetsMargin", True))[0] == 200
            pushed = await asyncio.wait_for(changes.get(), 5)
            assert pushed.multi_assets_margin is True and pushed.event_time_ms >= START_MS  # on the replay clock
            assert (await broker.account_config()).multi_assets_margin is True
            assert (await switch(http, em, "multiAssetsMargin", True))[1]["code"] == -4171
            status, body = await signed(http, em, "POST", "/fapi/v1/multiAssetsMargin", [])
            assert (status, body["code"]) == (400, -1102)
            assert (await switch(http, em, "multiAssetsMargin", False))[0] == 200
            assert (await asyncio.wait_for(changes.get(), 5)).multi_assets_margin is False
            assert broker.stream.malformed == {}
        finally:
            await broker.close()


async def test_a_live_start_refuses_an_account_it_cannot_trade_and_halts_when_it_leaves_single_asset_mode(
        shared_data: Path, pg_dsn: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Hedge Mode at start: ``AccountModeRefused`` (exit 2) naming it, and nothing bound in the database. One-way
    again: the stack starts. Multi-Assets Mode switched on while it runs: new entries halted at once and the halt
    recorded (``smc-quant status`` shows it; it holds across restarts); a start while it is on is refused; switched
    back, a start holds the recorded halt until ``smc-quant resume``."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=4)
    control = ControlRepository(pool)
    async with emulator(shared_data) as em:
        settings = live_settings(em, tmp_path)

        def stack() -> TradingStack:
            return TradingStack(settings, filters=account_filters(em.market), session=http, pool=pool,
                                governor=WeightGovernor(2400, 0.1), brackets_file=shared_data / LEVERAGE_TIERS)

        async def refused(*expected: str) -> None:
            epochs = await pool.fetchval("SELECT count(*) FROM account_epochs")
            with pytest.raises(AccountModeRefused) as err:
                await stack().start()
            assert str(err.value) == (f"the Binance account at {em.rest_url} cannot be traded as it is set: "
                                      + "; ".join(expected))
            assert await pool.fetchval("SELECT count(*) FROM account_epochs") == epochs  # nothing bound

        try:
            assert (await switch(http, em, "dualSidePosition", True))[0] == 200
            await refused(HEDGE)
            assert (await switch(http, em, "dualSidePosition", False))[0] == 200

            running = stack()
            with structlog.testing.capture_logs() as logs:
                await running.start()
            try:
                [seen] = [e for e in logs if e["event"] == "account_config"]
                assert (seen["hedge_mode"], seen["multi_assets"], seen["can_trade"]) == (False, False, True)
                assert running.executor.halted is None
                assert await running.recheck_account() == []
                # Hedge Mode switched on while flat (Binance allows it and pushes nothing): the periodic re-read
                assert (await switch(http, em, "dualSidePosition", True))[0] == 200
                assert await running.recheck_account() == [HEDGE]
                assert running.executor.halted == (f"the Binance account cannot be traded as it is set now: {HEDGE}"
                                                   " — fix it, then smc-quant resume")
                await running.settle()
                assert (await control.state()).requested_by == ACCOUNT_MODE_BY
                assert (await switch(http, em, "dualSidePosition", False))[0] == 200
                resumed = await control.request("resume", "fixed", "test")
                assert running.control is not None  # the running executor learns of it (NOTIFY)
                await asyncio.wait_for(running.control.applied(resumed.event_id), 10)
                assert running.executor.halted is None
                pushed = asyncio.Event()  # subscribed after the stack: when it fires, the stack has acted
                running.broker.subscribe(lambda e: pushed.set() if isinstance(e, AccountModeChanged) else None)
                assert (await switch(http, em, "multiAssetsMargin", True))[0] == 200
                await asyncio.wait_for(pushed.wait(), 5)
                assert running.executor.halted == multi_assets_halt_reason()
                await running.settle()
                state = await control.state()
                assert (state.action, state.requested_by, state.reason) == (
                    "halt", ACCOUNT_MODE_BY, multi_assets_halt_reason())
            finally:
                await running.executor.stop()
                await running.stop()

            await refused(MULTI_ASSETS)
            assert (await switch(http, em, "multiAssetsMargin", False))[0] == 200
            again = stack()
            await again.start()
            try:  # the recorded halt holds from the start, until the operator resumes
                assert again.executor.halted == multi_assets_halt_reason()
            finally:
                await again.executor.stop()
                await again.stop()
        finally:
            await pool.close()


async def test_the_service_refuses_the_account_before_its_warm_start(
        shared_data: Path, pg_dsn: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """``smc-quant run`` (the Service) with keys on an account in Hedge Mode: refused right after the universe is
    loaded, before the shards are built and warmed from PostgreSQL (seconds at 300+ symbols) and before the REST
    history is fetched; nothing is recorded, and it stops cleanly."""
    async with emulator(shared_data) as em:
        assert (await switch(http, em, "dualSidePosition", True))[0] == 200
        service = Service(live_settings(em, tmp_path, database_url=pg_dsn, redis_url=None, log_level="WARNING",
                                        ops={"port": 0}))
        try:
            with pytest.raises(AccountModeRefused, match="Hedge Mode is on"):
                await service.start()
            assert service.universe is not None and service.cluster is None  # no shard built, nothing warmed
        finally:
            await service.stop()
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM candles") == 0
            assert await conn.fetchval("SELECT count(*) FROM account_epochs") == 0
        finally:
            await conn.close()


async def test_a_live_stack_sizes_with_the_accounts_own_leverage_brackets(
        shared_data: Path, pg_dsn: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """No brackets file (as in the Docker image): the default tier until the start reads the account's brackets
    from ``GET /fapi/v1/leverageBracket``; the risk manager sizes with those. A refresh the exchange does not
    answer keeps them; a start that cannot read them fails (exit 1) rather than size on guesses."""
    await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn, max_size=4)
    async with emulator(shared_data) as em:
        settings = live_settings(em, tmp_path)

        def stack() -> TradingStack:
            return TradingStack(settings, filters=account_filters(em.market), session=http, pool=pool,
                                governor=WeightGovernor(2400, 0.1))

        real = account_brackets(em.config, ["BTCUSDT"])["BTCUSDT"]
        assert len(real.tiers) > 1 and real.tiers[0] != DEFAULT_TIER
        live = stack()
        assert live.brackets["BTCUSDT"].tiers == (DEFAULT_TIER,) and live.risk.brackets is live.brackets
        await live.start()
        try:
            assert live.brackets["BTCUSDT"] == real  # what Binance will apply, in the risk manager too
            assert live.risk.brackets["BTCUSDT"].max_notional(125) == real.max_notional(125) < DEFAULT_TIER.cap
            em.faults.http_error(503, count=1, path="/fapi/v1/leverageBracket")
            with structlog.testing.capture_logs() as logs:
                await live._refresh_brackets_quietly()
            assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["leverage_brackets_refresh_failed"]
            assert live.brackets["BTCUSDT"] == real
            assert await live.refresh_brackets() == 1
        finally:
            await live.executor.stop()
            await live.stop()
        em.faults.http_error(503, count=5, path="/fapi/v1/leverageBracket")
        with pytest.raises(TemporaryError, match="leverageBracket"):
            await stack().start()
    await pool.close()


async def test_paper_mode_with_keys_sizes_with_the_accounts_brackets(
        shared_data: Path, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Paper mode has no data folder in the Docker image (the default tier, 20× and 1 % maintenance without a
    cap); given keys, its start reads the account's brackets with signed reads only, and the risk manager and the
    simulated account both use them. Without an answer the paper start goes on with what it had."""
    async with emulator(shared_data) as em:
        settings = live_settings(em, tmp_path).model_copy(update={"mode": "paper"})
        real = account_brackets(em.config, ["BTCUSDT"])["BTCUSDT"]

        def stack() -> TradingStack:
            return TradingStack(settings, filters=account_filters(em.market), session=http, pool=None,
                                governor=WeightGovernor(2400, 0.1))

        paper = stack()
        assert paper.paper is not None and paper.live is None  # simulated fills, no user-data stream
        assert paper.brackets["BTCUSDT"].tiers == (DEFAULT_TIER,)
        await paper.start()
        try:
            assert paper.brackets["BTCUSDT"] == real and paper.risk.brackets["BTCUSDT"] == real
            assert paper.paper.account._symbol_brackets("BTCUSDT") == real  # margin and liquidation too
            assert em.account.order_log == []  # nothing was sent
        finally:
            await paper.executor.stop()
            await paper.stop()

        em.faults.http_error(503, count=5, path="/fapi/v1/leverageBracket")
        offline = stack()
        with structlog.testing.capture_logs() as logs:
            await offline.start()
        try:
            assert offline.brackets["BTCUSDT"].tiers == (DEFAULT_TIER,)
            assert "leverage_brackets_refresh_failed" in {e["event"] for e in logs}
        finally:
            await offline.executor.stop()
            await offline.stop()
