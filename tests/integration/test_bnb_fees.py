"""BNB Fee Discount on a live account: Binance charges each commission in BNB (``ORDER_TRADE_UPDATE`` ``N``/``n``)
and the USDT wallet does not move. The executor counts those fees in USDT at BNBUSDT's price, so the stored trade
carries the fee really paid (10 % under the taker rate), not a few ten-thousandths taken for USDT; without a
BNBUSDT price it estimates the fee at the taker rate (never zero). Real emulator (signed orders, the user-data
stream), real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.trading import ExitReason, Trade
from smc_quant.exchange.emulator.account import account_filters
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.executor import Executor
from tests.integration.trading_kit import Rig, check_trades, live_settings, signed, trading_rig

pytestmark = pytest.mark.integration
D = Decimal
TAKER = D("0.0005")  # the emulator's taker rate (EmulatorConfig.taker_fee)


@pytest.fixture
async def rig(shared_data: Path, pg_dsn: str) -> AsyncIterator[Rig]:
    async with trading_rig(shared_data, pg_dsn, symbols=("BTCUSDT", "BNBUSDT")) as r:
        yield r


async def round_trip(rig: Rig, ex: Executor) -> Trade:
    """Open BTCUSDT long at market and close it by hand; the trade as the executor booked it."""
    closed: asyncio.Queue[Trade] = asyncio.Queue()
    ex.add_trade_listener(closed.put_nowait)
    assert ex.submit(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=5.0, target_pct=8.0))
    await ex.idle()
    assert "BTCUSDT" in ex.book, ex.stats.skip_reasons
    await ex.close("BTCUSDT", ExitReason.MANUAL)
    return await asyncio.wait_for(closed.get(), 10)


async def test_commissions_charged_in_bnb_are_counted_in_usdt_at_bnbusdt(rig: Rig) -> None:
    rig.account.bnb_balance = D(5)
    ex = await rig.executor()
    broker = rig.brokers[0]
    assert await broker.fee_burn() is False
    assert await signed(rig.session, rig.emulator, "POST", "/fapi/v1/feeBurn", [("feeBurn", "true")]) == (
        200, {"code": 200, "msg": "success"})
    assert await broker.fee_burn() is True
    wallet = rig.account.balance().wallet

    trade = await round_trip(rig, ex)
    fills = rig.account.fills
    assert len(fills) == 2
    bnb_spent = D(5) - rig.account.bnb_balance
    assert bnb_spent > 0  # charged in BNB …
    assert rig.account.balance().wallet == wallet + sum(f.realized_pnl for f in fills)  # … not in USDT
    # the trade's fees are the BNB commissions priced at BNBUSDT: exactly the exchange's, 10 % under the taker rate
    assert trade.fees == bnb_spent * ex.marks["BNBUSDT"]
    check_trades(await rig.repo.trades(), fills)
    full = sum((f.quantity * f.price * TAKER for f in fills), D(0))
    assert full * D("0.9") <= trade.fees <= full * D("0.9") + D("2e-8") * ex.marks["BNBUSDT"]  # 8-place rounding
    assert ex.stats.fee_sources == {"converted": 2}
    assert ex.stats.metrics()["executor_fees_converted"] == 2.0

    # no BNBUSDT price in the executor: the fee is estimated at the taker rate, with a warning
    await rig.minutes(1)  # a new minute, a new signal
    del ex.marks["BNBUSDT"]
    with structlog.testing.capture_logs() as logs:
        again = await round_trip(rig, ex)
    entry, exit_ = rig.account.fills[2:]
    assert again.fees == sum((f.quantity * f.price * TAKER for f in (entry, exit_)), D(0))
    assert [e["event"] for e in logs if e["event"].startswith("fee_")] == ["fee_estimated", "fee_estimated"]
    assert ex.stats.fee_sources == {"converted": 2, "estimated": 2}


async def test_a_live_start_reads_the_accounts_fees(shared_data: Path, pg_dsn: str, tmp_path: Path) -> None:
    """At start the stack reads ``GET /fapi/v1/feeBurn`` and logs ``fees_in_bnb`` when it is on, naming what
    prices those fees (BNBUSDT, when the universe watches it), and ``GET /fapi/v1/commissionRate``: the account's
    taker rate (0.04 % here, a VIP tier) replaces the 0.05 % setting for the fees the exchange does not report, with
    a warning that they differ. A failed read of either is logged and the start goes on with the setting."""
    async with trading_rig(shared_data, pg_dsn, symbols=("BTCUSDT", "BNBUSDT"), taker_fee=D("0.0004")) as rig:
        em = rig.emulator

        def stack(filters: dict[str, Any]) -> TradingStack:
            return TradingStack(live_settings(em, tmp_path), filters=filters, session=rig.session, pool=None,
                                governor=WeightGovernor(2400, 0.1), brackets_file=rig.data_dir / LEVERAGE_TIERS)

        assert (await signed(rig.session, em, "POST", "/fapi/v1/feeBurn", [("feeBurn", "true")]))[0] == 200
        every = account_filters(em.market)
        for filters, priced in ((every, "BNBUSDT"), ({"BTCUSDT": every["BTCUSDT"]}, None)):
            started = stack(filters)
            assert started.executor.config.taker_fee == D("0.0005")  # SMC_TRADING__TAKER_FEE_PCT
            with structlog.testing.capture_logs() as logs:
                await started.check_account()
            [said] = [e for e in logs if e["event"] == "fees_in_bnb"]
            assert said["priced_by"] == priced and said["log_level"] == ("info" if priced else "warning")
            [rate] = [e for e in logs if e["event"] == "commission_rate"]
            assert (rate["symbol"], rate["taker_pct"], rate["setting_pct"], rate["log_level"]) == (
                "BTCUSDT", 0.04, 0.05, "warning")
            ex = started.executor
            assert ex.config.taker_fee == ex.reconciler.config.taker_fee == D("0.0004")

        status, body = await signed(rig.session, em, "POST", "/fapi/v1/feeBurn", [("feeBurn", "maybe")])
        assert (status, body["code"]) == (400, -1130)
        status, body = await signed(rig.session, em, "GET", "/fapi/v1/commissionRate", [("symbol", "NOPEUSDT")])
        assert (status, body["code"]) == (400, -1121)
        # an exchange that cannot say (503 on those routes) does not hold the start up
        for path in ("/fapi/v1/feeBurn", "/fapi/v1/commissionRate"):
            em.faults.http_error(503, count=1_000, path=path)
            started = stack(every)
            with structlog.testing.capture_logs() as logs:
                await started.check_account()
            assert any(e["event"] == "leverage_brackets_loaded" for e in logs)  # the start went on
            unknown = "fee_burn_unknown" if path.endswith("feeBurn") else "commission_rate_unknown"
            assert unknown in {e["event"] for e in logs}
        assert started.executor.config.taker_fee == D("0.0005")  # no rate read: the setting stays
