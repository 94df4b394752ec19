"""HMAC-SHA256 request signing and the server-clock offset (``BINANCE-PROTOCOL.md`` §5).

``signature = hex(HMAC_SHA256(secret, query_string + body))`` over the exact bytes sent, with no
separator between query and body; the signature is appended last to the body when there is one,
else to the query. ``recvWindow`` (≤ 5000 ms) and ``timestamp`` are added by the signer, never by
the caller. The timestamp is the injected clock plus a server offset measured by
:class:`ClockOffset` from ``GET /fapi/v1/time`` midpoints.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from smc_quant.errors import ConfigError

__all__ = [
    "MAX_RECV_WINDOW_MS", "ClockOffset", "OffsetPolicy", "Param", "RequestSigner", "SignedRequest",
    "TimeSample", "encode_params", "hmac_signature",
]

MAX_RECV_WINDOW_MS = 5000
FORM = "application/x-www-form-urlencoded"
SIGNER_OWNED = frozenset({"timestamp", "recvWindow", "signature"})
Param = tuple[str, str | int]


def hmac_signature(secret: bytes, total_params: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``total_params`` (the query string concatenated with the body)."""
    return hmac.new(secret, total_params.encode("utf-8"), hashlib.sha256).hexdigest()


def encode_params(params: Sequence[Param]) -> str:
    """``k=v&…`` in the given order, percent-encoded like the official SDKs; bools are refused (send "true")."""
    for key, value in params:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"parameter {key!r} must be str or int, got {type(value).__name__}")
    return urlencode(params)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What goes on the wire, byte for byte: the query string, the form body (may be empty), the headers.

    Send the query as an already-encoded URL (aiohttp: ``yarl.URL(url, encoded=True)``) and the body
    as these bytes; letting the HTTP library re-encode either would break the signature.
    """

    query: str
    body: str
    headers: Mapping[str, str]


class RequestSigner:
    """Signs requests with one API key; the secret never appears in ``repr``/``str``."""

    __slots__ = ("_api_key", "_clock", "_secret", "recv_window_ms")

    def __init__(self, api_key: str, secret: str, clock: Callable[[], int], *,
                 recv_window_ms: int = MAX_RECV_WINDOW_MS) -> None:
        if not 0 < recv_window_ms <= MAX_RECV_WINDOW_MS:
            raise ConfigError(f"recvWindow must be in 1..{MAX_RECV_WINDOW_MS} ms, got {recv_window_ms}")
        if not api_key or not secret:
            raise ConfigError("the API key and secret must both be set")
        self._api_key = api_key
        self._secret = secret.encode("utf-8")
        self._clock = clock
        self.recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return f"RequestSigner(api_key='{self._api_key[:4]}…', recv_window_ms={self.recv_window_ms})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a RequestSigner holds a secret and cannot be pickled")

    @property
    def headers(self) -> dict[str, str]:
        """The key header, alone: for USER_STREAM calls (listenKey) that need no signature."""
        return {"X-MBX-APIKEY": self._api_key}

    def timestamp(self, offset_ms: int) -> int:
        """The request timestamp: our clock (epoch ms) plus the server offset."""
        return self._clock() + offset_ms

    def sign(self, query: Sequence[Param] = (), body: Sequence[Param] = (), *, offset_ms: int) -> SignedRequest:
        """Add ``recvWindow`` and ``timestamp`` to the body if there is one (else the query), then sign."""
        owned = SIGNER_OWNED.intersection(k for k, _ in (*query, *body))
        if owned:
            raise ValueError(f"the signer sets {sorted(owned)} itself")
        extra: tuple[Param, ...] = (("recvWindow", self.recv_window_ms), ("timestamp", self.timestamp(offset_ms)))
        q, b = (list(query), [*body, *extra]) if body else ([*query, *extra], [])
        query_s, body_s = encode_params(q), encode_params(b)
        sig = "signature=" + hmac_signature(self._secret, query_s + body_s)
        if body_s:
            return SignedRequest(query_s, f"{body_s}&{sig}", {**self.headers, "Content-Type": FORM})
        return SignedRequest(f"{query_s}&{sig}" if query_s else sig, "", self.headers)


@dataclass(frozen=True, slots=True)
class TimeSample:
    """One ``GET /fapi/v1/time`` round trip: our send and receive times around the server's time (ms)."""

    sent_ms: int
    server_ms: int
    received_ms: int

    @property
    def rtt_ms(self) -> int:
        """The round-trip time."""
        return self.received_ms - self.sent_ms

    @property
    def offset_ms(self) -> int:
        """``server − midpoint(send, receive)``: add it to our clock to get the server's."""
        return self.server_ms - (self.sent_ms + self.received_ms) // 2


@dataclass(frozen=True, slots=True)
class OffsetPolicy:
    """When to refresh the offset and which samples to trust."""

    refresh_every_ms: int = 300_000
    """A new round of samples is due this long after the kept one (docs: every 5–10 min)."""
    max_rtt_ms: int = 2_000
    """Samples slower than this are ignored once any sample is known (their midpoint is too vague)."""


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """The current server-clock offset: the lowest-RTT sample of the current round (immutable value)."""

    policy: OffsetPolicy = field(default_factory=OffsetPolicy)
    best: TimeSample | None = None
    stale: bool = False

    @property
    def offset_ms(self) -> int:
        """The offset to add to our clock; 0 before any sample."""
        return self.best.offset_ms if self.best is not None else 0

    def needs_refresh(self, now_ms: int) -> bool:
        """True with no sample, after ``invalidate()`` (-1021/-5028) or once the kept sample is old."""
        return self.best is None or self.stale or now_ms - self.best.received_ms >= self.policy.refresh_every_ms

    def invalidate(self) -> ClockOffset:
        """Mark the offset stale (after -1021): it stays in use until the next sample replaces it."""
        return replace(self, stale=True)

    def add(self, sample: TimeSample) -> ClockOffset:
        """The state after one sample: a new round takes it; within a round, the lower RTT wins."""
        if sample.rtt_ms < 0:
            raise ValueError(f"received before sent: {sample}")
        if self.best is not None and sample.rtt_ms > self.policy.max_rtt_ms:
            return self
        if self.needs_refresh(sample.sent_ms) or self.best is None or sample.rtt_ms < self.best.rtt_ms:
            return replace(self, best=sample, stale=False)
        return self
