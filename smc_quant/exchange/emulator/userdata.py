"""The user-data side: listenKeys and the ``/private`` WebSocket carrying account events.

One account, so at most one active listenKey (``POST`` returns the active key and extends it, as
Binance does). Keys live ``listen_key_ttl_s`` on the emulator's wall clock (``config.clock``) from their
creation or last keepalive; an expired key is found lazily (on use, and before each publish, when its
streams get ``listenKeyExpired`` and are closed). Routes: ``/private/ws?listenKey=<k>[&events=A/B]``
(query form, what prod accepts since 2026) and ``/private/ws/<k>`` (the docs' path form); an unknown key
gets the socket closed (1008). ``events`` is an allow-list: without it every event is sent, with it only
the named ones (``listenKeyExpired`` too — Binance drops it unless listed, ``BINANCE-PROTOCOL.md`` §3.5).

Separate from the market :class:`~smc_quant.exchange.emulator.hub.Hub`: market faults (drop, stall,
malformed) do not touch user-data sockets. Frames are written with one ``transport.write`` each, in the
order the account produced the events; aiohttp's heartbeat pings every ``ping_interval_s``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.frames import ws_text_frame
from smc_quant.exchange.emulator.params import ApiError, Params
from smc_quant.exchange.emulator.rest import json_response
from smc_quant.exchange.emulator.wire import event_json, event_name
from smc_quant.logging import get_logger
from smc_quant.orders.broker import AccountEvent, StreamExpired

__all__ = ["ListenKeys", "PrivateConnection", "UserData"]

_ids = itertools.count(1)
Renderer = Callable[[AccountEvent], dict[str, Any]]


class ListenKeys:
    """The account's listenKeys with their expiry (wall-clock seconds)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self.expiry: dict[str, float] = {}

    def active(self) -> str | None:
        """The key still valid now, if any."""
        now = self._clock()
        for key, until in list(self.expiry.items()):
            if until > now:
                return key
        return None

    def expired(self) -> list[str]:
        """Keys past their expiry that are still known (so their streams can be told)."""
        now = self._clock()
        return [k for k, until in self.expiry.items() if until <= now]

    def create(self) -> str:
        """``POST``: the active key extended, or a new 64-character key."""
        key = self.active()
        if key is None:
            key = secrets.token_hex(32)
        self.expiry[key] = self._clock() + self._ttl
        return key

    def keepalive(self, key: str) -> bool:
        """``PUT``: extend ``key``; False if it does not exist (or expired)."""
        if not self.valid(key):
            return False
        self.expiry[key] = self._clock() + self._ttl
        return True

    def valid(self, key: str) -> bool:
        """Whether ``key`` exists and has not expired."""
        until = self.expiry.get(key)
        return until is not None and until > self._clock()

    def forget(self, key: str) -> bool:
        """Invalidate ``key``; False if it was unknown."""
        return self.expiry.pop(key, None) is not None


