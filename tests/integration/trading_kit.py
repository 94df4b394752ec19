"""A trading rig for end-to-end tests: the emulator (real 2023 candles) on loopback, the signed LiveBroker
with its user-data stream, RiskManager, SmartOrderManager, TradingRepository on PostgreSQL and the Executor.

The executor's clock is the emulator's replay clock (the market's time), so a 2-hour limit passes in
seconds at high replay speed. Marks come from the emulator's price path at every replay step (standing in
for the kline feed, which has its own tests). Signals are built by hand from real candles: these tests are
about what the executor does with a signal, the strategy has its own tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yarl

from smc_quant.correlation import ReturnSource
from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.trading import PositionSide, Signal, Trade
from smc_quant.exchange.brackets import load_brackets
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.emulator.account import account_filters
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.trade_client import LiveBroker
from smc_quant.executor import Executor, ExecutorConfig
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.funding import FundingQuote
from smc_quant.order_manager import OrderConfig, SmartOrderManager
from smc_quant.orders.limiter import OrderLimiter
from smc_quant.orders.signing import RequestSigner
from smc_quant.risk import RiskConfig, RiskManager
from smc_quant.settings import Settings, load_settings
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.trading import TradingRepository

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
FEATURES = tuple(float(i) / 10 for i in range(len(FEATURE_SCHEMA)))


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Rig:
    """Everything one end-to-end test touches."""

    emulator: Emulator
    pool: asyncpg.Pool
    repo: TradingRepository
    session: aiohttp.ClientSession
    data_dir: Path
    executors: list[Executor] = field(default_factory=list)
    brokers: list[LiveBroker] = field(default_factory=list)

    @property
    def account(self) -> Any:
        return self.emulator.account

    def clock(self) -> int:
        return self.emulator.now_ms

    def price(self, symbol: str) -> Decimal:
        price = self.account.last_price(symbol)
        assert price is not None, f"no price yet for {symbol}"
        return Decimal(price)

    async def executor(self, returns: ReturnSource | None = None,
                       funding: Callable[[str], FundingQuote | None] | None = None,
                       orders: dict[str, Any] | None = None, notifier: Any = None,
                       clock: Callable[[], int] | None = None, day_funding: bool = False,
                       **config: Any) -> Executor:
        """A fresh executor (new broker session, new manager) over the same database and exchange; ``returns``
        is the correlation guard's source and ``funding`` the funding guard's (default: none, no guard);
        ``orders`` overrides the order manager's settings (``OrderConfig``); ``notifier`` gets its messages;
        ``clock`` stands in for the replay clock; ``day_funding``: the daily summary tells the exchange's funding
        (as the live service does)."""
        em = self.emulator
        signer = RequestSigner(em.config.api_key, em.config.api_secret, wall_ms, recv_window_ms=5000)
        limiter = OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event)
        broker = LiveBroker(self.session, em.rest_url, signer, governor=WeightGovernor(2400, 0.1), limiter=limiter,
                            timeout_s=1.0, time_refresh_s=0.02, ws_base_url=em.ws_legacy_base)
        await broker.start()
        self.brokers.append(broker)
        for symbol in em.symbols:  # a symbol's first signed request activates its pricing in the emulator
            await broker.open_orders(symbol)
        filters = account_filters(em.market)
        brackets = load_brackets(self.data_dir / LEVERAGE_TIERS)
        risk = RiskManager(RiskConfig(max_entry_drift=Decimal(100)), filters, brackets)
        order_config = OrderConfig(**{"exit_retry_base_s": 0.05, "fill_poll_s": 0.05, **(orders or {})})
        manager = SmartOrderManager(broker, filters, config=order_config, journal=self.repo,
                                     clock=clock or self.clock)
        options = {"exit_check_interval_s": 0.05, "reconcile_interval_s": 3600.0, **config}
        ex = Executor(broker=broker, manager=manager, risk=risk, repo=self.repo, clock=clock or self.clock,
                      config=ExecutorConfig(**options), returns=returns, funding=funding, notifier=notifier,
                      day_funding=broker.funding_between if day_funding else None)
        for symbol in em.symbols:
            price = em.account.last_price(symbol)
            if price is not None:
                ex.on_price(symbol, Decimal(price))
        await ex.start()
        self.executors.append(ex)
        return ex

    def feed_marks(self) -> None:
        """Every replay step: the executors' marks follow the emulator's price path."""

        def on_step(_step: Any) -> None:
            for symbol in self.emulator.symbols:
                price = self.emulator.account.last_price(symbol)
                if price is not None:
                    for ex in self.executors:
                        ex.on_price(symbol, Decimal(price))

        self.emulator._replay.step_listeners.append(on_step)

    async def kill(self, executor: Executor) -> None:
        """Stop an executor abruptly (no exit, no flatten): tasks cancelled, stream closed."""
        await executor.stop()
        idx = self.executors.index(executor)
        self.executors.pop(idx)
        broker = self.brokers.pop(idx)
        await broker.close()

    async def minutes(self, n: int) -> None:
        """Let the replay run exactly ``n`` more minutes, then pause it (prices stand still in between)."""
        target = self.emulator.minutes_replayed + n
        self.emulator.resume()
        await self.emulator.wait_minutes(target)
        self.emulator.pause()

    def signal(self, symbol: str, side: PositionSide, *, confidence: float, stop_pct: float,
               target_pct: float) -> Signal:
        """A signal at the last closed minute, priced at the current price."""
        open_time = self.emulator.start_ms + (self.emulator.minutes_replayed - 1) * MINUTE_MS
        return Signal(signal_id=f"{symbol}:{side}:{open_time}", symbol=symbol, side=side, open_time=open_time,
                      price=self.price(symbol), confidence=confidence, stop_pct=stop_pct, target_pct=target_pct,
                      setup=f"e2e@{open_time}", features=FEATURES, schema_version=FEATURE_SCHEMA.version,
                      created_ms=self.clock())

    def future(self, symbol: str, minutes: int) -> list[tuple[float, float, float]]:
        """(high, low, close) of the next ``minutes`` real candles after the last replayed one."""
        market, out = self.emulator.market, []
        first = self.emulator.start_ms + self.emulator.minutes_replayed * MINUTE_MS
        for m in range(minutes):
            c = market.candle(symbol, first + m * MINUTE_MS)
            assert c is not None
            out.append((c.high, c.low, c.close))
        return out


def our_orders(rig: Rig) -> list[str]:
    """Client ids of our orders and algo orders the exchange accepted so far, in order."""
    return [cid for cid in rig.account.order_log if cid.startswith("smc-")]


class Told:
    """Stands in for the notifier: what the executor tells people, ``(kind, text)`` in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def notify(self, text: str, kind: str) -> None:
        self.sent.append((kind, text))


