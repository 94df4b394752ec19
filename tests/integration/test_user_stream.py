"""UserDataStream over real sockets: the emulator's listenKey routes and ``/private`` stream, and a local app
that sends malformed frames. Waits are on events (``connected``, ``keepalive_seen``, collected events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.exchange.trade_client import LiveBroker
from smc_quant.exchange.user_stream import LISTEN_KEY_PATH, ListenKeyInvalid, UserDataStream
from smc_quant.orders.broker import AccountEvent, AccountUpdate, OrderRequest, OrderUpdate, StreamExpired
from smc_quant.orders.limiter import OrderLimiter
from smc_quant.orders.signing import RequestSigner

D = Decimal
WAIT_S = 10.0


class Collector:
    """A sink recording events; ``until(pred)`` waits for an event matching ``pred``."""

    def __init__(self) -> None:
        self.events: list[AccountEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: AccountEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, pred: Callable[[AccountEvent], bool]) -> AccountEvent:
        async def scan() -> AccountEvent:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if pred(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), WAIT_S)


async def require_trading_routes(http: aiohttp.ClientSession, em: Emulator) -> None:
    """Skip (naming what is missing) when this emulator build does not serve the signed trading routes yet."""
    async with http.post(f"{em.rest_url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "emulator-key"}) as resp:
        if resp.status == 404:
            pytest.skip("emulator serves no POST /fapi/v1/listenKey, /fapi/v1/order, /private/ws yet "
                        "(trading.py/userdata.py not wired in emulator/server.py)")


@dataclass
class Live:
    em: Emulator
    broker: LiveBroker
    sink: Collector


def _clock() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def live(shared_data: Path, http: aiohttp.ClientSession) -> AsyncIterator[Live]:
    config = EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=("BTCUSDT", "ETHUSDT"))
    async with Emulator(config) as em:
        await require_trading_routes(http, em)
        signer = RequestSigner("emulator-key", "emulator-secret", _clock)
        broker = LiveBroker(http, em.rest_url, signer, governor=WeightGovernor(),
                            limiter=OrderLimiter(sleep=asyncio.sleep, new_event=asyncio.Event),
                            ws_base_url=em.ws_legacy_base, stream_options={"backoff": lambda attempt: 0.05})
        sink = Collector()
        broker.subscribe(sink)
        await broker.start()
        await asyncio.wait_for(broker.stream.connected.wait(), WAIT_S)
        try:
            yield Live(em, broker, sink)
        finally:
            await broker.close()


async def test_connects_with_query_form_and_no_events_filter(live: Live) -> None:
    """One listenKey, one connection on /private/ws?listenKey=… with no events allow-list."""
    stream = live.broker.stream
    key = stream.listen_key
    assert key is not None and live.em.user_data.keys.valid(key)
    conns = list(live.em.user_data.conns.values())
    assert [(c.listen_key, c.events) for c in conns] == [(key, None)]
    assert (stream.connections, stream.listen_keys_created) == (1, 1)
    assert key not in repr(stream) and key not in repr(live.broker)


async def test_events_arrive_for_a_placed_order(live: Live) -> None:
    """A MARKET order's ORDER_TRADE_UPDATE (FILLED, with the fill) and ACCOUNT_UPDATE reach the subscriber."""
    await live.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-us-mkt-en-0"))
    fill = await live.sink.until(lambda e: isinstance(e, OrderUpdate) and e.client_order_id == "smc-us-mkt-en-0"
                                 and e.status == "FILLED")
    assert isinstance(fill, OrderUpdate)
    assert (fill.execution, fill.cum_qty, fill.last_qty) == ("TRADE", D("0.010"), D("0.010"))
    assert fill.last_price > 0 and fill.commission > 0
    account = await live.sink.until(lambda e: isinstance(e, AccountUpdate) and bool(e.positions))
    assert isinstance(account, AccountUpdate) and account.wallet_balance is not None
    order_events = [e for e in live.sink.events if isinstance(e, OrderUpdate)]
    assert [e.event_time_ms for e in order_events] == sorted(e.event_time_ms for e in order_events)
    assert live.broker.stream.malformed == {}


