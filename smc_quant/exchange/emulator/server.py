"""The :class:`Emulator`: REST, WebSocket routes and the admin endpoint on one aiohttp port."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from smc_quant.domain.candles import MINUTE_MS, Candle
from smc_quant.exchange.emulator.account import TradingAccount, build_account
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.faults import Faults
from smc_quant.exchange.emulator.hub import Hub
from smc_quant.exchange.emulator.market import Market
from smc_quant.exchange.emulator.replay import Replay
from smc_quant.exchange.emulator.rest import RestApi, json_response
from smc_quant.exchange.emulator.trading import TradingApi
from smc_quant.exchange.emulator.userdata import UserData
from smc_quant.exchange.emulator.ws import StreamServer
from smc_quant.exchange.exchange_info import parse_filters
from smc_quant.logging import get_logger
from smc_quant.tasks import cancel_and_wait


class Emulator:
    """A Binance USDT-M exchange on loopback replaying real candles; see ``docs/emulator.md``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.market = Market(config)
        self._hub = Hub(config)
        self._replay = Replay(config, self.market, self._hub)
        self._rest = RestApi(config, self.market, self._replay, self._hub.faults)
        self._streams = StreamServer(config, self._hub)
        self._user = UserData(config)
        self._trading = TradingApi(config, self.market, self._replay, self._rest, self._hub.faults,
                                   build_account(config, self.market), self._user)
        self._hub.faults.listen_key_expirer = lambda key: self._user.expire(key)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._port = 0
        self._host = "127.0.0.1"
        self._log = get_logger(component="emulator")

    # -- lifecycle -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application (REST, WebSocket routes, admin)."""
        app = web.Application()
        app.add_routes(self._rest.routes())
        app.add_routes(self._streams.routes())
        app.add_routes(self._trading.routes())
        app.add_routes(self._user.routes())
        app.add_routes(
            [
                web.post("/_emulator/faults", self._admin_faults),
                web.get("/_emulator/state", self._admin_state),
                web.get("/_emulator/account", self._admin_account),
            ]
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 = any free port) and start the replay."""
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._host = host
        self._port = int(self._runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self._replay.run(), name="emulator-replay"),
            asyncio.create_task(self._hub.ping_forever(), name="emulator-ping"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        self._log.info(
            "emulator_started",
            rest=self.rest_url,
            symbols=len(self.symbols),
            start_ms=self.start_ms,
            minutes=self.market.n_minutes,
            speed=self.config.speed,
        )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error("emulator_task_failed", task=task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        """Stop the replay, drop every connection and close the port."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        self._trading.release()
        await self._user.shutdown()
        await self._hub.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- addresses -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def rest_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def ws_legacy_base(self) -> str:
        return f"ws://{self._host}:{self._port}"

    @property
    def ws_market_base(self) -> str:
        return f"{self.ws_legacy_base}/market"

    @property
    def ws_public_base(self) -> str:
        return f"{self.ws_legacy_base}/public"

    @property
    def ws_private_base(self) -> str:
        """User-data WebSocket base: ``+ "/ws?listenKey=<k>"`` (query form) or ``+ "/ws/<k>"`` (path form)."""
        return f"{self.ws_legacy_base}/private"

    def set_filter(self, symbol: str, filter_type: str, **values: str) -> None:
        """Binance changes one of ``symbol``'s filters: exchangeInfo serves the new values and orders are checked
        against them from now on (an order with the old tick or step is refused, as on the exchange)."""
        filters = parse_filters(self.market.set_filter(symbol, filter_type, **values))
        if filters is None:
            raise ValueError(f"{symbol}: {filter_type} {values} does not parse")
        self._trading.account.set_filters({symbol: filters})

    # -- replay ----------------------------------------------------------------------------------
    @property
    def symbols(self) -> tuple[str, ...]:
        return self.market.symbols

    @property
    def start_ms(self) -> int:
        """Open time of the first replayed minute."""
        return self.market.start_ms

    @property
    def now_ms(self) -> int:
        return self._replay.now_ms()

    @property
    def minutes_replayed(self) -> int:
        return self._replay.minutes_replayed

    @property
    def replay_done(self) -> asyncio.Event:
        return self._replay.done

    async def wait_minutes(self, n: int) -> None:
        """Wait until ``n`` minutes are fully replayed (their final frames written)."""
        await self._replay.wait_minutes(n)

    def pause(self) -> None:
        self._replay.pause()

    def resume(self) -> None:
        self._replay.resume()

    def candles(self, symbol: str) -> list[Candle]:
        """The closed candles served so far for ``symbol`` (derived fields included)."""
        out = (
            self.market.candle(symbol, self.market.start_ms + m * MINUTE_MS)
            for m in range(self._replay.minutes_replayed)
        )
        return [c for c in out if c is not None]

    # -- trading -------------------------------------------------------------------------------
    @property
    def account(self) -> TradingAccount:
        """The simulated account the signed endpoints trade on (``smc_quant.sim.account.SimAccount``)."""
        return self._trading.account

    @property
    def trading(self) -> TradingApi:
        """The signed REST side (order counters, snapshot)."""
        return self._trading

    @property
    def user_data(self) -> UserData:
        """listenKeys and the ``/private`` streams."""
        return self._user

    def account_snapshot(self) -> dict[str, Any]:
        """What ``GET /_emulator/account`` returns: positions, balance, open orders/algos, order log, fills."""
        return self._trading.snapshot()

    async def _admin_account(self, request: web.Request) -> web.Response:
        return json_response(self.account_snapshot())

    # -- faults and stats ------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self._hub.faults

    @property
    def stats(self) -> dict[str, int]:
        s = self._hub.stats
        return {
            "frames_sent": s["frames_sent"],
            "bytes_sent": s["bytes_sent"],
            "frames_stalled": s["frames_stalled"],
            "slow_client_drops": s["slow_client_drops"],
            "connections_open": len(self._hub.conns),
            "connections_total": s["connections_total"],
            "subscriptions": self._hub.subscriptions,
            "rest_requests": self._rest.requests,
            "klines_requests": self._rest.klines_requests,
            "weight_used": self._rest.limiter.total_used,
        }

    def state(self) -> dict[str, Any]:
        """Everything ``GET /_emulator/state`` reports."""
        return {
            "now_ms": self.now_ms,
            "start_ms": self.market.start_ms,
            "minutes_replayed": self.minutes_replayed,
            "minutes_total": self.market.n_minutes,
            "done": self.replay_done.is_set(),
            "symbols": len(self.symbols),
            "stats": self.stats,
            "faults": self.faults.state(),
            "user_data": {"connections_open": len(self._user.conns), **dict(self._user.stats)},
            "orders": {"count_10s": self._trading.orders.count_10s, "count_1m": self._trading.orders.count_1m,
                       "rejected_1015": self._trading.orders.rejected},
        }

    async def _admin_state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            commands = body if isinstance(body, list) else [body]
            results = [self._admin_command(c) for c in commands]
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response({"results": results, "state": self.state()})

    def _admin_command(self, command: dict[str, Any]) -> Any:
        action = command.get("action")
        if action in ("pause", "resume"):
            getattr(self, action)()
            return None
        return self.faults.apply(command)
