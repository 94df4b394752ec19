"""``LiveBroker``: the :class:`~smc_quant.orders.broker.Broker` protocol over Binance's signed REST API.

One request path (:meth:`LiveBroker._call`), following ``BINANCE-PROTOCOL.md`` §3.3–3.5, §5, §7:

1. the server-clock offset (:class:`~smc_quant.orders.signing.ClockOffset`) is refreshed from
   ``GET /fapi/v1/time`` midpoint samples when stale (every ``time_refresh_s``, and at once after -1021/-5028);
2. order placements take a slot from the :class:`~smc_quant.orders.limiter.OrderLimiter` (exits first;
   they cost 0 IP weight); every other call takes its IP weight from the shared ``WeightGovernor``;
3. the request is signed by :class:`~smc_quant.orders.signing.RequestSigner` and sent byte for byte
   (``yarl.URL(..., encoded=True)``, the form body as bytes) — GET/DELETE in the query, POST/PUT in the body;
4. the answer's ``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-*`` headers feed the governor and limiter;
5. a failure is mapped ONLY through :func:`~smc_quant.orders.reactions.reaction_for`:

   - -1021/-5028 → invalidate the offset, resample, re-sign and send once more;
   - our timeout, or a connection dropped after sending, on a placement → :class:`OrderStatusUnknown`
     (and on any other call → ``TemporaryError``); query_first reactions (503 "Unknown error", -1000,
     -1006, -1007, -4116, other 5xx) likewise → ``OrderStatusUnknown`` for a placement. The broker never
     re-sends an order by itself: the caller queries by client id first;
   - 429/418 → the governor (and, for -1015, the limiter) is penalised, ``RateLimited`` is raised;
   - other retry reactions → ``TemporaryError``;
   - repair / drop / alarm / benign → :class:`ExchangeRejected` (a ``VenueRejected`` with ``.reaction``).

Never placed on ``/fapi/v1/order``: STOP_MARKET / TAKE_PROFIT_MARKET (they go to ``/fapi/v1/algoOrder``
with ``algoType=CONDITIONAL``), so the broker cannot produce -4120.

Secrets: the signer hides the secret, the URL with its signature is never logged (log lines carry the
path and the client id only), and errors quote the path, status, code and message — never the query.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import aiohttp
import orjson
import yarl

from smc_quant.errors import DataRejected, RateLimited, TemporaryError, VenueRejected
from smc_quant.exchange.brackets import SymbolBrackets, parse_leverage_brackets
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.trade_history import TradeHistory
from smc_quant.exchange.user_stream import UserDataStream
from smc_quant.exchange.wire_trading import (
    parse_account_config,
    parse_algo,
    parse_balance,
    parse_commission_rate,
    parse_flag,
    parse_order,
    parse_position,
)
from smc_quant.logging import get_logger
from smc_quant.orders.broker import (
    AccountConfig,
    AlgoRequest,
    AlgoState,
    Balance,
    EventSink,
    ExchangePosition,
    OrderRequest,
    OrderState,
    OrderStatusUnknown,
)
from smc_quant.orders.limiter import OrderLimiter
from smc_quant.orders.reactions import STALE_RULES, TIMEOUT, Reaction, Rule, reaction_for
from smc_quant.orders.signing import ClockOffset, OffsetPolicy, Param, RequestSigner, TimeSample

__all__ = ["ExchangeRejected", "LiveBroker", "wire_decimal"]

RESYNC_CODES = frozenset({-1021, -5028})
GONE_CODES = frozenset({-2011, -2013})
PLAIN_TYPES = frozenset({"MARKET", "LIMIT"})
TIME_SAMPLES = 3
"""``GET /fapi/v1/time`` round trips per refresh; the lowest-RTT midpoint is kept."""


class ExchangeRejected(VenueRejected):
    """The exchange said no; ``reaction`` is the :class:`Rule` from ``reactions.py`` (repair/drop/alarm/benign)."""

    def __init__(self, message: str, *, status: int, code: int | None, reaction: Rule) -> None:
        super().__init__(message, status=status, code=code)
        self.reaction = reaction


def wire_decimal(value: Decimal) -> str:
    """A Decimal as Binance wants it: plain notation, never an exponent (``1E-7`` → ``0.0000001``)."""
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value}")
    text = format(value, "f")
    return text


def _flag(value: bool) -> str:
    return "true" if value else "false"


class LiveBroker(TradeHistory):
    """Signed REST broker for one Binance USDT-M account (one-way mode), plus its user-data stream.

    ``ws_base_url`` is the WebSocket root (``wss://fstream.binance.com`` on prod, the emulator's
    ``ws://127.0.0.1:<port>``); without it the stream is derived from ``base_url`` (http→ws), which only
    fits the emulator. ``await start()`` opens the user-data stream, ``await close()`` stops it; the
    aiohttp session belongs to the caller. A 429/418 pause of the IP longer than ``max_wait_s`` raises
    ``RateLimited`` at once instead of waiting (a ban can last days); placements, which cost no IP weight,
    are refused with ``RateLimited`` while any pause runs.

    Counters: ``rejected_payloads`` (DataRejected reasons of unreadable answers), ``resyncs`` (clock
    resamples after -1021/-5028), ``time_refreshes``.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, signer: RequestSigner, *,
                 governor: WeightGovernor, limiter: OrderLimiter, timeout_s: float = 5.0,
                 time_refresh_s: float = 300, ws_base_url: str | None = None,
                 stream_options: Mapping[str, Any] | None = None, max_wait_s: float = 60.0,
                 logger: Any = None) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._signer = signer
        self.governor = governor
        self.limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_wait_s = max_wait_s
        self.offset = ClockOffset(OffsetPolicy(refresh_every_ms=int(time_refresh_s * 1000)))
        self._time_lock = asyncio.Lock()
        self._log = logger if logger is not None else get_logger(component="trade_client")
        self._v3 = {"positionRisk": True, "balance": True}
        self.rejected_payloads: Counter[str] = Counter()
        self.resyncs = 0
        self.time_refreshes = 0
        self.on_stale_rules: Callable[[int], object] | None = None
        """Called with the code when the exchange refuses a request on a rule our filters got wrong
        (``smc_quant.orders.reactions.STALE_RULES``): the process re-reads exchangeInfo."""
        ws_root = ws_base_url if ws_base_url is not None else self.base_url.replace("http", "ws", 1)
        self.stream = UserDataStream(session, self.base_url, ws_root, signer.headers, governor=governor,
                                     **dict(stream_options or {}))

    def __repr__(self) -> str:
        return f"LiveBroker(base_url={self.base_url!r}, signer={self._signer!r})"

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Sync the clock and open the user-data stream."""
        await self._ensure_time()
        await self.stream.start()

    async def close(self) -> None:
        """Stop the user-data stream (the session stays open: it is the caller's)."""
        await self.stream.close()

    def subscribe(self, sink: EventSink) -> None:
        """Deliver every account event of the user-data stream to ``sink``, in exchange order."""
        self.stream.subscribe(sink)

    # -- time -------------------------------------------------------------------------------------------------

    async def server_time(self) -> int:
        """``GET /fapi/v1/time`` (weight 1): the exchange clock in epoch ms."""
        await self._admit("GET", "/fapi/v1/time", 1)
        body = await self._send("GET", "/fapi/v1/time", "", "", {})
        return self._server_time(body)

    @staticmethod
    def _server_time(body: Any) -> int:
        value = body.get("serverTime") if isinstance(body, dict) else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TemporaryError(f"GET /fapi/v1/time: no serverTime in {str(body)[:100]}")
        return value

    async def sync_time(self) -> ClockOffset:
        """Take ``TIME_SAMPLES`` midpoint samples of ``GET /fapi/v1/time``; keep the best (lowest RTT)."""
        async with self._time_lock:
            return await self._sample_time()

    async def _sample_time(self) -> ClockOffset:
        offset = self.offset
        for _ in range(TIME_SAMPLES):
            await self._admit("GET", "/fapi/v1/time", 1)  # before ``sent``: a wait for weight is no round trip
            sent = self._signer.timestamp(0)
            body = await self._send("GET", "/fapi/v1/time", "", "", {})
            received = self._signer.timestamp(0)
            offset = offset.add(TimeSample(sent, self._server_time(body), received))
        self.offset = offset
        self.time_refreshes += 1
        self._log.debug("clock_offset", offset_ms=offset.offset_ms, rtt_ms=offset.best.rtt_ms if offset.best else 0)
        return offset

    async def _ensure_time(self) -> None:
        if not self.offset.needs_refresh(self._signer.timestamp(0)):
            return
        async with self._time_lock:
            if self.offset.needs_refresh(self._signer.timestamp(0)):
                await self._sample_time()

    # -- the request path -------------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, params: Sequence[Param], *, weight: int = 1,
                    order: bool = False, exit: bool = False, client_id: str | None = None) -> Any:
        """One signed request (see the module docstring); re-signed and re-sent once after -1021/-5028."""
        for attempt in (0, 1):
            await self._ensure_time()
            if order:
                await self.limiter.acquire(exit=exit)
            # Every wait comes before the signature: a request that waited for weight (up to the next minute)
            # after being stamped would reach the exchange outside its recvWindow (-1021).
            await self._admit(method, path, 0 if order else weight)
            in_body = method in ("POST", "PUT")
            signed = self._signer.sign(() if in_body else params, params if in_body else (),
                                       offset_ms=self.offset.offset_ms)
            try:
                return await self._send(method, path, signed.query, signed.body, signed.headers, order=order,
                                        client_id=client_id)
            except ExchangeRejected as exc:
                if exc.code not in RESYNC_CODES or attempt == 1:
                    raise
                self.resyncs += 1
                self._log.warning("clock_resync", path=path, code=exc.code, client_id=client_id)
                self.offset = self.offset.invalidate()
        raise AssertionError("unreachable")

    async def _admit(self, method: str, path: str, weight: int) -> None:
        """Wait for the request's IP weight (the governor), or refuse at once during a 429/418 pause."""
        if weight > 0:
            await self.governor.acquire(weight, max_wait_s=self._max_wait_s)
        elif self.governor.blocked_until_ms > self.governor.clock():
            # placements cost no IP weight, but a 418 ban or 429 pause covers every request from this IP
            until = self.governor.blocked_until_ms
            raise RateLimited(f"{method} {path}: requests paused until {until}", status=429, retry_at_ms=until,
                              now_ms=self.governor.clock())

    async def _send(self, method: str, path: str, query: str, body: str, headers: Mapping[str, str], *,
                    order: bool = False, client_id: str | None = None) -> Any:
        """Send exactly these strings (admitted by :meth:`_admit` first); map the outcome."""
        sent_at = self.governor.clock()
        url = yarl.URL(f"{self.base_url}{path}?{query}" if query else f"{self.base_url}{path}", encoded=True)
        self._log.debug("rest_send", method=method, path=path, client_id=client_id)
        try:
            async with self._session.request(method, url, data=body.encode() if body else None,
                                             headers=dict(headers), timeout=self._timeout) as resp:
                raw = await resp.read()
                self._observe(resp.headers, sent_at)
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            # no connection was made: the request never left
            raise TemporaryError(f"{method} {path}: cannot connect: {type(exc).__name__}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._log.warning("rest_no_answer", method=method, path=path, client_id=client_id,
                              error=type(exc).__name__)
            if order and client_id is not None:
                raise OrderStatusUnknown(f"{method} {path}: no answer ({type(exc).__name__}, {TIMEOUT.name})",
                                         client_id=client_id) from exc
            raise TemporaryError(f"{method} {path}: no answer: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.rejected_payloads["response_not_json"] += 1
                if order and client_id is not None:
                    raise OrderStatusUnknown(f"{method} {path}: unreadable answer", client_id=client_id) from None
                raise TemporaryError(f"{method} {path}: HTTP {status} with a non-JSON body") from None
        raise self._failure(method, path, status, resp.headers, raw, order=order, client_id=client_id)

    def _observe(self, headers: Mapping[str, str], sent_at: int) -> None:
        used = headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            self.governor.observe(int(used), sent_at)
        self.limiter.observe(headers)

    def _failure(self, method: str, path: str, status: int, headers: Mapping[str, str], raw: bytes, *,
                 order: bool, client_id: str | None) -> Exception:
        code, msg = _error_body(raw)
        rule = reaction_for(status, code, msg)
        text = f"{method} {path}: HTTP {status} code {code}: {msg}"
        self._log.info("rest_rejected", method=method, path=path, status=status, code=code,
                       reaction=rule.reaction.value, client_id=client_id)
        if code is not None and rule.action in STALE_RULES and self.on_stale_rules is not None:
            self.on_stale_rules(code)
        if status in (418, 429):
            retry_after = _retry_after(headers)
            if code == -1015:
                until, now = self.limiter.penalise(retry_after_s=retry_after, message=msg), self.limiter.clock()
            else:
                until, now = self.governor.penalise(status, retry_after, msg), self.governor.clock()
            return RateLimited(text, status=status, retry_at_ms=until, now_ms=now)
        if code == -1015:
            self.limiter.penalise(message=msg)
        if rule.reaction is Reaction.QUERY_FIRST:
            if order and client_id is not None:
                return OrderStatusUnknown(text, client_id=client_id)
            return TemporaryError(text)
        if rule.reaction is Reaction.RETRY:
            return TemporaryError(text)
        return ExchangeRejected(text, status=status, code=code, reaction=rule)

    def _parsed(self, parse: Callable[[Any], Any], body: Any) -> Any:
        try:
            return parse(body)
        except DataRejected as exc:
            self.rejected_payloads[exc.reason] += 1
            raise

    def _parsed_rows(self, parse: Callable[[Any], Any], rows: Any, reason: str) -> list[Any]:
        """Parse each row; a malformed row is counted and skipped (``None`` results are dropped too)."""
        if not isinstance(rows, list):
            self.rejected_payloads[reason] += 1
            raise DataRejected(reason, f"expected a list, got {type(rows).__name__}")
        out = []
        for row in rows:
            try:
                item = parse(row)
            except DataRejected as exc:
                self.rejected_payloads[exc.reason] += 1
                continue
            if item is not None:
                out.append(item)
        return out

    # -- orders -------------------------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> OrderState:
        """``POST /fapi/v1/order`` with our ``newClientOrderId`` and ``newOrderRespType=RESULT``.

        Reduce-only orders are exits and take the limiter's priority lane. A timeout or a query_first
        answer raises :class:`OrderStatusUnknown`; nothing is re-sent here.
        """
        if not request.client_order_id:
            raise ValueError("an order needs our client_order_id (idempotency); refusing to send it without one")
        if request.type not in PLAIN_TYPES:
            raise ValueError(f"{request.type} is not placed on /fapi/v1/order (-4120); use place_algo")
        params: list[Param] = [("symbol", request.symbol), ("side", request.side), ("type", request.type),
                               ("quantity", wire_decimal(request.quantity))]
        if request.type == "LIMIT":
            if request.price is None:
                raise ValueError("a LIMIT order needs a price")
            params += [("price", wire_decimal(request.price)), ("timeInForce", request.time_in_force)]
        if request.reduce_only:
            params.append(("reduceOnly", "true"))
        params += [("newClientOrderId", request.client_order_id), ("newOrderRespType", "RESULT")]
        self._log.info("order_send", path="/fapi/v1/order", client_id=request.client_order_id)
        body = await self._call("POST", "/fapi/v1/order", params, order=True, exit=request.reduce_only,
                                client_id=request.client_order_id)
        try:
            state: OrderState = self._parsed(parse_order, body)
        except DataRejected as exc:
            raise OrderStatusUnknown(f"unreadable order answer: {exc}", client_id=request.client_order_id) from exc
        return state

    async def query_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """``GET /fapi/v1/order`` by ``origClientOrderId`` (weight 1); ``None`` on -2013."""
        return await self._query_order(symbol, ("origClientOrderId", client_order_id))

    async def query_order_id(self, symbol: str, order_id: int) -> OrderState | None:
        """``GET /fapi/v1/order`` by ``orderId`` (weight 1): a triggered stop's ``actualOrderId``; ``None`` on -2013."""
        return await self._query_order(symbol, ("orderId", str(order_id)))

    async def _query_order(self, symbol: str, key: Param) -> OrderState | None:
        try:
            body = await self._call("GET", "/fapi/v1/order", [("symbol", symbol), key])
        except ExchangeRejected as exc:
            if exc.code in GONE_CODES:
                return None
            raise
        state: OrderState = self._parsed(parse_order, body)
        return state

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        """``DELETE /fapi/v1/order`` (weight 1); ``None`` when already gone (-2011/-2013)."""
        self._log.info("order_cancel", path="/fapi/v1/order", client_id=client_order_id)
        try:
            body = await self._call("DELETE", "/fapi/v1/order", [("symbol", symbol),
                                                                 ("origClientOrderId", client_order_id)])
        except ExchangeRejected as exc:
            if exc.code in GONE_CODES:
                return None
            raise
        state: OrderState = self._parsed(parse_order, body)
        return state

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """``GET /fapi/v1/openOrders`` (weight 1 with a symbol, 40 without); malformed rows counted, skipped."""
        params: list[Param] = [("symbol", symbol)] if symbol else []
        rows = await self._call("GET", "/fapi/v1/openOrders", params, weight=1 if symbol else 40)
        return self._parsed_rows(parse_order, rows, "order_malformed")

    # -- algo (conditional) orders -------------------------------------------------------------------------------

    async def place_algo(self, request: AlgoRequest) -> AlgoState:
        """``POST /fapi/v1/algoOrder`` (``algoType=CONDITIONAL``, ``triggerPrice``, ``clientAlgoId``).

        ``closePosition=true`` without quantity, or ``quantity`` (+ ``reduceOnly``). Protective orders are
        exits for the limiter.
        """
        if not request.client_algo_id:
            raise ValueError("an algo order needs our client_algo_id; refusing to send it without one")
        params: list[Param] = [("algoType", "CONDITIONAL"), ("symbol", request.symbol), ("side", request.side),
                               ("type", request.type), ("triggerPrice", wire_decimal(request.trigger_price)),
                               ("workingType", request.working_type)]
        if request.close_position:
            params.append(("closePosition", "true"))
        else:
            if request.quantity is None:
                raise ValueError("an algo order needs a quantity unless it closes the position")
            params.append(("quantity", wire_decimal(request.quantity)))
            if request.reduce_only:
                params.append(("reduceOnly", "true"))
        params.append(("clientAlgoId", request.client_algo_id))
        self._log.info("algo_send", path="/fapi/v1/algoOrder", client_id=request.client_algo_id)
        body = await self._call("POST", "/fapi/v1/algoOrder", params, order=True,
                                exit=request.close_position or request.reduce_only, client_id=request.client_algo_id)
        try:
            state: AlgoState = self._parsed(parse_algo, body)
        except DataRejected as exc:
            raise OrderStatusUnknown(f"unreadable algo answer: {exc}", client_id=request.client_algo_id) from exc
        return state

    async def query_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None:
        """``GET /fapi/v1/algoOrder`` by ``clientAlgoId`` (weight 1); ``None`` when unknown (-2013/-2011)."""
        try:
            body = await self._call("GET", "/fapi/v1/algoOrder", [("clientAlgoId", client_algo_id)])
        except ExchangeRejected as exc:
            if exc.code in GONE_CODES:
                return None
            raise
        state: AlgoState = self._parsed(parse_algo, body)
        return state

    async def cancel_algo(self, symbol: str, client_algo_id: str) -> AlgoState | None:
        """``DELETE /fapi/v1/algoOrder`` by ``clientAlgoId`` (weight 1); ``None`` when already gone.

        Binance answers a cancel with ``{algoId, clientAlgoId, code: "200", msg: "success"}`` only; the
        final state is then read back with :meth:`query_algo` (a full algo row is parsed directly).
        """
        self._log.info("algo_cancel", path="/fapi/v1/algoOrder", client_id=client_algo_id)
        try:
            body = await self._call("DELETE", "/fapi/v1/algoOrder", [("clientAlgoId", client_algo_id)])
        except ExchangeRejected as exc:
            if exc.code in GONE_CODES:
                return None
            raise
        if isinstance(body, dict) and "algoStatus" in body:
            state: AlgoState = self._parsed(parse_algo, body)
            return state
        try:
            return await self.query_algo(symbol, client_algo_id)
        except ExchangeRejected as exc:
            if exc.code in GONE_CODES:
                return None
            raise

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoState]:
        """``GET /fapi/v1/openAlgoOrders``; non-STOP/TAKE_PROFIT_MARKET or malformed rows counted, skipped."""
        params: list[Param] = [("symbol", symbol)] if symbol else []
        rows = await self._call("GET", "/fapi/v1/openAlgoOrders", params, weight=1 if symbol else 40)
        return self._parsed_rows(parse_algo, rows, "algo_malformed")

    # -- account ----------------------------------------------------------------------------------------------

    async def _v3_or_v2(self, name: str) -> Any:
        """``GET /fapi/v3/<name>`` (weight 5), falling back to v2 for good after a 404."""
        if self._v3[name]:
            try:
                return await self._call("GET", f"/fapi/v3/{name}", [], weight=5)
            except ExchangeRejected as exc:
                if exc.status != 404:
                    raise
                self._log.warning("rest_fallback_v2", path=f"/fapi/v3/{name}")
                self._v3[name] = False
        return await self._call("GET", f"/fapi/v2/{name}", [], weight=5)

    async def positions(self) -> list[ExchangePosition]:
        """Non-zero positions from ``positionRisk`` (v3, v2 on 404); flat rows dropped, malformed counted."""
        rows = await self._v3_or_v2("positionRisk")
        return self._parsed_rows(parse_position, rows, "position_malformed")

    async def balance(self) -> Balance:
        """The USDT row of ``balance`` (v3, v2 on 404)."""
        rows = await self._v3_or_v2("balance")
        out: Balance = self._parsed(parse_balance, rows)
        return out

    async def account_config(self) -> AccountConfig:
        """The account's position mode and asset mode (and whether it may trade): ``GET /fapi/v1/accountConfig``
        (weight 5). Where that endpoint is missing (404), the two older ones: ``GET /fapi/v1/positionSide/dual``
        and ``GET /fapi/v1/multiAssetsMargin`` (weight 30 each; ``can_trade`` then unknown). A malformed answer
        is counted (``account_config_malformed``) and raised."""
        try:
            body = await self._call("GET", "/fapi/v1/accountConfig", [], weight=5)
        except ExchangeRejected as exc:
            if exc.status != 404:
                raise
            self._log.warning("rest_fallback", path="/fapi/v1/accountConfig")
        else:
            config: AccountConfig = self._parsed(parse_account_config, body)
            return config
        dual = await self._call("GET", "/fapi/v1/positionSide/dual", [], weight=30)
        multi = await self._call("GET", "/fapi/v1/multiAssetsMargin", [], weight=30)
        return AccountConfig(dual_side_position=self._parsed(lambda b: parse_flag(b, "dualSidePosition"), dual),
                             multi_assets_margin=self._parsed(lambda b: parse_flag(b, "multiAssetsMargin"), multi))

    async def fee_burn(self) -> bool:
        """BNB Fee Discount: whether the account pays its commissions in BNB while it holds some (``GET
        /fapi/v1/feeBurn``, weight 30; such fills are counted in USDT by :mod:`smc_quant.orders.fees`)."""
        body = await self._call("GET", "/fapi/v1/feeBurn", [], weight=30)
        on: bool = self._parsed(lambda b: parse_flag(b, "feeBurn"), body)
        return on

    async def commission_rate(self, symbol: str) -> tuple[Decimal, Decimal]:
        """The account's (maker, taker) commission rates on ``symbol``, fractions of the notional (``GET
        /fapi/v1/commissionRate``, weight 20): its VIP tier and any discount but BNB's."""
        body = await self._call("GET", "/fapi/v1/commissionRate", [("symbol", symbol)], weight=20)
        rates: tuple[Decimal, Decimal] = self._parsed(parse_commission_rate, body)
        return rates

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """``POST /fapi/v1/leverage`` (weight 1)."""
        if not 1 <= leverage <= 125:
            raise ValueError(f"leverage must be in 1..125, got {leverage}")
        await self._call("POST", "/fapi/v1/leverage", [("symbol", symbol), ("leverage", leverage)])

    async def set_margin_type(self, symbol: str, margin_type: Literal["ISOLATED", "CROSSED"]) -> None:
        """``POST /fapi/v1/marginType`` (weight 1); -4046 (already set) is a no-op."""
        try:
            await self._call("POST", "/fapi/v1/marginType", [("symbol", symbol), ("marginType", margin_type)])
        except ExchangeRejected as exc:
            if exc.code != -4046:
                raise

    async def leverage_brackets(self, symbol: str | None = None) -> dict[str, SymbolBrackets]:
        """``GET /fapi/v1/leverageBracket`` (weight 1) parsed by ``parse_leverage_brackets``."""
        params: list[Param] = [("symbol", symbol)] if symbol else []
        body = await self._call("GET", "/fapi/v1/leverageBracket", params)
        try:
            return parse_leverage_brackets(body)
        except (KeyError, TypeError, ValueError, DataRejected) as exc:
            self.rejected_payloads["bracket_malformed"] += 1
            raise DataRejected("bracket_malformed", str(exc)[:200]) from exc


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_body(raw: bytes) -> tuple[int | None, str]:
    """``{"code": -1121, "msg": "Invalid symbol."}`` → (code, msg); anything else → (None, text)."""
    text = raw.decode("utf-8", "replace")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, text[:200]
    if isinstance(data, dict):
        code = data.get("code")
        return (code if isinstance(code, int) and not isinstance(code, bool) else None), str(data.get("msg", ""))[:200]
    return None, text[:200]