async def test_listen_key_expiry_recreates_the_key_and_reconnects(live: Live) -> None:
    """listenKeyExpired → StreamExpired delivered, a new key POSTed, a new socket; events flow again."""
    stream = live.broker.stream
    old_key = stream.listen_key
    assert live.em.faults.expire_listen_key() == 1
    await live.sink.until(lambda e: isinstance(e, StreamExpired))  # the listenKeyExpired frame
    # the reconnection announces itself with a second StreamExpired, sent once the new socket is open
    await live.sink.until(lambda e: sum(isinstance(x, StreamExpired) for x in live.sink.events) >= 2)
    assert stream.connected.is_set() and stream.connections == 2
    assert stream.listen_key != old_key and stream.listen_keys_created == 2 and stream.expired >= 1
    await live.broker.place_order(OrderRequest("ETHUSDT", "SELL", "MARKET", D("0.100"), "smc-us-exp-en-0"))
    await live.sink.until(lambda e: isinstance(e, OrderUpdate) and e.client_order_id == "smc-us-exp-en-0")


async def test_keepalive_extends_and_minus_1125_is_reported(live: Live) -> None:
    """PUT extends the key's TTL; once the key is gone the PUT answers -1125 → ListenKeyInvalid."""
    stream = live.broker.stream
    key = stream.listen_key
    assert key is not None
    before = live.em.user_data.keys.expiry[key]
    await stream.keepalive()
    assert live.em.user_data.keys.expiry[key] >= before and stream.keepalive_seen.is_set()
    live.em.user_data.keys.forget(key)
    with pytest.raises(ListenKeyInvalid):
        await stream.keepalive()


async def test_periodic_keepalive_and_recreate_after_1125(shared_data: Path, http: aiohttp.ClientSession) -> None:
    """keepalive_s=0.05: PUTs run on their own; when the key vanishes server-side, the -1125 keep-alive closes
    the socket, a new key is created and StreamExpired tells the subscriber to reconcile."""
    config = EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=("BTCUSDT",))
    async with Emulator(config) as em:
        await require_trading_routes(http, em)
        stream = UserDataStream(http, em.rest_url, em.ws_legacy_base, {"X-MBX-APIKEY": "emulator-key"},
                                governor=WeightGovernor(), keepalive_s=0.05, backoff=lambda attempt: 0.05)
        sink = Collector()
        stream.subscribe(sink)
        await stream.start()
        try:
            await asyncio.wait_for(stream.keepalive_seen.wait(), WAIT_S)
            key = stream.listen_key
            assert key is not None and stream.keepalives >= 1
            em.user_data.keys.forget(key)  # gone without a listenKeyExpired frame
            await sink.until(lambda e: isinstance(e, StreamExpired))
            assert stream.listen_key != key and stream.listen_keys_created == 2
            assert stream.connections == 2
        finally:
            await stream.close()
        assert stream.listen_key is None and not em.user_data.keys.active()  # DELETEd on close


async def test_proactive_recycle_before_24h(shared_data: Path, http: aiohttp.ClientSession) -> None:
    """max_connection_s elapsed → the socket is recycled (same key) and StreamExpired is delivered."""
    config = EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=("BTCUSDT",))
    async with Emulator(config) as em:
        await require_trading_routes(http, em)
        stream = UserDataStream(http, em.rest_url, em.ws_legacy_base, {"X-MBX-APIKEY": "emulator-key"},
                                governor=WeightGovernor(), max_connection_s=0.2, backoff=lambda attempt: 0.05)
        sink = Collector()
        stream.subscribe(sink)
        await stream.start()
        try:
            await sink.until(lambda e: isinstance(e, StreamExpired))
            assert stream.connections >= 2 and stream.listen_keys_created == 1
        finally:
            await stream.close()


