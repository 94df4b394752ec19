"""Typed, frozen settings built once at the composition root and passed down.

The user-facing names ``SHARD_COUNT``, ``DATABASE_URL``, ``REDIS_URL``, ``BINANCE_API_KEY`` and
``BINANCE_API_SECRET`` are read as they are; everything else lives under the ``SMC_`` prefix, nested
sections joined with ``__`` (``SMC_FEED__HEARTBEAT_TIMEOUT_S=60``). ``config/.env.example`` documents
every setting; :func:`load_settings` turns a validation error into one line naming the variable.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from smc_quant.errors import ConfigError

ENV_PREFIX = "SMC_"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class VenueSettings(_Section):
    """Where the exchange lives. Defaults are Binance USDT-M mainnet (2026 routed WebSocket URLs)."""

    rest_base: str = "https://fapi.binance.com"
    """REST base URL (``/fapi/v1/...`` is appended)."""
    ws_public_base: str = "wss://fstream.binance.com/public"
    """High-frequency public streams route (bookTicker, depth)."""
    ws_market_base: str = "wss://fstream.binance.com/market"
    """Regular market streams route (klines, mark price, tickers)."""
    ws_private_base: str = "wss://fstream.binance.com/private"
    """User-data stream route (listenKey)."""
    ws_api_base: str = "wss://ws-fapi.binance.com/ws-fapi/v1"
    """WebSocket API (orders over WS)."""
    request_timeout_s: PositiveFloat = 10.0
    """Timeout of one REST request."""
    weight_limit_per_minute: PositiveInt = 2400
    """REQUEST_WEIGHT limit per minute (exchangeInfo's rateLimits override it when known)."""
    weight_headroom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.10
    """Fraction of the weight limit never used (kept for other clients and surprises)."""


class UniverseSettings(_Section):
    """Which instruments are traded."""

    quote_assets: tuple[str, ...] = ("USDT",)
    """Quote assets admitted (USDT perpetuals by default)."""
    contract_types: tuple[str, ...] = ("PERPETUAL",)
    """Contract types admitted."""
    symbols: tuple[str, ...] = ()
    """Explicit symbol list; empty means the whole filtered universe."""
    max_symbols: Annotated[int, Field(ge=0)] = 0
    """Keep at most this many symbols (0 = no cap)."""
    refresh_s: PositiveFloat = 3600.0
    """How often exchangeInfo is re-read and followed without a restart: a new listing joins its shard, a removed
    symbol stops counting for /health, changed filters and scheduled delistings apply at once."""


class FeedSettings(_Section):
    """The per-shard WebSocket feed."""

    interval: Literal["1m", "3m", "5m", "15m", "1h"] = "1m"
    """Kline interval subscribed to."""
    streams_per_connection: Annotated[int, Field(ge=1, le=200)] = 200
    """Streams per combined-stream connection (Binance documents 1024; we stay at or under 200)."""
    control_messages_per_s: Annotated[float, Field(gt=0.0, le=10.0)] = 4.0
    """SUBSCRIBE/LIST messages per second per connection (Binance closes with 1008 above 10/s)."""
    queue_size: PositiveInt = 65_536
    """Bound of the frame queue between the socket reader and the workers (overflow is counted)."""
    workers: PositiveInt = 2
    """Consumer tasks draining the frame queue."""
    heartbeat_timeout_s: PositiveFloat = 60.0
    """No data for this long recycles the connection (also catches a wrong route)."""
    max_connection_age_s: PositiveFloat = 23 * 3600.0
    """Proactive reconnect before Binance's 24 h cut."""
    backoff_initial_s: PositiveFloat = 0.5
    """First reconnect delay; doubles with jitter up to ``backoff_max_s``; starts over after a socket on which data
    flowed for at least ``backoff_max_s``."""
    backoff_max_s: PositiveFloat = 30.0
    """Largest reconnect delay."""
    ring_size: PositiveInt = 4320
    """Closed 1m candles kept per symbol in memory (higher timeframes keep proportionally); the engine warms from
    them at start: 3 days give the 1h structure its trend (1500 left it unknown for hours after a restart)."""
    flush_interval_s: PositiveFloat = 0.5
    """Longest time a closed candle waits before the batched upsert to PostgreSQL."""
    flush_batch: PositiveInt = 2000
    """Flush as soon as this many candles are pending."""
    warm_start_candles: PositiveInt = 4320
    """Candles per symbol loaded from PostgreSQL at start (3 days: see ring_size); the gap after them is
    backfilled over REST."""
    bootstrap_candles: Annotated[int, Field(ge=0)] = 1500
    """A symbol with no stored candles (fresh database, new listing) fetches up to this many over REST before
    its first live one, so its engine and the learner's cold start have history (0: start empty)."""
    retention_days: Annotated[float, Field(ge=0.0)] = 90.0
    """Stored candles older than this (before the newest one, or the clock if earlier) are deleted hourly,
    ~85 MB a day at 323 symbols; never less than what the learner reads (history_days + min_history_candles)
    and the warm start (0: keep all)."""
    backfill_limit: Annotated[int, Field(ge=1, le=1500)] = 1000
    """Rows per REST /klines request during backfill (1000 costs weight 5)."""
    backfill_attempts: PositiveInt = 120
    """Fetches of one gap, with the reconnect backoff between them (about an hour at the 30 s cap: a REST outage
    that long is waited out with the symbol held, its data kept whole), before it is given up: its held candles
    are released and the missing minutes counted and logged (a refusal by the exchange, 4xx, gives up at once)."""


class OpsSettings(_Section):
    """The health/metrics endpoint."""

    host: str = "127.0.0.1"
    """Bind address of /health, /ready and /metrics."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """Port (0 picks a free one)."""
    freshness_grace_s: PositiveFloat = 30.0
    """A symbol is fresh while its last final candle closed within interval + this grace."""
    fresh_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99
    """A shard is healthy while at least this fraction of its symbols is fresh (one stale symbol is tolerated in a
    shard of two or more)."""
    freshness_window_s: PositiveFloat | None = None
    """Override of interval + grace (replay at N× speed, tests); unset in production."""


class TradingSettings(_Section):
    """Strategy, risk and order rules (docs/strategy.md explains each)."""

    enabled: bool = True
    """Turn signals into orders (False: signals are recorded, nothing is sent)."""
    min_confidence: Annotated[float, Field(ge=0.5, le=1.0)] = 0.55
    """Smallest model P(win) that produces a signal."""
    risk_per_trade_pct: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    """Equity risked per trade at confidence 0.75 (scaled by (confidence − 0.5) × 4; hard cap 2 %)."""
    max_positions: Annotated[int, Field(ge=1, le=10)] = 3
    """Open positions at most (a stronger signal may rotate out the weakest one in profit)."""
    max_correlation: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    """Refuse a signal when its symbol's 1m returns correlate this much with an open position's in the same
    direction (one bet taken twice); 1 refuses only identical moves."""
    correlation_minutes: Annotated[int, Field(ge=30, le=1440)] = 120
    """Window of 1m returns for that correlation (at least half of them present for both symbols)."""
    max_funding_pct: Annotated[float, Field(ge=0.0, le=100.0)] = 0.05
    """Refuse an entry whose hold window contains the next funding time when its side would pay more than this
    % of notional there (longs pay a positive rate, shorts a negative one; docs/strategy.md, "Funding")."""
    funding_stream: bool = True
    """Keep the funding rates from the ``!markPrice@arr`` stream (off: the funding guard never applies)."""
    funding_max_age_s: Annotated[float, Field(gt=0.0)] = 120.0
    """A symbol's funding quote not refreshed for this long (the stream pushes every 3 s) is unknown: no refusal."""
    max_open_risk_pct: Annotated[float, Field(gt=0.0, le=100.0)] = 5.0
    """What all open positions, a new one included, would lose if every stop filled at once, as % of equity at
    most (a new entry is shrunk to fit, or refused); the default equals the daily loss limit."""
    max_position_margin_pct: Annotated[float, Field(gt=0.0, le=100.0)] = 10.0
    """Margin of one position as % of equity, at most."""
    max_total_margin_pct: Annotated[float, Field(gt=0.0, le=100.0)] = 50.0
    """Margin of all positions as % of equity, at most."""
    max_leverage: Annotated[int, Field(ge=1, le=125)] = 10
    """Highest leverage used (the symbol's brackets may allow less)."""
    max_hold_s: PositiveFloat = 7200.0
    """Forced exit after this long in a position (2 hours)."""
    delisting_exit_s: Annotated[float, Field(ge=0.0)] = 1800.0
    """An open position on a symbol the exchange will delist is closed this long before the delisting time (it
    would otherwise be settled by the exchange at its delivery price, out of our control)."""
    exit_check_interval_s: Annotated[float, Field(gt=0.0, le=60.0)] = 15.0
    """How often the forced-exit clock is checked (at most every 60 s)."""
    max_signal_age_s: Annotated[float, Field(ge=0.0)] = 120.0
    """A signal whose candle closed longer ago than this is skipped (`stale_signal`): one held up by an executor
    restart or a Redis outage is not entered on a setup minutes old (0: off). Live measures it on the wall clock,
    paper on the newest candle close seen; a replay does not apply it (its market time runs N× faster)."""
    daily_loss_limit_pct: Annotated[float, Field(gt=0.0, le=100.0)] = 5.0
    """Loss today (UTC) as % of the day's starting equity that stops new entries."""
    max_drawdown_pct: Annotated[float, Field(ge=0.0, le=100.0)] = 15.0
    """Equity this far (%) below its peak halts trading and closes every position until `smc-quant resume`
    (measured on the trades' net PnL and the funding since the account's start or the resume after the last such
    halt; 0: off)."""
    cooldown_after_stop_s: Annotated[float, Field(ge=0.0)] = 1800.0
    """No new entry on a symbol for this long after a stop-loss there."""
    entry_type: Literal["MARKET", "LIMIT"] = "MARKET"
    """Entry order type (LIMIT needs an exchange: live, or replay with keys on the emulator; paper and backtests
    fill MARKET only)."""
    margin_type: Literal["CROSSED", "ISOLATED"] = "CROSSED"
    """Margin type asserted for the symbol before every entry."""
    reconcile_interval_s: PositiveFloat = 180.0
    """Orders, positions and balance are reconciled against REST this often (and at start)."""
    recv_window_ms: Annotated[int, Field(ge=1, le=5000)] = 5000
    """recvWindow of signed requests."""
    order_timeout_s: PositiveFloat = 5.0
    """Timeout of one order request; afterwards the order is queried before anything is re-sent."""
    listen_key_keepalive_s: Annotated[float, Field(gt=0.0, le=3000.0)] = 1800.0
    """User-data stream keep-alive period (the key lives 60 min)."""
    paper_balance: PositiveFloat = 10_000.0
    """Starting USDT balance of the paper account."""
    taker_fee_pct: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Taker fee (%) of simulated fills, labels and reports (live, the account's own rate, read at start, estimates
    the fees the exchange does not report)."""
    slippage_bps: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    """Slippage of simulated market fills, basis points."""
    paper_price_path: Literal["ohlc", "close"] = "ohlc"
    """Paper fills follow each closed bar's path (open, nearer extreme, other extreme, close) or its close only."""


def _blank_is_unset(value: Any) -> Any:
    """An empty (or blank) secret is no secret: ``BINANCE_API_KEY=`` — what compose passes when the variable is
    unset — means no key, not a key that every signed request would then be refused with."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if isinstance(raw, str) and not raw.strip() else value


class NotifySettings(_Section):
    """Discord and Telegram notifications (unset = off). Secrets are never logged."""

    discord_webhook_url: SecretStr | None = None
    """Discord webhook URL."""
    telegram_token: SecretStr | None = None
    """Telegram bot token."""
    telegram_chat_id: str | None = None
    """Telegram chat id messages go to."""
    telegram_api_base: str = "https://api.telegram.org"
    """Telegram Bot API base URL."""
    min_interval_s: Annotated[float, Field(ge=1.0)] = 1.0
    """Seconds between two messages on one channel (at least 1)."""

    @model_validator(mode="after")
    def _telegram_pair(self) -> NotifySettings:
        """A Telegram token without a chat id (or the reverse) would leave the channel silently off."""
        if (self.telegram_token is None) != (self.telegram_chat_id is None):
            given, missing = (("telegram_token", "telegram_chat_id") if self.telegram_chat_id is None
                              else ("telegram_chat_id", "telegram_token"))
            raise ValueError(f"{given} is set but {missing} is not: Telegram needs both (or neither)")
        return self

    @field_validator("discord_webhook_url", "telegram_token", "telegram_chat_id", mode="before")
    @classmethod
    def _blank_secrets(cls, value: Any) -> Any:
        return _blank_is_unset(value)


class LearnerSettings(_Section):
    """The self-learning loop (docs/learning.md)."""

    enabled: bool = True
    """Retrain from closed trades and promote better models."""
    retrain_every_trades: PositiveInt = 50
    """Retrain after this many closed trades."""
    retrain_interval_s: PositiveFloat = 86_400.0
    """Retrain on this schedule as well (counted from the newest registered model: a restart keeps it)."""
    promote_margin: Annotated[float, Field(ge=0.0, le=0.5)] = 0.01
    """AUC a challenger must gain over the champion on the latest out-of-sample window."""
    promote_z: Annotated[float, Field(ge=0.0, lt=10.0)] = 1.645
    """Challenger AUC − q·SE must exceed 0.5 (SE over 2-hour blocks, q: t quantile at this z's level; 0: off)."""
    promote_paired_z: Annotated[float, Field(ge=0.0, lt=10.0)] = 1.645
    """Challenger's AUC gain over the champion − q·SE must exceed 0 (paired on the same rows, SE over 2-hour
    blocks; 0: the margin alone)."""
    history_days: PositiveFloat = 7.0
    """Stored 1m candles (per symbol, most recent) labelled as history for each retrain."""
    min_history_candles: Annotated[int, Field(ge=0)] = 4320
    """A history row is labelled only with this many candles before it (fetched in addition to history_days, to
    warm the features up): the live engine warms up on feed.warm_start_candles (keep them equal), and with less
    history the 1h trend and the sweeps read differently (docs/learning.md). A fresh deployment therefore learns
    once it has stored this plus some labelled history (raise feed.bootstrap_candles, or lower this, to start
    sooner; 0: label from the first candle)."""
    cold_start: bool = True
    """With no champion, train one from the stored history at start (in a worker thread)."""
    keep_candidates: Annotated[int, Field(ge=0)] = 50
    """Newest never-promoted candidate models kept; older ones are deleted hourly (champions stay; 0: keep all)."""
    keep_retired: Annotated[int, Field(ge=0)] = 20
    """Retired champions kept for rollback (the most recently promoted); older ones are deleted hourly (0: keep
    all)."""
    idle_retry_s: PositiveFloat = 300.0
    """With no champion (not trading), the next round comes after this rather than retrain_interval_s (doubling
    with each such round in a row, up to retrain_interval_s)."""


class ClusterSettings(_Section):
    """Multi-process mode (``smc-quant shard`` workers + one ``smc-quant executor`` over Redis; docs/scaling.md)."""

    key_prefix: str = "smc"
    """Prefix of every Redis key of this deployment (two deployments may share one Redis)."""
    lease_ttl_s: Annotated[float, Field(ge=0.2)] = 15.0
    """A shard lease expires this long after its worker's last renewal (a dead worker's shards move then)."""
    lease_renew_s: PositiveFloat = 5.0
    """How often a worker renews its leases and re-reads the live workers (well under the TTL)."""
    signal_buffer: PositiveInt = 10_000
    """Signals a worker keeps while Redis is down; beyond it the oldest is dropped (counted)."""
    stream_maxlen: PositiveInt = 100_000
    """Approximate cap of the signal stream's length."""
    claim_idle_s: PositiveFloat = 30.0
    """The executor claims signals another consumer left unacknowledged this long (XAUTOCLAIM)."""
    consumer_name: str = "executor"
    """The executor's consumer name in the group (stable across restarts: its pending entries are re-read)."""
    heartbeat_s: PositiveFloat = 900.0
    """Interval of the heartbeat log line (throughput, lag, positions, PnL, model version)."""
    watchdog_stall_s: PositiveFloat = 10.0
    """Log (with the loop's stack) when the event loop has not ticked for this long."""
    max_task_restarts: PositiveInt = 5
    """A supervised task crashing more often than this within crash_window_s ends the process non-zero."""
    crash_limit: PositiveInt = 3
    """More crashed runs than this within crash_window_s delay the next start by crash_delay_s."""
    crash_window_s: PositiveFloat = 300.0
    """Window of the crash counts above."""
    crash_delay_s: Annotated[float, Field(ge=0.0)] = 60.0
    """Start delay after a crash loop."""
    shutdown_timeout_s: PositiveFloat = 25.0
    """Graceful shutdown budget on SIGTERM/SIGINT, every command (drain, flush, close), under Docker's 30 s
    stop_grace_period: the executor's drains (exits and entries under way, trade writes) get up to 2 × 8 s, the
    candle flush a fifth (then `candles_unsaved`, backfilled at the next start)."""


class Settings(BaseSettings):
    """Every setting of the service. Build it once with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    shard_count: PositiveInt = Field(1, validation_alias=AliasChoices("SHARD_COUNT", "SMC_SHARD_COUNT"))
    """Number of shards the universe is split into."""
    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL", "SMC_DATABASE_URL"))
    """PostgreSQL DSN; unset starts an embedded PostgreSQL under ``state_dir``."""
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "SMC_REDIS_URL"))
    """Redis URL; optional in single-process mode."""
    binance_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("BINANCE_API_KEY", "SMC_BINANCE_API_KEY"))
    """API key (only trading needs it)."""
    binance_api_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("BINANCE_API_SECRET", "SMC_BINANCE_API_SECRET"))
    """API secret (only trading needs it)."""
    mode: Literal["live", "paper", "replay"] = "paper"
    """live: real orders; paper: live data, simulated fills; replay: against the emulator."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    """Lowest level logged (a heartbeat line at WARNING proves liveness every cluster.heartbeat_s)."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """auto: JSON when stderr is not a TTY, readable console otherwise."""
    state_dir: Path = Field(default_factory=lambda: _default_state_dir())
    """Where the embedded PostgreSQL keeps its data and other local state lives."""
    venue: VenueSettings = VenueSettings()
    """Exchange endpoints and REST budget."""
    universe: UniverseSettings = UniverseSettings()
    """Instrument selection."""
    feed: FeedSettings = FeedSettings()
    """WebSocket feed, queues, candle store."""
    ops: OpsSettings = OpsSettings()
    """Health and metrics endpoint."""
    trading: TradingSettings = TradingSettings()
    """Strategy, risk and orders."""
    notify: NotifySettings = NotifySettings()
    """Notifications."""
    learner: LearnerSettings = LearnerSettings()
    """Self-learning loop."""
    cluster: ClusterSettings = ClusterSettings()
    """Multi-process shards over Redis."""

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        rule = "must be a postgresql://user@host:port/dbname URL"
        parts = urlsplit(value)
        if parts.scheme not in ("postgres", "postgresql") or not (parts.hostname or "host=" in parts.query):
            raise ValueError(rule)
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError(rule) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://host:port/db URL")
        return value

    @field_validator("binance_api_key", "binance_api_secret", mode="before")
    @classmethod
    def _blank_keys(cls, value: Any) -> Any:
        return _blank_is_unset(value)

    @model_validator(mode="after")
    def _check_venue(self) -> Settings:
        """One exchange environment per process, and replay never signs orders for a real Binance host."""
        v = self.venue
        urls = {"SMC_VENUE__REST_BASE": v.rest_base, "SMC_VENUE__WS_PUBLIC_BASE": v.ws_public_base,
                "SMC_VENUE__WS_MARKET_BASE": v.ws_market_base, "SMC_VENUE__WS_PRIVATE_BASE": v.ws_private_base}
        # (ws_api_base is not used yet: a testnet set up before it existed leaves it at the mainnet default)
        envs = {name: binance_environment(url) for name, url in urls.items()}
        if {"mainnet", "testnet"} <= set(envs.values()):
            mixed = ", ".join(f"{name} ({env})" for name, env in envs.items() if env is not None)
            raise ValueError(f"venue URLs mix Binance mainnet and testnet: {mixed}; prices from one and orders to "
                             "the other would be sized and stopped wrongly")
        keys = self.binance_api_key is not None and self.binance_api_secret is not None
        real = [name for name in ("SMC_VENUE__REST_BASE", "SMC_VENUE__WS_PRIVATE_BASE") if envs[name] is not None]
        if self.mode == "replay" and keys and real:
            raise ValueError(f"SMC_MODE=replay with API keys would send signed orders to Binance ({real[0]} is "
                             f"{urls[real[0]]}); replay is for the emulator — set its venue URLs, or use "
                             "SMC_MODE=live to trade on Binance")
        if self.trading.entry_type == "LIMIT" and not (keys and self.mode in ("live", "replay")):
            raise ValueError("SMC_TRADING__ENTRY_TYPE=LIMIT needs an exchange (SMC_MODE=live, or replay with keys on "
                             "the emulator): the paper account sees one price per closed minute, so a LIMIT entry "
                             "would rest unfilled through the order manager's wait and be cancelled — no trades")
        return self

    def __repr_args__(self) -> Any:
        """As pydantic's, with the passwords of the database and Redis URLs masked (the keys are SecretStr)."""
        for name, value in super().__repr_args__():
            yield name, (masked_url(value) if name in ("database_url", "redis_url") and value else value)


def binance_environment(url: str) -> Literal["mainnet", "testnet"] | None:
    """Which Binance environment ``url``'s host belongs to; ``None`` for any other host (the emulator, a proxy)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "binancefuture.com" or host.endswith(".binancefuture.com"):
        return "testnet"
    if host == "binance.com" or host.endswith(".binance.com"):
        return "testnet" if host.startswith(("demo-", "testnet.")) else "mainnet"  # demo-fapi.binance.com
    return None


def masked_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` — in the user part or as a parameter whose name ends in
    ``password`` (``postgresql://smc@db/smc?password=…``, libpq's ``sslpassword=`` for the client key)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = re.sub(r"(?i)(^|&)([^&=]*password=)[^&]*", r"\1\2***", parts.query)
    return parts._replace(query=query).geturl()


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "smc-quant"


def _env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable a validation error location refers to."""
    head = str(loc[0]) if loc else "?"
    aliases = {"shard_count": "SHARD_COUNT", "database_url": "DATABASE_URL", "redis_url": "REDIS_URL",
               "binance_api_key": "BINANCE_API_KEY", "binance_api_secret": "BINANCE_API_SECRET"}
    if head.upper() in aliases.values():
        return head.upper()
    if head.startswith(ENV_PREFIX):
        return head
    if head in aliases:
        return aliases[head]
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


OTHER_ENV = ("SMC_DATA_DIR", "SMC_MIGRATIONS_DIR", "SMC_EMULATOR_", "SMC_TEST_", "SMC_CREDIT")
"""``SMC_`` variables that are not settings but are read elsewhere (the data folder, the migrations folder, the
emulator's command, the test suite's servers, the reference SMC library's banner switch): names, or prefixes
ending in ``_``."""


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """The ``SMC_*`` variables of ``environ`` that name no setting — each with the closest real name when there
    is one. Pydantic forbids an unknown name inside a section, but a misspelt section, a single ``_`` for ``__``
    or a misspelt top-level name would be ignored and leave its setting (a risk limit) at the default."""
    known = {env for env, _, _ in settings_reference() if env.startswith(ENV_PREFIX)}
    known |= {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}  # SMC_SHARD_COUNT, SMC_TRADING
    found = []
    for raw in environ:
        name = raw.upper()
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if any(name == o or (o.endswith("_") and name.startswith(o)) for o in OTHER_ENV):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        found.append(f"{raw} (did you mean {close[0]}?)" if close else raw)
    return sorted(found)


def _undecodable_env(exc: SettingsError) -> ConfigError:
    """The one-line error for a variable pydantic-settings could not decode as JSON — a whole section
    (``SMC_NOTIFY='{…'``) or a list setting (``SMC_UNIVERSE__SYMBOLS=BTCUSDT``) — naming it, never its value (a
    section may hold a token; the JSON error says where it broke, not what it read)."""
    cause = exc.__cause__
    where = (f" ({cause.msg}: line {cause.lineno} column {cause.colno})" if isinstance(cause, json.JSONDecodeError)
             else "")
    found = re.search(r'field "([^"]+)"', str(exc))
    if found is None or found.group(1) not in Settings.model_fields:
        return ConfigError(f"invalid settings: a variable is not valid JSON{where}")
    field = found.group(1)
    section, model = _env_name((field,)), Settings.model_fields[field].annotation

    def decoded(name: str) -> bool:  # what pydantic-settings reads as JSON: the section, its list settings
        if name == section:
            return True
        if not (name.startswith(section + "__") and isinstance(model, type) and issubclass(model, BaseModel)):
            return False
        sub = model.model_fields.get(name.removeprefix(section + "__").lower())
        return sub is not None and get_origin(sub.annotation) in (tuple, list, dict, set, frozenset)

    names = []
    for raw, value in os.environ.items():
        if decoded(raw.upper()):
            try:
                json.loads(value)
            except ValueError:
                names.append(raw)
    return ConfigError(f"invalid setting {', '.join(sorted(names)) or section}: not valid JSON{where}; sections and "
                       "lists are written as JSON (config/.env.example)")


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and ``overrides``); raise ``ConfigError`` in one line — for an
    invalid value, and for an ``SMC_*`` variable that names no setting (:func:`unknown_env`)."""
    unknown = unknown_env(os.environ)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}: not a setting of smc-quant (config/.env.example lists "
                          "them all)" + (f"; also {', '.join(unknown[1:])}" if len(unknown) > 1 else ""))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise _undecodable_env(exc) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        rule = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule over several settings
            raise ConfigError(f"invalid settings: {rule}") from None
        name = _env_name(tuple(first["loc"]))
        raise ConfigError(f"invalid setting {name}: {rule}") from None


def settings_reference() -> list[tuple[str, str, str]]:
    """``(environment variable, default, description)`` for every setting, in declaration order."""
    rows: list[tuple[str, str, str]] = []

    def one_line(doc: str | None) -> str:  # a docstring wrapped in the source is one line in .env / README
        return " ".join((doc or "").split())

    user_facing = {"shard_count": "SHARD_COUNT", "database_url": "DATABASE_URL", "redis_url": "REDIS_URL",
                   "binance_api_key": "BINANCE_API_KEY", "binance_api_secret": "BINANCE_API_SECRET"}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub, subfield in annotation.model_fields.items():
                default = subfield.get_default(call_default_factory=True)
                rows.append((f"{ENV_PREFIX}{name.upper()}__{sub.upper()}", _render(default),
                             one_line(subfield.description)))
            continue
        env = user_facing.get(name, ENV_PREFIX + name.upper())
        default = (
            "~/.local/state/smc-quant" if name == "state_dir"
            else _render(field.get_default(call_default_factory=True))
        )
        rows.append((env, default, one_line(field.description)))
    return rows


def _render(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "[" + ",".join(f'"{v}"' for v in value) + "]" if value else "[]"
    return str(value)


def render_env_example() -> str:
    """The text of ``config/.env.example``: every setting with its default, commented out."""
    lines = ["# smc-quant settings. Every variable is optional; the value shown is the default.",
             "# Nested sections use SMC_<SECTION>__<NAME>. Generated from smc_quant/settings.py", ""]
    for env, default, doc in settings_reference():
        lines.append(f"# {doc}")
        lines.append(f"# {env}={default}")
    return "\n".join(lines) + "\n"