def live_settings(em: Emulator, state_dir: Path, **more: Any) -> Settings:
    """Signed trading against ``em`` on its clock (replay mode with the emulator's keys), funding stream off."""
    return load_settings(state_dir=state_dir, mode="replay", binance_api_key=em.config.api_key,
                         binance_api_secret=em.config.api_secret, trading={"funding_stream": False},
                         venue={"rest_base": em.rest_url, "ws_market_base": em.ws_market_base,
                                "ws_private_base": em.ws_private_base, "ws_public_base": em.ws_public_base},
                         **more)


async def signed(http: aiohttp.ClientSession, em: Emulator, method: str, path: str,
                 params: list[tuple[str, str | int]]) -> tuple[int, Any]:
    """One signed request as an operator's tool would send it (the account-wide switches are not ours to make),
    timestamped on the emulator's clock."""
    async with http.get(f"{em.rest_url}/fapi/v1/time") as resp:
        server_ms = (await resp.json())["serverTime"]
    signer = RequestSigner(em.config.api_key, em.config.api_secret, lambda: server_ms)
    req = signer.sign(body=params, offset_ms=0) if method == "POST" else signer.sign(query=params, offset_ms=0)
    url = yarl.URL(f"{em.rest_url}{path}?{req.query}" if req.query else f"{em.rest_url}{path}", encoded=True)
    async with http.request(method, url, data=req.body.encode() if req.body else None, headers=req.headers) as resp:
        return resp.status, await resp.json()


def recomputed_pnl(fills: Iterable[Any], digest_of: dict[str, str]) -> dict[str, tuple[Decimal, Decimal]]:
    """Per signal id: (gross PnL, fees) recomputed from the exchange's own fills (not ours)."""
    from smc_quant.orders.client_ids import parse_client_order_id

    out: dict[str, tuple[Decimal, Decimal]] = {}
    for f in fills:
        parts = parse_client_order_id(f.client_order_id)
        if parts is None or parts.digest not in digest_of:
            continue
        sid = digest_of[parts.digest]
        gross, fees = out.get(sid, (Decimal(0), Decimal(0)))
        cash = f.quantity * f.price * (1 if f.side == "SELL" else -1)
        out[sid] = (gross + cash, fees + f.fee)
    return out


def check_trades(trades: Iterable[Trade], fills: Iterable[Any]) -> None:
    """Every stored trade's PnL equals the recomputation from the exchange's fills and fees."""
    from smc_quant.orders.client_ids import signal_digest

    trades = list(trades)
    digests = {signal_digest(t.signal_id): t.signal_id for t in trades}
    recomputed = recomputed_pnl(fills, digests)
    for t in trades:
        gross, fees = recomputed[t.signal_id]
        assert t.gross_pnl == gross, (t.signal_id, t.gross_pnl, gross)
        assert t.fees == fees, (t.signal_id, t.fees, fees)
        assert t.net_pnl == gross - fees


@asynccontextmanager
async def trading_rig(data_dir: Path, dsn: str, *, speed: float = 240.0, warm_minutes: int = 3,
                      symbols: tuple[str, ...] = SYMBOLS, **emulator: Any) -> AsyncIterator[Rig]:
    """Emulator paused after ``warm_minutes`` replayed minutes (more ``EmulatorConfig`` options in ``emulator``),
    a migrated database, one HTTP session."""
    await apply_migrations(dsn)
    pool = await create_pool(dsn, max_size=6)
    em = Emulator(EmulatorConfig(data_dir=data_dir, symbols=symbols, speed=speed, start_paused=True, **emulator))
    await em.start()
    session = aiohttp.ClientSession()
    rig = Rig(em, pool, TradingRepository(pool), session, data_dir)
    rig.feed_marks()
    try:
        await rig.minutes(warm_minutes)
        yield rig
    finally:
        for ex in rig.executors:
            await ex.stop()
        for broker in rig.brokers:
            await broker.close()
        await session.close()
        await em.stop()
        await pool.close()