class ScriptedSleep:
    """The keep-alive loop's waits, driven by the test: each one asked for is recorded and returns once released
    (none passes on its own: the 30-minute period takes no time)."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._released = 0
        self._changed = asyncio.Condition()

    async def __call__(self, seconds: float) -> None:
        async with self._changed:
            self.asked.append(seconds)
            self._changed.notify_all()
            await self._changed.wait_for(lambda: self._released >= len(self.asked))

    async def release(self, n: int) -> None:
        async with self._changed:
            self._released += n
            self._changed.notify_all()

    async def asked_for(self, n: int) -> list[float]:
        """The first ``n`` waits, once the loop asked for them."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.asked) >= n), WAIT_S)
        return self.asked[:n]


@pytest.mark.parametrize(("failures", "waits"), [
    (2, [1800.0, 30.0, 30.0, 1800.0]),
    (7, [1800.0, 30.0, 30.0, 30.0, 30.0, 30.0, 1800.0, 30.0, 1800.0]),
], ids=["blip", "retries_exhausted"])
async def test_a_failed_keepalive_is_retried_soon(shared_data: Path, http: aiohttp.ClientSession, failures: int,
                                                  waits: list[float]) -> None:
    """The emulator answers the next ``failures`` listenKey PUTs 503. A failed keep-alive is tried again 30 s later,
    up to 5 times, then the 30-minute period resumes (and a failure after it is retried the same way): a blip no
    longer leaves the key to the next PUT 30 min on, racing its 60-min expiry (listenKeyExpired, a reconnect and a
    reconciliation). The socket stays up throughout, on its first key."""
    async with Emulator(EmulatorConfig(data_dir=shared_data, speed=1.0, symbols=("BTCUSDT",))) as em:
        await require_trading_routes(http, em)
        sleep = ScriptedSleep()
        stream = UserDataStream(http, em.rest_url, em.ws_legacy_base, {"X-MBX-APIKEY": "emulator-key"},
                                governor=WeightGovernor(), backoff=lambda attempt: 0.05, keepalive_sleep=sleep)
        await stream.start()
        try:
            await asyncio.wait_for(stream.connected.wait(), WAIT_S)
            assert await sleep.asked_for(1) == [1800.0]  # the first PUT waits its period
            em.faults.http_error(503, count=failures, path=LISTEN_KEY_PATH)
            await sleep.release(len(waits) - 1)
            assert await sleep.asked_for(len(waits)) == waits
            assert em.faults.counters["http_503"] == failures and stream.keepalives == 1
            assert (stream.connections, stream.listen_keys_created, stream.expired) == (1, 1, 0)
        finally:
            await stream.close()


# -- a local app for malformed frames ------------------------------------------------------------------------


