"""Open stream connections and the fan-out of prebuilt frames to them.

Each step's frames are written with one ``transport.write`` per connection (frames concatenated),
straight to the socket, bypassing per-frame framing work. A client whose unsent data passes
``max_send_buffer_bytes`` is dropped, as Binance drops slow consumers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.faults import Faults
from smc_quant.exchange.emulator.steps import Step
from smc_quant.logging import get_logger

Route = Literal["market", "public", "legacy"]
_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Connection:
    """One client WebSocket: its route, mode and subscribed streams."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    route: Route
    combined: bool
    streams: dict[str, None] = field(default_factory=dict)
    incoming: deque[float] = field(default_factory=deque)
    last_pong: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))


class Hub:
    """Registry of connections, the wanted-stream sets, and frame delivery with counters."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self.faults = Faults(self)
        self.conns: dict[int, Connection] = {}
        self.stats: Counter[str] = Counter()
        self._wanted: tuple[set[str], set[str]] | None = None
        self._closing: set[asyncio.Future[bool]] = set()
        self._log = get_logger(component="emulator")

    def add(self, conn: Connection) -> None:
        self.conns[conn.id] = conn
        self.stats["connections_total"] += 1
        self.changed()

    def remove(self, conn: Connection) -> None:
        if self.conns.pop(conn.id, None) is not None:
            self.changed()

    def changed(self) -> None:
        """Subscriptions or modes changed: recompute the wanted streams on the next step."""
        self._wanted = None

    def wanted(self) -> tuple[set[str], set[str]]:
        """Streams wanted in combined form and in raw form by ``/market`` connections."""
        if self._wanted is None:
            comb: set[str] = set()
            raw: set[str] = set()
            for c in self.conns.values():
                if c.route == "market":
                    (comb if c.combined else raw).update(c.streams)
            self._wanted = (comb, raw)
        return self._wanted

    @property
    def subscriptions(self) -> int:
        """Streams subscribed over all connections (every route)."""
        return sum(len(c.streams) for c in self.conns.values())

    def broadcast(self, step: Step) -> None:
        """Write ``step``'s frames to every ``/market`` connection subscribed to them."""
        faults = self.faults
        limit = self._config.max_send_buffer_bytes
        for conn in list(self.conns.values()):
            if conn.route != "market":
                continue
            frames = step.combined if conn.combined else step.raw
            parts = [f for s in conn.streams if (f := frames.get(s)) is not None]
            if not parts:
                continue
            if faults.stalls(conn.streams):
                self.stats["frames_stalled"] += len(parts)
                continue
            if faults.malformed_pending:
                parts = [faults.take_malformed(p) for p in parts]
            transport = conn.transport
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() > limit:
                self._drop_slow(conn)
                continue
            data = b"".join(parts)
            if faults.delay_s > 0:
                asyncio.get_running_loop().call_later(faults.delay_s, self._write, transport, data)
            else:
                transport.write(data)
            self.stats["frames_sent"] += len(parts)
            self.stats["bytes_sent"] += len(data)

    @staticmethod
    def _write(transport: asyncio.Transport, data: bytes) -> None:
        if not transport.is_closing():
            transport.write(data)

    def _drop_slow(self, conn: Connection) -> None:
        self.stats["slow_client_drops"] += 1
        self._log.warning("slow_client_dropped", conn=conn.id, unsent=conn.transport.get_write_buffer_size())
        conn.transport.abort()
        self.remove(conn)

    def lagging(self, low_water: int) -> list[Connection]:
        """Market connections with more than ``low_water`` bytes still unsent."""
        return [
            c
            for c in self.conns.values()
            if c.route == "market"
            and not c.transport.is_closing()
            and c.transport.get_write_buffer_size() > low_water
        ]

    async def drained(self, low_water: int = 1 << 20) -> None:
        """Wait until every client has taken its data (speed 0 pacing); drop one stuck too long."""
        if not self.lagging(low_water):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.slow_client_timeout_s
        while lag := self.lagging(low_water):
            if loop.time() > deadline:
                for conn in lag:
                    self._drop_slow(conn)
                return
            await asyncio.sleep(0.0005)

    def drop_all(self) -> int:
        """Abort every connection's TCP transport: no close frame, the client sees 1006."""
        conns = list(self.conns.values())
        for conn in conns:
            conn.transport.abort()
            self.remove(conn)
        return len(conns)

    def close_all(self, code: int, reason: str) -> int:
        """Send a close frame with ``code`` to every connection."""
        conns = list(self.conns.values())
        for conn in conns:
            self.close(conn, code, reason)
        return len(conns)

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Close one connection with a close frame, in the background."""
        self.remove(conn)
        task = asyncio.ensure_future(conn.ws.close(code=code, message=reason.encode()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def shutdown(self) -> None:
        """Abort every connection and wait for the close handshakes still in flight."""
        self.drop_all()
        if self._closing:
            await asyncio.wait(self._closing, timeout=1.0)
        for task in self._closing:
            task.cancel()

    async def ping_forever(self) -> None:
        """Ping every connection each ``ping_interval_s``; close those silent past ``pong_timeout_s``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._config.ping_interval_s)
            now = loop.time()
            for conn in list(self.conns.values()):
                if now - conn.last_pong > self._config.pong_timeout_s:
                    self.stats["pong_timeouts"] += 1
                    self.close(conn, 1008, "pong timeout")
                    continue
                try:
                    await conn.ws.ping(str(int(now * 1000)).encode())
                    self.stats["pings_sent"] += 1
                except (ConnectionError, RuntimeError):
                    self.remove(conn)
