"""The security checks of the emulator's signed REST routes (``BINANCE-PROTOCOL.md`` §5).

``X-MBX-APIKEY`` missing → 401 -2014, unknown → 401 -2015. SIGNED routes also need ``timestamp`` (-1102)
and ``signature`` = hex HMAC-SHA256(secret, query string + body) over the bytes exactly as received, the
``signature`` parameter itself removed (-1022 when it differs); ``recvWindow`` (default 5000) above
``recv_window_max_ms`` → -1131; ``timestamp ≥ server + 1000`` or ``server − timestamp > recvWindow`` →
-1021, where the server time is the replay clock (``/fapi/v1/time``). Parameters come from the query
string, a form body, or both; on a duplicate the query wins.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from smc_quant.exchange.emulator.params import ApiError, Params, mandatory, strip_signature

__all__ = ["Gate"]


class Gate:
    """Admits a request to a route: API key, then (SIGNED routes) signature and timestamp."""

    def __init__(self, api_key: str, api_secret: str, recv_window_max_ms: int, now_ms: Callable[[], int]) -> None:
        self._key = api_key.encode("utf-8")
        self._secret = api_secret.encode("utf-8")
        self._recv_window_max_ms = recv_window_max_ms
        self._now_ms = now_ms

    def admit(self, api_key: str | None, query: str, body: str, *, signed: bool) -> Params:
        """The request's parameters once it passed every check; else the first failure as :class:`ApiError`."""
        self._check_key(api_key)
        if signed:
            self._check_signature(query, body)
        params = Params(query, body)
        if signed:
            self._check_time(params)
        return params

    def _check_key(self, key: str | None) -> None:
        if not key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key.encode("utf-8"), self._key):
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)

    def _check_signature(self, query: str, body: str) -> None:
        q, sig_q = strip_signature(query)
        b, sig_b = strip_signature(body)
        sig = sig_b if sig_b is not None else sig_q
        if sig is None:
            raise mandatory("signature")
        expected = hmac.new(self._secret, (q + b).encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")

    def _check_time(self, params: Params) -> None:
        ts = params.integer("timestamp")
        if ts is None:
            raise mandatory("timestamp")
        window = params.integer("recvWindow", 5000)
        assert window is not None
        if window > self._recv_window_max_ms or window <= 0:
            raise ApiError(-1131, f"recvWindow must be less than {self._recv_window_max_ms}.")
        server = self._now_ms()
        if ts >= server + 1000:
            raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - ts > window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
