"""Fault switches: what the emulator breaks on purpose, and counters of what it broke.

Drives: :class:`Faults` methods in-process, or ``POST /_emulator/faults`` with the same names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

from smc_quant.exchange.emulator.frames import ws_text_frame
from smc_quant.logging import get_logger


class ConnectionControl(Protocol):
    """What faults need from the stream server."""

    def drop_all(self) -> int: ...
    def close_all(self, code: int, reason: str) -> int: ...


def _payload(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    return frame[2 + (2 if n == 126 else 8 if n == 127 else 0) :]


def broken_frame(frame: bytes, kind: int) -> bytes:
    """A broken copy of a kline frame: truncated JSON, NaN close, negative close, or high < low."""
    payload = _payload(frame)
    if kind % 4 == 0:
        return ws_text_frame(payload[: max(1, len(payload) // 2)])
    doc = orjson.loads(payload)
    k = (doc.get("data") or doc)["k"]
    if kind % 4 == 1:
        k["c"] = "NaN"
    elif kind % 4 == 2:
        k["c"] = "-" + k["c"]
    else:
        k["h"] = repr(float(k["l"]) / 2)
    return ws_text_frame(orjson.dumps(doc))


PLACEMENTS = ("order", "reduce_only", "algo")
"""Kinds of placement an order fault can be limited to: a plain order, a reduce-only order (an exit), an algo
order (a stop or take-profit)."""


def broken_row(row: list[object], kind: int) -> list[object]:
    """A broken copy of a ``/klines`` row: cut short, a price that is not a number, a null open time, a NaN
    close, or high < low (the first three unreadable, the last two impossible values)."""
    broken = list(row)
    if kind % 5 == 0:
        return broken[:5]
    if kind % 5 == 1:
        broken[2] = "abc"
    elif kind % 5 == 2:
        broken[0] = None
    elif kind % 5 == 3:
        broken[4] = "NaN"
    else:
        broken[2] = repr(float(str(broken[3])) / 2)
    return broken


class Faults:
    """Switches (stall, malformed, delay, HTTP errors) and actions (drop, close) with counters."""

    def __init__(self, control: ConnectionControl) -> None:
        self._control = control
        self.stalled = False
        self.stalled_streams: frozenset[str] = frozenset()
        self.malformed_pending = 0
        self.delay_s = 0.0
        self.http_status = 0
        self.http_pending = 0
        self.http_path: str | None = None
        self.garbled_pending = 0
        self.garbled_path: str | None = None
        self.malformed_rows_pending = 0
        self.counters: Counter[str] = Counter()
        self.order_faults: list[tuple[str, float, str | None]] = []
        """Pending order-placement faults, oldest first: ``("timeout", hold_s, only)``, ``("unknown", 0, only)``,
        ``("reject_503", 0, only)``, ``("would_trigger", 0, "algo")``, ``("reduce_only_conflict", 0, "reduce_only")``;
        each placement consumes the first whose ``only`` names its kind
        (:data:`PLACEMENTS`; ``None``: any placement)."""
        self.order_fault_listeners: list[Callable[[str, str], None]] = []
        """Called with ``(kind, placement)`` as each order fault is taken: a test waits on it for an order refused."""
        self.hidden_positions: frozenset[str] = frozenset()
        self.hidden_positions_pending = 0
        """The next ``hidden_positions_pending`` positionRisk answers leave ``hidden_positions`` out."""
        self.trades_forgotten_until_ms = 0
        """``GET /fapi/v1/userTrades`` answers no execution at or before this time (:meth:`forget_trades`)."""
        self.listen_key_expirer: Callable[[str | None], int] | None = None
        """Installed by the emulator: expires a listenKey (``expire_listen_key``)."""

    def drop_all(self, code: int = 1006) -> int:
        """Cut every WebSocket connection without a close frame (the client sees 1006)."""
        if code != 1006:
            return self.close_all(code)
        n = self._control.drop_all()
        self.counters["drops"] += n
        return n

    def close_all(self, code: int = 1001, reason: str = "") -> int:
        """Close every WebSocket connection with a close frame (1001 going away, 1008 policy)."""
        n = self._control.close_all(code, reason or ("going away" if code == 1001 else "Too many requests"))
        self.counters[f"closes_{code}"] += n
        return n

    def stall(self, on: bool = True, streams: Iterable[str] | None = None) -> None:
        """Keep sockets open but send nothing; the replay goes on, so resuming leaves a gap.

        With ``streams``, only connections subscribed to one of them stall (one shard, say).
        """
        if streams is not None:
            chosen = frozenset(streams)
            if on and not chosen <= self.stalled_streams:
                self.counters["stalls"] += 1
            self.stalled_streams = self.stalled_streams | chosen if on else self.stalled_streams - chosen
            return
        if on and not self.stalled:
            self.counters["stalls"] += 1
        self.stalled = on

    def stalls(self, streams: dict[str, None]) -> bool:
        """Whether a connection subscribed to ``streams`` is stalled now."""
        return self.stalled or (bool(self.stalled_streams) and not self.stalled_streams.isdisjoint(streams))

    def malformed(self, n: int = 1) -> None:
        """Make the next ``n`` data frames broken (bad JSON or bad values) instead of the real ones."""
        self.malformed_pending += n

    def delay_ms(self, ms: float) -> None:
        """Deliver every WebSocket frame and REST response ``ms`` late (0 turns it off)."""
        self.delay_s = max(0.0, ms) / 1000.0

    def http_error(self, status: int = 429, count: int = 1, path: str | None = None) -> None:
        """Answer the next ``count`` REST requests (to ``path`` only, when given) with HTTP ``status`` (429, 418,
        503, 403: the WAF's limit, an HTML page, or 400: the exchange refuses the request, ``-1121 Invalid
        symbol.``)."""
        if status not in (429, 418, 503, 403, 400):
            raise ValueError("http_error status must be 429, 418, 503, 403 or 400")
        self.http_status, self.http_pending, self.http_path = status, count, path

    def garbled(self, count: int = 1, path: str | None = None) -> None:
        """Cut the body of the next ``count`` successful REST answers (to ``path`` only, when given) in half: HTTP
        200 with a body that is not JSON, as a truncating proxy would send it."""
        self.garbled_pending, self.garbled_path = count, path

    def take_garbled(self, path: str) -> bool:
        """Whether the successful answer to ``path`` is to be garbled (consumes one)."""
        if self.garbled_pending <= 0 or self.garbled_path not in (None, path):
            return False
        self.garbled_pending -= 1
        self.counters["garbled"] += 1
        return True

    def malformed_rows(self, n: int = 1) -> None:
        """Break ``n`` rows of the next ``/klines`` answer: every other row from the second, cycling through
        :func:`broken_row`'s kinds."""
        self.malformed_rows_pending += n

    def take_malformed_rows(self, rows: list[list[object]]) -> list[list[object]]:
        """``rows``, with the pending malformed rows broken in (consumes them all, whatever fits)."""
        if self.malformed_rows_pending <= 0:
            return rows
        out = list(rows)
        for i in range(1, len(out), 2):
            if self.malformed_rows_pending <= 0:
                break
            out[i] = broken_row(out[i], self.counters["malformed_rows"])
            self.counters["malformed_rows"] += 1
            self.malformed_rows_pending -= 1
        self.malformed_rows_pending = 0
        return out

    def take_http_error(self, path: str = "") -> int | None:
        """The injected status for a request to ``path``, if any (consumes one)."""
        if self.http_pending <= 0 or self.http_path not in (None, path):
            return None
        self.http_pending -= 1
        self.counters[f"http_{self.http_status}"] += 1
        return self.http_status

    def take_malformed(self, frame: bytes) -> bytes:
        """``frame``, or a broken copy of it while malformed frames are pending (consumes one)."""
        if self.malformed_pending <= 0:
            return frame
        self.malformed_pending -= 1
        kind = self.counters["malformed"]
        self.counters["malformed"] += 1
        return broken_frame(frame, kind)

    def order_timeout(self, n: int = 1, hold_s: float = 30.0, only: str | None = None) -> None:
        """The next ``n`` order placements (order / algoOrder; ``only``: of that kind, :data:`PLACEMENTS`) are
        executed but answered ``hold_s`` late.

        Longer than the client's timeout, so the client sees a timeout and must query to learn the outcome.
        """
        self._queue("timeout", float(hold_s), only, n)

    def order_unknown(self, n: int = 1, only: str | None = None) -> None:
        """The next ``n`` placements are executed, then answered HTTP 503 "Unknown error, …" (-1000)."""
        self._queue("unknown", 0.0, only, n)

    def order_reject_503(self, n: int = 1, only: str | None = None) -> None:
        """The next ``n`` placements are NOT executed and answered HTTP 503 "Service Unavailable." (-1001)."""
        self._queue("reject_503", 0.0, only, n)

    def would_trigger(self, n: int = 1) -> None:
        """The next ``n`` algo placements are NOT executed and answered HTTP 400 ``-2021 Order would immediately
        trigger.``: the price ran through the trigger between the client's last look and the matching engine (a
        stop placed right after a fill in a fast market)."""
        self._queue("would_trigger", 0.0, "algo", n)

    def reduce_only_conflict(self, n: int = 1) -> None:
        """The next ``n`` reduce-only placements are NOT executed and answered HTTP 400 ``-2022 ReduceOnly Order is
        rejected.`` although the position is open: Binance's answer when open orders conflict with it."""
        self._queue("reduce_only_conflict", 0.0, "reduce_only", n)

    def _queue(self, kind: str, hold_s: float, only: str | None, n: int) -> None:
        """Queue ``n`` faults of ``kind``; ``n = 0`` drops those of ``kind`` still pending (as ``http_error``'s
        ``count=0`` turns it off)."""
        if only is not None and only not in PLACEMENTS:
            raise ValueError(f"only must be one of {PLACEMENTS}, not {only!r}")
        if n == 0:
            self.order_faults = [f for f in self.order_faults if f[0] != kind]
        self.order_faults += [(kind, hold_s, only)] * n

    def take_order_fault(self, placement: str = "order") -> tuple[str, float] | None:
        """The fault for this order placement of kind ``placement`` (:data:`PLACEMENTS`), if any (consumes the
        first that applies and counts it)."""
        for i, (kind, hold, only) in enumerate(self.order_faults):
            if only is None or only == placement:
                del self.order_faults[i]
                self.counters[f"order_{kind}"] += 1
                for listener in self.order_fault_listeners:
                    listener(kind, placement)
                return kind, hold
        return None

    def expire_listen_key(self, key: str | None = None) -> int:
        """Send ``listenKeyExpired`` to the key's streams (default: the active key) and invalidate it."""
        if self.listen_key_expirer is None:
            raise ValueError("no user-data side to expire a listenKey on")
        self.counters["listen_keys_expired"] += 1
        return self.listen_key_expirer(key)

    def lagging_positions(self, symbols: Iterable[str], n: int = 1) -> None:
        """The next ``n`` ``positionRisk`` answers (v2 and v3) leave out ``symbols``' positions, as an answer that
        lags the matching engine does: a position opened a moment ago is not in it yet."""
        self.hidden_positions, self.hidden_positions_pending = frozenset(symbols), n

    def take_hidden_positions(self) -> frozenset[str]:
        """The symbols this positionRisk answer leaves out (one answer of the ``lagging_positions`` fault)."""
        if self.hidden_positions_pending <= 0:
            return frozenset()
        self.hidden_positions_pending -= 1
        self.counters["lagging_positions"] += 1
        return self.hidden_positions

    def forget_trades(self, until_ms: int) -> None:
        """The account's trade history (``GET /fapi/v1/userTrades``) no longer holds the executions at or before
        ``until_ms``, as Binance's answers only a limited past (a 7-day window per request, a bounded retention):
        what a client then learns of an exit it did not see must come from elsewhere."""
        self.trades_forgotten_until_ms = max(self.trades_forgotten_until_ms, until_ms)

    def apply(self, command: dict[str, Any]) -> Any:
        """Run one admin command ``{"action": name, ...args}``."""
        action = command.get("action")
        args = {k: v for k, v in command.items() if k != "action"}
        shown = {k: ("<listenKey>" if k == "key" and v else v) for k, v in args.items()}  # a key is a credential
        get_logger(component="emulator").info("fault", action=action, **shown)
        if action not in ("drop_all", "close_all", "stall", "malformed", "delay_ms", "http_error", "garbled",
                          "malformed_rows", "order_timeout", "order_unknown", "order_reject_503", "expire_listen_key",
                          "forget_trades", "lagging_positions", "would_trigger",
                          "reduce_only_conflict"):
            raise ValueError(f"unknown fault action {action!r}")
        return getattr(self, str(action))(**args)

    def state(self) -> dict[str, Any]:
        """Switch positions and counters, for ``GET /_emulator/state``."""
        return {
            "stalled": self.stalled,
            "stalled_streams": sorted(self.stalled_streams),
            "malformed_pending": self.malformed_pending,
            "delay_ms": self.delay_s * 1000.0,
            "http_error": {"status": self.http_status, "pending": self.http_pending},
            "garbled_pending": self.garbled_pending,
            "malformed_rows_pending": self.malformed_rows_pending,
            "order_faults": [{"kind": k, "hold_s": h, "only": o} for k, h, o in self.order_faults],
            "counters": dict(self.counters),
        }
