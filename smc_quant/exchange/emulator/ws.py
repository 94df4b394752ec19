"""The WebSocket side: routes, live (UN)SUBSCRIBE and properties, and per-connection limits.

Kline data flows only on the ``/market`` route. ``/public`` and the legacy unrouted ``/stream`` and
``/ws`` accept the same control messages and ack kline subscriptions, then deliver nothing — as
Binance does since 2026.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.hub import Connection, Hub, Route

METHODS = "SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY"
TOO_MANY_STREAMS = "connection closed subscribed channels exceeds limit"


class Refused(Exception):
    """The connection must be closed with ``code`` after the optional error reply."""

    def __init__(self, code: int, reason: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.reply = code, reason, reply


def _error(code: int, msg: str, req_id: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": req_id}


class StreamServer:
    """aiohttp handlers for every WebSocket route; connections live in the :class:`Hub`."""

    def __init__(self, config: EmulatorConfig, hub: Hub) -> None:
        self._config = config
        self._hub = hub

    def routes(self) -> list[web.RouteDef]:
        """``/stream``, ``/ws`` and ``/ws/<streams>`` under ``/market``, ``/public`` and the bare host."""
        out = []
        routes: tuple[tuple[str, Route], ...] = (("/market", "market"), ("/public", "public"), ("", "legacy"))
        for prefix, route in routes:
            out += [
                web.get(f"{prefix}/stream", self._handler(route, combined=True)),
                web.get(f"{prefix}/ws", self._handler(route, combined=False)),
                web.get(prefix + "/ws/{streams:.+}", self._handler(route, combined=False)),
            ]
        return out

    def _handler(
        self, route: Route, combined: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.serve(request, route, combined)

        return handle

    async def serve(self, request: web.Request, route: Route, combined: bool) -> web.WebSocketResponse:
        """Run one client connection until it closes."""
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        conn = Connection(ws, transport, route, combined, last_pong=loop.time())
        initial = request.query.get("streams", "") if combined else request.match_info.get("streams", "")
        self._hub.add(conn)
        try:
            self._subscribe(conn, [s for s in initial.split("/") if s])
            await self._read(conn)
        except Refused as refused:
            if refused.reply is not None:
                await ws.send_str(orjson.dumps(refused.reply).decode())
            self._hub.stats[f"refused_{refused.code}"] += 1
            await ws.close(code=refused.code, message=refused.reason.encode())
        finally:
            self._hub.remove(conn)
        return ws

    async def _read(self, conn: Connection) -> None:
        ws, loop = conn.ws, asyncio.get_running_loop()
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            self._count_incoming(conn, loop.time())
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                conn.last_pong = loop.time()
            elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                reply = self.control(conn, msg.data)
                await ws.send_str(orjson.dumps(reply).decode())

    def _count_incoming(self, conn: Connection, now: float) -> None:
        window = conn.incoming
        window.append(now)
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) > self._config.max_incoming_per_s:
            raise Refused(1008, "Too many requests")

    def _subscribe(self, conn: Connection, streams: list[str]) -> None:
        merged = dict(conn.streams)
        merged.update(dict.fromkeys(streams))
        if len(merged) > self._config.max_streams_per_connection:
            raise Refused(1008, TOO_MANY_STREAMS)
        conn.streams = merged
        self._hub.changed()

    def control(self, conn: Connection, text: str | bytes) -> dict[str, Any]:
        """Answer one JSON control message; raises :class:`Refused` when the connection must close."""
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            msg = f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}"
            raise Refused(1008, "Invalid JSON", _error(3, msg)) from None
        if not isinstance(req, dict) or "method" not in req:
            return _error(2, "Invalid request: missing field `method`")
        req_id = req.get("id")
        if isinstance(req_id, bool) or not isinstance(req_id, int) or req_id < 0:
            return _error(2, "Invalid request: request ID must be an unsigned integer", req_id)
        method, params = req["method"], req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return _error(2, "Invalid request: invalid type: expected a sequence of strings", req_id)
            if method == "SUBSCRIBE":
                self._subscribe(conn, params)
            else:
                conn.streams = {s: None for s in conn.streams if s not in params}
                self._hub.changed()
            return {"result": None, "id": req_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": req_id}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(conn, method, params, req_id)
        return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {METHODS}", req_id)

    def _property(self, conn: Connection, method: str, params: Any, req_id: int) -> dict[str, Any]:
        if not isinstance(params, list) or not params or params[0] != "combined":
            return _error(0, "Unknown property", req_id)
        if method == "GET_PROPERTY":
            return {"result": conn.combined, "id": req_id}
        if len(params) != 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", req_id)
        conn.combined = params[1]
        self._hub.changed()
        return {"result": None, "id": req_id}
