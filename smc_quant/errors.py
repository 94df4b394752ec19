"""Exceptions, grouped by the reaction they require.

::

    SmcError                      base of everything we raise on purpose
    ├── ConfigError               bad settings: print one line, exit 2
    ├── TemporaryError            retry with backoff (network hiccup, 5xx, timeouts)
    │   └── RateLimited           back off until ``retry_at`` (HTTP 429 / 418)
    ├── VenueRejected             the exchange said no to this request: drop it, log, continue
    ├── DataRejected              one bad input (frame, candle, row): count it by reason, continue
    └── OperationalError          something is structurally wrong: stop the component, alert

Exactly one place per loop applies the policy (the feed's connection loop, the REST client's
request loop); everything else just raises.
"""

from __future__ import annotations


class SmcError(Exception):
    """Base class of all errors raised on purpose by smc-quant."""


class ConfigError(SmcError):
    """Invalid configuration; the message names the variable and the rule."""


class TemporaryError(SmcError):
    """A transient failure; the caller retries with backoff."""


class RateLimited(TemporaryError):
    """The exchange throttled us (HTTP 429) or banned the IP (HTTP 418) until ``retry_at_ms``.

    ``retry_at_ms`` is on the clock of whoever raised it (the weight governor's or the order limiter's: the wall
    clock in the service); ``now_ms``, on the same clock when given, makes :attr:`wait_s` — what a caller on another
    clock (the order path runs on the market clock, years behind in a replay) must wait."""

    def __init__(self, message: str, *, status: int, retry_at_ms: int, now_ms: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_at_ms = retry_at_ms
        self.wait_s = None if now_ms is None else max(0.0, (retry_at_ms - now_ms) / 1000)


class VenueRejected(SmcError):
    """The exchange rejected a request with an error code; retrying it unchanged is pointless."""

    def __init__(self, message: str, *, status: int, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DataRejected(SmcError):
    """One input was rejected by the data firewall; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class OperationalError(SmcError):
    """A structural failure (schema mismatch, unusable endpoint): stop and alert."""
