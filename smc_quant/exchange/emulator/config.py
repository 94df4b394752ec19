"""The emulator's settings: one frozen object, built by the caller (tests, CLI) and passed in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from smc_quant.datasets import KLINES_2023_1M


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulator replays, how fast, and the exchange limits it enforces."""

    data_dir: Path
    """The shared data folder (``smc_quant.datasets.data_dir()``)."""
    interval_folder: str = KLINES_2023_1M
    """Kline folder under ``data_dir`` replayed as the ``1m`` stream."""
    speed: float = 1.0
    """1.0 = real time, N = N times faster, 0 = as fast as the clients take it (still in step)."""
    updates_per_candle: int = 3
    """In-candle (``k.x`` false) frames synthesised before each candle's final (``k.x`` true) frame."""
    map_to_exchange_info: bool = False
    """Serve all exchangeInfo symbols, mapping the real series round-robin onto them."""
    symbols: tuple[str, ...] = ()
    """Restrict the served symbols (empty = all)."""
    start_time_ms: int | None = None
    """First replayed minute; default: the first minute where every served series has data, plus
    ``history_minutes``."""
    history_minutes: int = 0
    """With the default start: begin the replay this many minutes later, so that every series has that much
    history to serve over REST before it (the service's bootstrap of a fresh database)."""
    max_minutes: int | None = None
    """Stop the replay after this many minutes (default: when the first served series ends)."""
    start_paused: bool = False
    """Start with the replay clock paused; :meth:`Emulator.resume` starts it."""
    serve_history: bool = True
    """REST klines also return the real candles before the replay start."""
    weight_limit: int = 2400
    """REST request weight per IP per wall-clock minute."""
    ban_after_429s: int = 5
    """Requests answered 429 within one minute after which the IP is banned (HTTP 418)."""
    ban_seconds: float = 120.0
    """How long a ban lasts (wall clock)."""
    ping_interval_s: float = 180.0
    """Server WebSocket ping cadence."""
    pong_timeout_s: float = 600.0
    """Close a connection that has not answered a ping for this long."""
    max_streams_per_connection: int = 200
    """More streams on one connection close it with 1008."""
    max_incoming_per_s: int = 10
    """More incoming messages (text, ping, pong) in one second close the connection with 1008."""
    max_send_buffer_bytes: int = 8 * 1024 * 1024
    """A client whose unsent data exceeds this is dropped (counted as ``slow_client_drops``)."""
    slow_client_timeout_s: float = 10.0
    """At speed 0 the replay waits this long for a lagging client to drain before dropping it."""
    clock: Callable[[], float] = field(default=time.time, compare=False)
    """Wall clock (seconds) for weight windows, bans, order-count windows and listenKey TTLs."""
    api_key: str = "emulator-key"
    """The one account's API key (``X-MBX-APIKEY``)."""
    api_secret: str = field(default="emulator-secret", repr=False)
    """The HMAC-SHA256 secret requests are signed with; never shown in ``repr``."""
    balance: Decimal = Decimal("10000")
    """Starting USDT wallet balance of the simulated account."""
    taker_fee: Decimal = Decimal("0.0005")
    """Taker commission rate (fraction of notional)."""
    maker_fee: Decimal = Decimal("0.0002")
    """Maker commission rate (fraction of notional)."""
    slippage_bps: Decimal = Decimal("1")
    """Adverse slippage of market fills, in basis points of the last price."""
    trigger_ids: Literal["client_algo_id", "exchange"] = "client_algo_id"
    """Client id of the order a stop or target places when it fires: its ``clientAlgoId``, or one the exchange makes
    up (``SimConfig.trigger_ids``; Binance does not say which)."""
    order_limit_10s: int = 300
    """New orders per account per 10 s (``X-MBX-ORDER-COUNT-10S``); beyond it 429 -1015."""
    order_limit_1m: int = 1200
    """New orders per account per minute (``X-MBX-ORDER-COUNT-1M``); beyond it 429 -1015."""
    listen_key_ttl_s: float = 3600.0
    """A listenKey expires this long after its creation or last keepalive (wall clock)."""
    recv_window_max_ms: int = 60000
    """Largest accepted ``recvWindow``; beyond it 400 -1131."""
    funding_rate: Decimal = Decimal("0.0001")
    """Funding rate served on ``!markPrice@arr`` for every symbol (0.01 %, Binance's usual baseline) ..."""
    funding_rates: tuple[tuple[str, Decimal], ...] = ()
    """... except these ``(symbol, rate)`` pairs. Synthetic: the shared data holds no funding history."""
    funding_interval_h: int = 8
    """Funding times are the multiples of this many hours (UTC, market time): ``T`` of the stream."""

    def funding_rate_of(self, symbol: str) -> Decimal:
        """The rate the stream quotes and the account charges for ``symbol``."""
        return next((rate for s, rate in self.funding_rates if s == symbol), self.funding_rate)

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("speed must be >= 0")
        if self.updates_per_candle < 0:
            raise ValueError("updates_per_candle must be >= 0")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ValueError("max_minutes must be >= 0")
        if self.history_minutes < 0:
            raise ValueError("history_minutes must be >= 0")
        if not 1 <= self.funding_interval_h <= 24:
            raise ValueError("funding_interval_h must be in [1, 24]")
