"""Signed REST routes: orders, algo orders, leverage, positions, balances, listenKeys — over a simulated account.

Matching is ``smc_quant.sim.account.SimAccount`` (pure, Decimal), built in ``account.py``; this is its Binance face:
request parsing (``params.py``), the security checks (API key, signature, timestamp, recvWindow: ``security.py``),
the account's order-count limits, the order faults, Binance JSON out (``wire.py``) and the account events out to
the ``/private`` streams (``userdata.py``, which also answers the listenKey routes mounted here).

Limits: IP weight through the market side's limiter (orders 0, queries 1, openOrders 1/40, account reads 5, income
30); new orders and algo orders also count on the account's fixed wall-clock windows of 10 s and 1 min
(``X-MBX-ORDER-COUNT-10S``/``-1M`` on every placement response), over either → 429 -1015.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from aiohttp import web

from smc_quant.domain.trading import ZERO
from smc_quant.errors import VenueRejected
from smc_quant.exchange.emulator.account import TradingAccount, account_brackets
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.faults import Faults
from smc_quant.exchange.emulator.market import Market
from smc_quant.exchange.emulator.modes import AccountModes
from smc_quant.exchange.emulator.params import ApiError, OrderCounter, Params, mandatory
from smc_quant.exchange.emulator.replay import Replay
from smc_quant.exchange.emulator.rest import RestApi, json_response
from smc_quant.exchange.emulator.security import Gate
from smc_quant.exchange.emulator.steps import Step
from smc_quant.exchange.emulator.userdata import UserData
from smc_quant.exchange.emulator.wire import (
    account_json,
    algo_json,
    balance_json,
    brackets_json,
    event_json,
    income_json,
    order_json,
    position_json,
    trade_json,
)
from smc_quant.funding import next_funding_ms
from smc_quant.orders.broker import (
    AccountEvent,
    AccountUpdate,
    AlgoState,
    AlgoUpdate,
    ExchangePosition,
    OrderState,
    OrderUpdate,
)
from smc_quant.sim.income import FUNDING_FEE
from smc_quant.sim.rejections import SimRejected
from smc_quant.tasks import within

__all__ = ["TradingApi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Json = dict[str, Any]
UNKNOWN_503 = "Unknown error, please check your request or try again later."
WEEK_MS = 7 * 86_400_000
ALGO_ONLY = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})


@dataclass(frozen=True, slots=True)
class _OrderExtra:
    """What an order request said that ``OrderState`` does not carry."""

    price: Decimal | None
    time_in_force: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class _AlgoExtra:
    quantity: Decimal | None
    close_position: bool
    reduce_only: bool
    working_type: str
    created_ms: int


class TradingApi:
    """The signed endpoints of ``/fapi`` over one :class:`TradingAccount`, and the account's price feed."""

    def __init__(self, config: EmulatorConfig, market: Market, replay: Replay, rest: RestApi, faults: Faults,
                 account: TradingAccount, userdata: UserData) -> None:
        self._config = config
        self._market = market
        self._replay = replay
        self._rest = rest
        self._faults = faults
        self.account = account
        self._user = userdata
        self._gate = Gate(config.api_key, config.api_secret, config.recv_window_max_ms, replay.now_ms)
        self.orders = OrderCounter(config.order_limit_10s, config.order_limit_1m, config.clock)
        self._brackets = account_brackets(config, market.symbols)
        self._order_extra: dict[int, _OrderExtra] = {}
        """By order id (a client id may be reused once its order is closed)."""
        self._algo_extra: dict[int, _AlgoExtra] = {}
        self._margin_type: dict[str, str] = {}
        self._released = asyncio.Event()
        self._next_id = 0
        self._latest: dict[str, tuple[float, int]] = {}
        self._active: set[str] = set()
        self._funding_every = config.funding_interval_h * 3_600_000
        self._last_step_ms: int | None = None
        self.funding_settled = 0
        """Funding payments charged to positions (one per position and funding time)."""
        self.modes = AccountModes(account, self._publish, self._now, rates=(config.maker_fee, config.taker_fee),
                                  symbols=market.symbols)
        """Position Mode and Asset Mode (One-way, Single-Asset at start)."""
        userdata.render = self.render_event
        replay.step_listeners.append(self.on_step)
        self._seed_prices()

    # -- prices ----------------------------------------------------------------------------------
    def _seed_prices(self) -> None:
        """Before the first step the clients see the first minute opening: that open is each series' price."""
        m = self._market
        for src in m.series:
            i = m.index(src, m.start_ms)
            if i is not None:
                self._latest[src] = (m.bar(src, i).open, m.start_ms)

    def on_step(self, step: Step) -> None:
        """Replay listener: the current close of every series; the account gets it for its active symbols.

        A symbol becomes active on its first signed request (``_touch``), which first hands the account
        the symbol's current price; from then on every step prices it (fills, triggers, liquidation, PnL).
        An idle symbol's price changes nothing in the account, so skipping it is equivalent and keeps the
        step cheap with 347 symbols (one ``Decimal`` per active symbol instead of 347 calls).
        """
        u, event_ms = step.update, step.event_ms
        if self._user.keys.expiry:
            self._user.expire_due()
        for src, path in step.minute.paths.items():
            self._latest[src] = (path[u].close, event_ms)
        if not self._active:
            return
        source_of = self._market.source_of
        cache: dict[str, Decimal] = {}
        events: list[AccountEvent] = []
        for sym in self._active:
            src = source_of[sym]
            if src not in step.minute.paths:
                continue
            price = cache.get(src)
            if price is None:
                price = cache[src] = Decimal(repr(self._latest[src][0]))
            events += self.account.on_price(sym, price, event_ms)
        events += self._funding(event_ms)
        if events:
            self._user.publish(events)

    def _funding(self, event_ms: int) -> list[AccountEvent]:
        """The step that reaches a funding time (a multiple of ``funding_interval_h``; the final step of the
        minute ending there) charges every active position its symbol's rate at the latest price, as the stream
        (``!markPrice@arr``) quoted it; Binance then pushes ``ACCOUNT_UPDATE`` with reason ``FUNDING_FEE``."""
        last, self._last_step_ms = self._last_step_ms, event_ms
        if last is None or (at := next_funding_ms(last, self._funding_every)) > event_ms:
            return []
        events: list[AccountEvent] = []
        for sym in sorted(self._active):
            _, charged = self.account.settle_funding(sym, self._config.funding_rate_of(sym), at)
            self.funding_settled += bool(charged)
            events += charged
        return events

    def _touch(self, symbol: str) -> None:
        """Make ``symbol`` active: price it now at the series' latest step, then at every step."""
        if symbol in self._active:
            return
        self._active.add(symbol)
        latest = self._latest.get(self._market.source_of[symbol])
        if latest is not None:
            self._publish(self.account.on_price(symbol, Decimal(repr(latest[0])), latest[1]))

    # -- events ----------------------------------------------------------------------------------
    def render_event(self, event: AccountEvent) -> Json:
        """Binance JSON of ``event`` with what the request said (order price/TIF, algo size, margin type)."""
        if isinstance(event, OrderUpdate):
            extra = self._order_extra.get(event.order_id)
            return event_json(event, price=extra.price if extra else None,
                              time_in_force=extra.time_in_force if extra else "GTC")
        if isinstance(event, AlgoUpdate):
            algo = self._algo_extra.get(event.algo_id)
            if algo is None:
                return event_json(event)
            return event_json(event, quantity=algo.quantity, close_position=algo.close_position,
                              reduce_only=algo.reduce_only)
        if isinstance(event, AccountUpdate):
            symbol = next((p.symbol if isinstance(p, ExchangePosition) else p[0] for p in event.positions), "")
            return event_json(event, margin_type=self._margin_type.get(symbol, "CROSSED"))
        return event_json(event)

    def _publish(self, events: list[AccountEvent]) -> None:
        if events:
            self._user.publish(events)

    # -- routing and security --------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        one: Callable[[web.Request], int] = lambda r: 1  # noqa: E731
        five: Callable[[web.Request], int] = lambda r: 5  # noqa: E731
        zero: Callable[[web.Request], int] = lambda r: 0  # noqa: E731
        thirty: Callable[[web.Request], int] = lambda r: 30  # noqa: E731
        open_weight: Callable[[web.Request], int] = lambda r: 1 if r.query.get("symbol") else 40  # noqa: E731
        s = self._signed
        return [
            web.post("/fapi/v1/order", s(self.new_order, zero)),
            web.get("/fapi/v1/order", s(self.get_order, one)),
            web.delete("/fapi/v1/order", s(self.cancel_order, one)),
            web.get("/fapi/v1/openOrders", s(self.open_orders, open_weight)),
            web.delete("/fapi/v1/allOpenOrders", s(self.cancel_all, one)),
            web.post("/fapi/v1/algoOrder", s(self.new_algo, zero)),
            web.get("/fapi/v1/algoOrder", s(self.get_algo, one)),
            web.delete("/fapi/v1/algoOrder", s(self.cancel_algo, one)),
            web.get("/fapi/v1/openAlgoOrders", s(self.open_algos, open_weight)),
            web.post("/fapi/v1/leverage", s(self.leverage, one)),
            web.post("/fapi/v1/marginType", s(self.margin_type, one)),
            web.get("/fapi/v2/positionRisk", s(self.position_risk_v2, five)),
            web.get("/fapi/v3/positionRisk", s(self.position_risk_v3, five)),
            web.get("/fapi/v2/balance", s(self.balance, five)),
            web.get("/fapi/v3/balance", s(self.balance, five)),
            web.get("/fapi/v2/account", s(self.account_info, five)),
            web.get("/fapi/v3/account", s(self.account_info, five)),
            web.get("/fapi/v1/leverageBracket", s(self.leverage_bracket, one)),
            web.get("/fapi/v1/userTrades", s(self.user_trades, five)),
            web.get("/fapi/v1/income", s(self.income, thirty)),
            *self.modes.routes(s),
            web.post("/fapi/v1/listenKey", s(self._user.listen_key_new, one, signed=False)),
            web.put("/fapi/v1/listenKey", s(self._user.listen_key_keepalive, one, signed=False)),
            web.delete("/fapi/v1/listenKey", s(self._user.listen_key_delete, one, signed=False)),
        ]

    def _signed(self, handler: Callable[[Params], Awaitable[web.Response]], weight: Callable[[web.Request], int],
                *, signed: bool = True) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            try:
                body = (await request.read()).decode("utf-8", errors="replace") if request.can_read_body else ""
                params = self._gate.admit(request.headers.get("X-MBX-APIKEY"), request.rel_url.raw_query_string,
                                          body, signed=signed)
                return await handler(params)
            except ApiError as err:
                return err.response()

        return self._rest._weighted(checked, weight)

    def _now(self) -> int:
        return self._replay.now_ms()

    def _symbol(self, params: Params, required: bool = True) -> str | None:
        raw = params.req("symbol") if required else params.opt("symbol")
        if raw is None:
            return None
        symbol = raw.upper()
        if symbol not in self._brackets:
            raise ApiError(-1121, "Invalid symbol.")
        self._touch(symbol)
        return symbol

    @staticmethod
    def _venue(exc: VenueRejected) -> ApiError:
        """The account's refusal as Binance says it: the code's message without the simulator's detail."""
        msg = exc.msg if isinstance(exc, SimRejected) else str(exc)
        return ApiError(exc.code if exc.code is not None else -1000, msg, exc.status or 400)

    def _new_client_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}{self._next_id:010d}"

    async def _hold(self, seconds: float) -> None:
        """Hold a response (``order_timeout``) until ``seconds`` pass or the emulator stops."""
        with contextlib.suppress(TimeoutError):
            await within(self._released.wait(), seconds)

    def release(self) -> None:
        """Let every held response go (the emulator is stopping)."""
        self._released.set()

    async def _place(self, execute: Callable[[], Json], placement: str) -> web.Response:
        """Order-count limit, order faults (for this kind of ``placement``), execution, then the (possibly held
        or replaced) answer."""
        self.orders.charge()
        headers = self.orders.headers()
        fault = self._faults.take_order_fault(placement)
        if fault is not None and fault[0] == "reject_503":
            return json_response({"code": -1001, "msg": "Service Unavailable."}, 503, headers)
        if fault is not None and fault[0] == "would_trigger":
            return json_response({"code": -2021, "msg": "Order would immediately trigger."}, 400, headers)
        if fault is not None and fault[0] == "reduce_only_conflict":
            return json_response({"code": -2022, "msg": "ReduceOnly Order is rejected."}, 400, headers)
        try:
            body = execute()
        except VenueRejected as exc:
            err = self._venue(exc)
            err.headers.update(headers)
            raise err from None
        if fault is not None and fault[0] == "unknown":
            return json_response({"code": -1000, "msg": UNKNOWN_503}, 503, headers)
        if fault is not None and fault[0] == "timeout":
            await self._hold(fault[1])
        return json_response(body, headers=headers)

    # -- orders ----------------------------------------------------------------------------------
    async def new_order(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        assert symbol is not None
        side = p.req("side").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        kind = p.req("type").upper()
        if kind in ALGO_ONLY:
            raise ApiError(-4120, "Order type not supported for this endpoint. "
                                  "Please use the Algo Order API endpoints instead.")
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(-1116, "Invalid orderType.")
        self.modes.check_order(p)
        quantity = p.decimal("quantity")
        assert quantity is not None
        price = p.decimal("price", required=kind == "LIMIT")
        tif = p.opt("timeInForce") or "GTC"
        if kind == "LIMIT" and p.opt("timeInForce") is None:
            raise mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
            raise ApiError(-1115, "Invalid timeInForce.")
        reduce_only = p.flag("reduceOnly")
        client_id = p.client_id("newClientOrderId") or self._new_client_id("emu")
        resp_type = (p.opt("newOrderRespType") or "ACK").upper()
        if resp_type not in ("ACK", "RESULT"):
            raise ApiError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")

        def execute() -> Json:
            now = self._now()
            state, events = self.account.new_order(
                symbol=symbol, side=side, type=kind, quantity=quantity, time_ms=now, client_order_id=client_id,
                price=price if kind == "LIMIT" else None, reduce_only=reduce_only, time_in_force=tif)
            self._order_extra[state.order_id] = _OrderExtra(price if kind == "LIMIT" else None, tif, now)
            self._publish(events)
            if resp_type == "ACK" and state.status not in ("REJECTED", "EXPIRED"):
                state = replace(state, status="NEW", executed_qty=ZERO, avg_price=ZERO)
            return self._order(state)

        return await self._place(execute, "reduce_only" if reduce_only else "order")

    def _order(self, state: OrderState) -> Json:
        extra = self._order_extra.get(state.order_id)
        if extra is None:
            return order_json(state)
        return order_json(state, price=extra.price, time_in_force=extra.time_in_force,
                          create_time_ms=extra.created_ms)

    def _order_ref(self, p: Params) -> tuple[str | None, int | None]:
        client_id = p.opt("origClientOrderId")
        order_id = p.integer("orderId")
        if client_id is None and order_id is None:
            raise ApiError(-1102, "Either orderId or origClientOrderId must be sent.")
        return client_id, order_id

    async def get_order(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        assert symbol is not None
        client_id, order_id = self._order_ref(p)
        try:
            state = self.account.query_order(symbol, client_order_id=client_id, order_id=order_id)
        except VenueRejected as exc:
            raise self._venue(exc) from None
        return json_response(self._order(state))

    async def cancel_order(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        assert symbol is not None
        client_id, order_id = self._order_ref(p)
        try:
            state, events = self.account.cancel_order(symbol, client_order_id=client_id, order_id=order_id,
                                                      time_ms=self._now())
        except VenueRejected as exc:
            raise self._venue(exc) from None
        self._publish(events)
        return json_response(self._order(state))

    async def open_orders(self, p: Params) -> web.Response:
        symbol = self._symbol(p, required=False)
        return json_response([self._order(o) for o in self.account.open_orders(symbol)])

    async def cancel_all(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        for order in self.account.open_orders(symbol):
            try:
                _, events = self.account.cancel_order(order.symbol, order_id=order.order_id, time_ms=self._now())
            except VenueRejected:
                continue
            self._publish(events)
        return json_response({"code": 200, "msg": "The operation of cancel all open order is done."})

    # -- algo orders -----------------------------------------------------------------------------
    async def new_algo(self, p: Params) -> web.Response:
        if p.req("algoType").upper() != "CONDITIONAL":
            raise ApiError(-1130, "Data sent for parameter 'algoType' is not valid.")
        symbol = self._symbol(p)
        assert symbol is not None
        side = p.req("side").upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        kind = p.req("type").upper()
        if kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"):
            raise ApiError(-1116, "Invalid orderType.")
        self.modes.check_order(p)
        trailing = kind == "TRAILING_STOP_MARKET"  # a person's (we never place one): activatePrice, callbackRate
        trigger = p.decimal("activatePrice", required=False) if trailing else p.decimal("triggerPrice")
        callback_rate = p.decimal("callbackRate") if trailing else None
        close_position = p.flag("closePosition")
        quantity = p.decimal("quantity", required=not close_position)
        if close_position and quantity is not None:
            raise ApiError(-1106, "Parameter 'quantity' sent when not required.")
        reduce_only = p.flag("reduceOnly")
        if close_position and reduce_only:
            raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        working = (p.opt("workingType") or "CONTRACT_PRICE").upper()
        if working not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise ApiError(-1130, "Data sent for parameter 'workingType' is not valid.")
        client_id = p.client_id("clientAlgoId") or self._new_client_id("emualgo")

        def execute() -> Json:
            now = self._now()
            state, events = self.account.new_algo(
                symbol=symbol, side=side, type=kind, trigger_price=trigger, time_ms=now, client_algo_id=client_id,
                quantity=quantity, close_position=close_position, reduce_only=reduce_only, working_type=working,
                callback_rate=callback_rate)
            self._algo_extra[state.algo_id] = _AlgoExtra(quantity, close_position, reduce_only, working, now)
            self._publish(events)
            return self._algo(state)

        return await self._place(execute, "algo")

    def _algo(self, state: AlgoState) -> Json:
        extra = self._algo_extra.get(state.algo_id)
        if extra is None:
            return algo_json(state)
        return algo_json(state, reduce_only=extra.reduce_only, working_type=extra.working_type,
                         create_time_ms=extra.created_ms)

    def _algo_ref(self, p: Params) -> tuple[str | None, int | None]:
        client_id = p.opt("clientAlgoId")
        algo_id = p.integer("algoId")
        if client_id is None and algo_id is None:
            raise ApiError(-1102, "Either algoId or clientAlgoId must be sent.")
        return client_id, algo_id

    async def get_algo(self, p: Params) -> web.Response:
        client_id, algo_id = self._algo_ref(p)
        try:
            state = self.account.query_algo(client_algo_id=client_id, algo_id=algo_id)
        except VenueRejected as exc:
            raise self._venue(exc) from None
        return json_response(self._algo(state))

    async def cancel_algo(self, p: Params) -> web.Response:
        client_id, algo_id = self._algo_ref(p)
        symbol = self._symbol(p, required=False)
        try:
            state, events = self.account.cancel_algo(symbol=symbol, client_algo_id=client_id, algo_id=algo_id,
                                                     time_ms=self._now())
        except VenueRejected as exc:
            raise self._venue(exc) from None
        self._publish(events)
        # Binance answers a cancel with the ids and a success code only (the state is read back with a query)
        return json_response({"algoId": state.algo_id, "clientAlgoId": state.client_algo_id, "code": "200",
                              "msg": "success"})

    async def open_algos(self, p: Params) -> web.Response:
        symbol = self._symbol(p, required=False)
        return json_response([self._algo(a) for a in self.account.open_algo_orders(symbol)])

    # -- account ---------------------------------------------------------------------------------
    async def leverage(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        assert symbol is not None
        lev = p.integer("leverage")
        if lev is None:
            raise mandatory("leverage")
        try:
            applied, max_notional = self.account.set_leverage(symbol, lev)
        except VenueRejected as exc:
            raise self._venue(exc) from None
        return json_response({"leverage": applied, "maxNotionalValue": format(max_notional, "f"), "symbol": symbol})

    async def margin_type(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        assert symbol is not None
        mt = p.req("marginType").upper()
        if mt == "CROSS":
            mt = "CROSSED"
        if mt not in ("ISOLATED", "CROSSED"):
            raise ApiError(-1130, "Data sent for parameter 'marginType' is not valid.")
        try:
            self.account.set_margin_type(symbol, mt)
        except VenueRejected as exc:
            raise self._venue(exc) from None
        self._margin_type[symbol] = mt
        return json_response({"code": 200, "msg": "success"})

    def _position_rows(self, symbol: str | None, version: int) -> list[Json]:
        """Positions, plus zero rows for symbols with only open orders (as v3 does, §3.4)."""
        hidden = self._faults.take_hidden_positions()
        positions = {p.symbol: p for p in self.account.positions()
                     if symbol in (None, p.symbol) and p.symbol not in hidden}
        with_orders = {o.symbol for o in self.account.open_orders(symbol)}
        if symbol is not None and version == 2:
            with_orders.add(symbol)
        now = self._now()
        rows = []
        for sym in sorted(set(positions) | with_orders):
            pos = positions.get(sym)
            lev = self.account.leverage(sym)
            if pos is None:
                mark = self.account.last_price(sym) or ZERO
                pos = ExchangePosition(sym, "LONG", ZERO, ZERO, mark_price=mark, leverage=lev, update_time_ms=0)
            elif pos.leverage == 0:
                pos = replace(pos, leverage=lev)
            rows.append(position_json(pos, version=version, margin_type=self._margin_type.get(sym, "CROSSED"),
                                      max_notional=self._brackets[sym].max_notional(lev),
                                      time_ms=pos.update_time_ms or now))
        return rows

    async def position_risk_v2(self, p: Params) -> web.Response:
        return json_response(self._position_rows(self._symbol(p, required=False), 2))

    async def position_risk_v3(self, p: Params) -> web.Response:
        return json_response(self._position_rows(self._symbol(p, required=False), 3))

    async def balance(self, p: Params) -> web.Response:
        return json_response(balance_json(self.account.balance(), time_ms=self._now()))

    async def account_info(self, p: Params) -> web.Response:
        return json_response(account_json(self.account.balance(), self.account.positions(), time_ms=self._now()))

    async def leverage_bracket(self, p: Params) -> web.Response:
        symbol = self._symbol(p, required=False)
        if symbol is not None:
            return json_response(brackets_json(self._brackets[symbol]))
        return json_response([brackets_json(b) for b in self._brackets.values()])

    async def user_trades(self, p: Params) -> web.Response:
        symbol = self._symbol(p)
        limit = p.integer("limit", 500)
        assert limit is not None
        if not 1 <= limit <= 1000:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end, from_id = p.integer("startTime"), p.integer("endTime"), p.integer("fromId")
        fills = [
            f for f in self.account.fills
            if f.symbol == symbol and f.time_ms > self._faults.trades_forgotten_until_ms
            and (start is None or f.time_ms >= start)
            and (end is None or f.time_ms <= end)
            and (from_id is None or f.trade_id >= from_id)
        ]
        chosen = fills[:limit] if from_id is not None else fills[-limit:]
        return json_response([trade_json(f) for f in chosen])

    async def income(self, p: Params) -> web.Response:
        """FUNDING_FEE rows only (the one income type the account books; any other ``incomeType`` → []), both
        bounds inclusive, neither sent → the 7 days up to the replay clock; oldest first, ``limit`` (default 100,
        1..1000) rows of page ``page`` (from 1)."""
        symbol = self._symbol(p, required=False)
        limit, page = p.integer("limit", 100), p.integer("page", 1)
        assert limit is not None and page is not None
        for name, ok in (("limit", 1 <= limit <= 1000), ("page", page >= 1)):
            if not ok:
                raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
        start, end = p.integer("startTime"), p.integer("endTime")
        if start is None and end is None:
            end = self._now()
            start = end - WEEK_MS
        if (p.opt("incomeType") or FUNDING_FEE).upper() != FUNDING_FEE:
            return json_response([])
        rows = self.account.funding_income(symbol, start_ms=start, end_ms=end, limit=page * limit)
        return json_response([income_json(r) for r in rows[(page - 1) * limit:]])

    # -- snapshot --------------------------------------------------------------------------------
    def snapshot(self) -> Json:
        """Everything ``GET /_emulator/account`` shows: positions, balance, open orders/algos, order log, fills."""
        now = self._now()
        return {
            "now_ms": now,
            "positions": self._position_rows(None, 2),
            "balance": balance_json(self.account.balance(), time_ms=now)[0],
            "open_orders": [self._order(o) for o in self.account.open_orders()],
            "open_algo_orders": [self._algo(a) for a in self.account.open_algo_orders()],
            "order_log": list(self.account.order_log),
            "fills": [trade_json(f) for f in self.account.fills],
            "order_count": {"10s": self.orders.count_10s, "1m": self.orders.count_1m,
                            "rejected": self.orders.rejected},
        }