@pytest.fixture
async def frames_app() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """listenKey routes plus a /private/ws that sends a fixed batch of frames, then closes (1001)."""
    stats = {"connections": 0, "posts": 0}
    good = {"e": "ORDER_TRADE_UPDATE", "E": 2, "T": 2, "o": {
        "s": "BTCUSDT", "c": "smc-local-en-0", "S": "BUY", "o": "MARKET", "f": "GTC", "q": "1", "p": "0",
        "ap": "100", "sp": "0", "x": "TRADE", "X": "FILLED", "i": 1, "l": "1", "z": "1", "L": "100", "n": "0.05",
        "N": "USDT", "T": 2, "t": 9, "m": False, "R": False, "rp": "0"}}
    batch = [b"not json {", orjson.dumps({"e": "TRADE_LITE", "E": 1}), orjson.dumps({"e": "ORDER_TRADE_UPDATE",
             "E": 1, "o": {"s": "BTCUSDT"}}), orjson.dumps(good)]

    async def listen_key(request: web.Request) -> web.Response:
        stats["posts"] += 1
        assert request.headers.get("X-MBX-APIKEY") == "k"
        assert "signature" not in request.rel_url.query_string
        return web.json_response({"listenKey": "local-key"})

    async def private(request: web.Request) -> web.WebSocketResponse:
        stats["connections"] += 1
        assert request.query.get("listenKey") == "local-key" and "events" not in request.query
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in batch:
            await ws.send_str(frame.decode())
        await ws.close(code=1001)
        return ws

    app = web.Application()
    app.add_routes([web.post("/fapi/v1/listenKey", listen_key), web.delete("/fapi/v1/listenKey", listen_key),
                    web.get("/private/ws", private)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", stats
    finally:
        await runner.cleanup()


async def test_malformed_frames_are_counted_and_the_stream_reconnects(
        http: aiohttp.ClientSession, frames_app: tuple[str, dict[str, int]]) -> None:
    """Garbage and a broken ORDER_TRADE_UPDATE are counted, TRADE_LITE ignored, the good frame delivered;
    the server's close leads to a backed-off reconnect announced by StreamExpired."""
    host, stats = frames_app
    stream = UserDataStream(http, f"http://{host}", f"ws://{host}", {"X-MBX-APIKEY": "k"},
                            governor=WeightGovernor(), backoff=lambda attempt: 0.05)
    sink = Collector()
    stream.subscribe(sink)
    await stream.start()
    try:
        await sink.until(lambda e: isinstance(e, StreamExpired))
        first = sink.events[0]
        assert isinstance(first, OrderUpdate) and first.client_order_id == "smc-local-en-0"
        assert stream.malformed["not_json"] >= 1 and stream.malformed["event_malformed"] >= 1
        assert stream.ignored["TRADE_LITE"] >= 1
        assert stats["connections"] >= 2 and stats["posts"] >= 2
    finally:
        await stream.close()


@pytest.mark.parametrize("healthy_s", [0.0, 3600.0], ids=["each_socket_healthy", "each_socket_short"])
async def test_the_reconnect_backoff_starts_over_only_after_a_healthy_socket(
        http: aiohttp.ClientSession, frames_app: tuple[str, dict[str, int]], healthy_s: float) -> None:
    """The local server closes every socket after its frames. Counted as healthy (open ≥ ``healthy_s``), each
    reconnect starts the backoff over (attempt 0 every time: once, an ordinary drop never reset it, so after a
    few drops over days every reconnect waited 30 s); counted as short, the backoff keeps growing."""
    host, _stats = frames_app
    attempts: list[int] = []

    def backoff(attempt: int) -> float:
        attempts.append(attempt)
        return 0.01

    stream = UserDataStream(http, f"http://{host}", f"ws://{host}", {"X-MBX-APIKEY": "k"},
                            governor=WeightGovernor(), backoff=backoff, healthy_s=healthy_s)
    sink = Collector()
    stream.subscribe(sink)
    await stream.start()
    seen: list[AccountEvent] = []
    try:
        for _ in range(3):  # three reconnects, each announced by StreamExpired
            await sink.until(lambda e: isinstance(e, StreamExpired) and e not in seen)
            seen.append(next(e for e in reversed(sink.events) if isinstance(e, StreamExpired)))
    finally:
        await stream.close()
    assert attempts[:3] == ([0, 0, 0] if healthy_s == 0.0 else [0, 1, 2])


async def test_no_secret_signature_or_listen_key_in_logs(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    """A full cycle (order, events, keep-alive) logs paths and client ids only: no secret, signature or key."""
    await live.broker.place_order(OrderRequest("BTCUSDT", "BUY", "MARKET", D("0.010"), "smc-us-log-en-0"))
    await live.sink.until(lambda e: isinstance(e, OrderUpdate) and e.client_order_id == "smc-us-log-en-0")
    await live.broker.stream.keepalive()
    await live.broker.query_order("BTCUSDT", "smc-us-log-en-0")
    out = capsys.readouterr()
    text = out.out + out.err
    key = live.broker.stream.listen_key
    assert key is not None and "smc-us-log-en-0" in text  # the log is captured at all
    for secret in ("emulator-secret", "signature=", key, "timestamp="):
        assert secret not in text