@dataclass(eq=False, slots=True)
class PrivateConnection:
    """One ``/private`` socket: its key and event allow-list (``None`` = everything)."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    listen_key: str
    events: frozenset[str] | None
    id: int = field(default_factory=lambda: next(_ids))

    def wants(self, name: str) -> bool:
        return self.events is None or name in self.events


class UserData:
    """listenKey REST logic, the ``/private`` routes and the fan-out of account events."""

    def __init__(self, config: EmulatorConfig, render: Renderer = event_json) -> None:
        self._config = config
        self.keys = ListenKeys(config.listen_key_ttl_s, config.clock)
        self.render = render
        """Event → Binance JSON; the trading side installs one that knows order prices and algo sizes."""
        self.conns: dict[int, PrivateConnection] = {}
        self.stats: Counter[str] = Counter()
        self._closing: set[asyncio.Future[Any]] = set()
        self._log = get_logger(component="emulator")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/private/ws", self._serve_query),
            web.get("/private/ws/{key}", self._serve_path),
        ]

    # -- WebSocket -------------------------------------------------------------------------------
    async def _serve_query(self, request: web.Request) -> web.WebSocketResponse:
        return await self.serve(request, request.query.get("listenKey", ""))

    async def _serve_path(self, request: web.Request) -> web.WebSocketResponse:
        return await self.serve(request, request.match_info["key"])

    async def serve(self, request: web.Request, key: str) -> web.WebSocketResponse:
        """Run one user-data connection until it closes; an unknown key is closed at once (1008)."""
        heartbeat = self._config.ping_interval_s if self._config.ping_interval_s > 0 else None
        ws = web.WebSocketResponse(autoping=True, heartbeat=heartbeat, compress=False)
        await ws.prepare(request)
        self.expire_due()
        if not self.keys.valid(key):
            self.stats["refused_unknown_key"] += 1
            await ws.close(code=1008, message=b"Invalid listenKey")
            return ws
        raw_events = request.query.get("events")
        allowed = frozenset(e for e in raw_events.split("/") if e) if raw_events is not None else None
        transport = request.transport
        assert transport is not None
        conn = PrivateConnection(ws, transport, key, allowed)
        self.conns[conn.id] = conn
        self.stats["connections_total"] += 1
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.conns.pop(conn.id, None)
        return ws

    def _streams_of(self, key: str) -> list[PrivateConnection]:
        return [c for c in self.conns.values() if c.listen_key == key]

    def _close(self, conn: PrivateConnection, code: int, reason: str) -> None:
        self.conns.pop(conn.id, None)
        task = asyncio.ensure_future(conn.ws.close(code=code, message=reason.encode()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _send(self, conn: PrivateConnection, frame: bytes) -> None:
        if conn.transport.is_closing():
            self.conns.pop(conn.id, None)
            return
        conn.transport.write(frame)
        self.stats["events_sent"] += 1

    # -- events ----------------------------------------------------------------------------------
    def publish(self, events: Iterable[AccountEvent]) -> None:
        """Send each event, serialized once, to every open stream of a valid key that allows it."""
        self.expire_due()
        if not self.conns:
            return
        for event in events:
            name = event_name(event)
            targets = [c for c in self.conns.values() if c.wants(name)]
            if not targets:
                continue
            frame = ws_text_frame(orjson.dumps(self.render(event)))
            for conn in targets:
                self._send(conn, frame)

    def send_raw(self, payload: dict[str, Any]) -> int:
        """Send ``payload`` exactly as given (e.g. a frame captured from Binance, replayed by a test) to every
        open stream of a valid key; the account is not involved. Returns how many streams it went to."""
        self.expire_due()
        frame = ws_text_frame(orjson.dumps(payload))
        targets = list(self.conns.values())
        for conn in targets:
            self._send(conn, frame)
        return len(targets)

    def expire_due(self) -> None:
        """Keys whose TTL passed: tell their streams (``listenKeyExpired``), close them, forget the key."""
        for key in self.keys.expired():
            self.expire(key, event_ms=int(self.keys.expiry[key] * 1000))

    def expire(self, key: str | None = None, *, event_ms: int | None = None) -> int:
        """Expire ``key`` (default: the active one) now; returns how many streams were told."""
        key = key or self.keys.active()
        if key is None:
            return 0
        self.keys.forget(key)
        when = event_ms if event_ms is not None else int(self._config.clock() * 1000)
        frame = ws_text_frame(orjson.dumps(event_json(StreamExpired(when), listen_key=key)))
        streams = self._streams_of(key)
        for conn in streams:
            if conn.wants("listenKeyExpired"):
                self._send(conn, frame)
            self._close(conn, 1000, "listenKey expired")
        self.stats["keys_expired"] += 1
        self._log.info("listen_key_expired", streams=len(streams))
        return len(streams)

    def delete(self, key: str) -> bool:
        """``DELETE /fapi/v1/listenKey``: close the key's streams and invalidate it."""
        known = self.keys.valid(key)
        self.keys.forget(key)
        for conn in self._streams_of(key):
            self._close(conn, 1000, "listenKey closed")
        return known

    # -- listenKey REST routes (USER_STREAM: key only; mounted with the signed routes) ---------------
    async def listen_key_new(self, p: Params) -> web.Response:
        return json_response({"listenKey": self.keys.create()})

    async def listen_key_keepalive(self, p: Params) -> web.Response:
        key = p.opt("listenKey") or self.keys.active()
        self.expire_due()
        if key is None or not self.keys.keepalive(key):
            raise ApiError(-1125, "This listenKey does not exist.")
        return json_response({"listenKey": key})

    async def listen_key_delete(self, p: Params) -> web.Response:
        key = p.opt("listenKey") or self.keys.active()
        if key is not None:
            self.delete(key)
        return json_response({})

    async def shutdown(self) -> None:
        """Abort every user-data socket."""
        for conn in list(self.conns.values()):
            conn.transport.abort()
        self.conns.clear()
        if self._closing:
            await asyncio.wait(self._closing, timeout=1.0)
        for task in self._closing:
            task.cancel()
