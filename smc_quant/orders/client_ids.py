"""Our own ``newClientOrderId`` / ``clientAlgoId``: deterministic, short, and recognisable.

Scheme: ``<prefix>-<digest>-<leg>-<attempt>``, e.g. ``smc-3f9a0c1b2d4e5f60718a-en-0`` (≤ 34 chars),
where ``digest`` is 20 hex chars (80 bits) of BLAKE2b over the signal id. The same (signal, leg,
attempt) always gives the same id, so a resend after a timeout carries the id of the first try.

Binance only enforces uniqueness **among open orders** (``BINANCE-PROTOCOL.md`` §3.3): a filled
order's id can be reused, so the id alone does not make a resend safe. After a timeout or a 503
"unknown" the order is queried by ``origClientOrderId`` first; ``attempt`` is raised only once the
previous order is known to be dead (rejected, expired, cancelled, or absent on query).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CLIENT_ID_RE", "ClientIdParts", "Leg", "client_order_id", "parse_client_order_id", "same_signal", "signal_digest",
]

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
"""Binance's rule for ``newClientOrderId`` and ``clientAlgoId``."""
MAX_ATTEMPT = 999
DIGEST_HEX = 20
_PREFIX_RE = re.compile(r"^[A-Za-z0-9]{1,6}$")
RESERVED_PREFIXES = ("autoclose", "adl_autoclose", "settlement_autoclose")
"""Binance marks liquidation / ADL / settlement orders with these; ours must never look like them."""


class Leg(StrEnum):
    """Which order of a trade an id belongs to (two letters on the wire)."""

    ENTRY = "en"
    STOP_LOSS = "sl"
    TAKE_PROFIT = "tp"
    EXIT = "ex"


_LEG_CODES = frozenset(leg.value for leg in Leg)


@dataclass(frozen=True, slots=True)
class ClientIdParts:
    """An id of ours, taken apart."""

    prefix: str
    digest: str
    leg: Leg
    attempt: int


def signal_digest(signal_id: str) -> str:
    """The 20-hex-char BLAKE2b digest of a signal id (80 bits: collisions are not a practical concern)."""
    return hashlib.blake2b(signal_id.encode("utf-8"), digest_size=DIGEST_HEX // 2).hexdigest()


def client_order_id(signal_id: str, leg: Leg, attempt: int = 0, *, prefix: str = "smc") -> str:
    """The id of one leg of one signal at one attempt; always the same for the same inputs."""
    if not signal_id:
        raise ValueError("signal id must not be empty")
    if not 0 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"attempt must be in 0..{MAX_ATTEMPT}, got {attempt}")
    if not _PREFIX_RE.match(prefix) or prefix.lower().startswith(RESERVED_PREFIXES):
        raise ValueError(f"prefix must be 1-6 letters/digits and not Binance's own, got {prefix!r}")
    cid = f"{prefix}-{signal_digest(signal_id)}-{Leg(leg).value}-{attempt}"
    assert CLIENT_ID_RE.match(cid), cid
    return cid


def parse_client_order_id(cid: str, *, prefix: str = "smc") -> ClientIdParts | None:
    """The parts of one of our ids, or ``None`` for anything else (manual orders, ``autoclose-…``)."""
    parts = cid.split("-")
    if len(parts) != 4 or parts[0] != prefix:
        return None
    _, digest, leg, attempt = parts
    if len(digest) != DIGEST_HEX or not all(c in "0123456789abcdef" for c in digest):
        return None
    if leg not in _LEG_CODES or not attempt.isdigit() or attempt != str(int(attempt)) or len(attempt) > 3:
        return None
    return ClientIdParts(prefix, digest, Leg(leg), int(attempt))


def same_signal(cid: str, signal_id: str, *, prefix: str = "smc") -> bool:
    """True if ``cid`` is one of ours for ``signal_id`` (any leg, any attempt): reconciliation's match."""
    parts = parse_client_order_id(cid, prefix=prefix)
    return parts is not None and parts.digest == signal_digest(signal_id)
