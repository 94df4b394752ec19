"""REST routes: ping, time, exchangeInfo and klines, behind request weight and injected HTTP faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from smc_quant.domain.candles import INTERVAL_MS, MINUTE_MS
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.faults import Faults
from smc_quant.exchange.emulator.frames import merge, rest_row, with_derived
from smc_quant.exchange.emulator.intervals import Aggregator
from smc_quant.exchange.emulator.market import Market
from smc_quant.exchange.emulator.ratelimit import Verdict, WeightLimiter, klines_weight
from smc_quant.exchange.emulator.replay import Replay

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _bad(code: int, msg: str) -> web.Response:
    return json_response({"code": code, "msg": msg}, status=400)


class RestApi:
    """Public market-data endpoints of ``/fapi/v1``."""

    def __init__(self, config: EmulatorConfig, market: Market, replay: Replay, faults: Faults) -> None:
        self._config = config
        self._market = market
        self._replay = replay
        self._faults = faults
        self.limiter = WeightLimiter(
            config.weight_limit, config.ban_after_429s, config.ban_seconds, config.clock
        )
        self.requests = 0
        self.klines_requests = 0
        """``GET /fapi/v1/klines`` among ``requests`` (the REST backfill's own traffic)."""
        self._agg = Aggregator(market)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/fapi/v1/ping", self._weighted(self.ping)),
            web.get("/fapi/v1/time", self._weighted(self.time)),
            web.get("/fapi/v1/exchangeInfo", self._weighted(self.exchange_info)),
            web.get("/fapi/v1/klines", self._weighted(self.klines, self._klines_weight)),
        ]

    @staticmethod
    def _klines_weight(request: web.Request) -> int:
        try:
            return klines_weight(int(request.query.get("limit", "500")))
        except ValueError:
            return 1

    def _weighted(self, handler: Handler, weight: Callable[[web.Request], int] = lambda r: 1) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.klines_requests += request.path == "/fapi/v1/klines"
            if self._faults.delay_s > 0:
                await asyncio.sleep(self._faults.delay_s)
            ip = request.remote or "unknown"
            injected = self._faults.take_http_error(request.path)
            if injected is not None:
                return self._injected(injected, self.limiter.used(ip))
            verdict = self.limiter.charge(ip, weight(request))
            if verdict.status != 200:
                return self._limited(verdict)
            response = await handler(request)
            response.headers[WEIGHT_HEADER] = str(verdict.used)
            if (isinstance(response, web.Response) and response.status == 200
                    and isinstance(response.body, bytes) and self._faults.take_garbled(request.path)):
                response.body = response.body[: len(response.body) // 2]
            return response

        return wrapped

    def _limited(self, v: Verdict) -> web.Response:
        headers = {WEIGHT_HEADER: str(v.used), "Retry-After": str(v.retry_after_s)}
        if v.status == 418:
            msg = f"Way too many requests; IP banned until {v.banned_until_ms}."
        else:
            msg = (
                f"Too many requests; current limit is {self._config.weight_limit} requests per minute. "
                "Please use the websocket for live updates to avoid polling the API."
            )
        return json_response({"code": -1003, "msg": msg}, status=v.status, headers=headers)

    def _injected(self, status: int, used: int) -> web.Response:
        headers = {WEIGHT_HEADER: str(used), "Retry-After": "1"}
        if status == 503:
            return json_response({"code": -1001, "msg": "Service Unavailable."}, 503, headers)
        if status == 400:
            return json_response({"code": -1121, "msg": "Invalid symbol."}, 400, headers)
        if status == 403:  # the WAF's answer: an HTML page, no Binance error body
            return web.Response(status=403, text="<html><body><h1>403 Forbidden</h1></body></html>",
                                content_type="text/html", headers=headers)
        until = int(self._config.clock() * 1000) + 1000
        return (
            self._limited(Verdict(status, used, 1, until))
            if status == 418
            else json_response(
                {
                    "code": -1003,
                    "msg": f"Too many requests; current limit is {self._config.weight_limit} "
                    "requests per minute.",
                },
                429,
                headers,
            )
        )

    async def ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self._replay.now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        return json_response(self._market.exchange_info(self._replay.now_ms(), self._config.weight_limit))

    async def klines(self, request: web.Request) -> web.Response:
        q = request.query
        symbol = q.get("symbol", "").upper()
        if not symbol:
            return _bad(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if "interval" not in q:
            return _bad(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if symbol not in self._market.source_of:
            return _bad(-1121, "Invalid symbol.")
        if q["interval"] not in INTERVAL_MS:
            return _bad(-1120, "Invalid interval.")
        try:
            limit = int(q.get("limit", "500"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return _bad(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1500:
            return _bad(-1130, "Data sent for parameter 'limit' is not valid.")
        return json_response(self._faults.take_malformed_rows(self.rows(symbol, start, end, limit, q["interval"])))

    def rows(
        self, symbol: str, start: int | None, end: int | None, limit: int, interval: str = "1m"
    ) -> list[list[object]]:
        """Closed klines up to the replay clock, then the still-open one, oldest first, like Binance."""
        market, replay = self._market, self._replay
        src, length = market.source_of[symbol], INTERVAL_MS[interval]
        prec = market.precision[src]
        now_open = market.start_ms + replay.minutes_replayed * MINUTE_MS  # first minute not closed
        first = int(market.series[src].open_time[0]) if self._config.serve_history else market.start_ms
        live = replay.open_bar(symbol)
        last = now_open - now_open % length  # the window still open
        b = last if live is not None or last < now_open else last - length
        a = (
            first - first % length
            if start is None
            else max(first - first % length, -(-start // length) * length)
        )
        if end is not None:
            b = min(b, end - end % length)
        if start is not None:
            b = min(b, a + (limit - 1) * length)
        else:
            a = max(a, b - (limit - 1) * length)
        rows: list[list[object]] = []
        for w in range(a, b + 1, length):
            k = self._agg.closed(src, length, w, min(w + length, now_open))
            if w == last and live is not None:
                k = merge(k, with_derived(live[1]))
            if k is not None:
                rows.append(rest_row(w, k, prec, length))
        return rows
