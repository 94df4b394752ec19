"""Request parsing for the emulator's signed routes: parameters with Binance's error codes, the account's
new-order counter, and the split of a signed query or body into its payload and ``signature``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl

from aiohttp import web

from smc_quant.exchange.emulator.rest import json_response

__all__ = ["CLIENT_ID", "ApiError", "OrderCounter", "Params", "mandatory", "strip_signature"]

CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")


class ApiError(Exception):
    """A request refused with a Binance error body ``{"code", "msg"}`` and an HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return json_response({"code": self.code, "msg": self.msg}, status=self.status, headers=self.headers)


def mandatory(name: str) -> ApiError:
    """Binance's -1102 for a missing parameter."""
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class Params:
    """The request's parameters (query wins over body on duplicates) with typed, Binance-coded access."""

    def __init__(self, query: str, body: str) -> None:
        merged: dict[str, str] = {}
        for k, v in parse_qsl(body, keep_blank_values=True):
            merged.setdefault(k, v)
        for k, v in parse_qsl(query, keep_blank_values=True):
            merged[k] = v
        self.values = merged

    def opt(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value not in (None, "") else None

    def req(self, name: str) -> str:
        value = self.opt(name)
        if value is None:
            raise mandatory(name)
        return value

    def decimal(self, name: str, required: bool = True) -> Decimal | None:
        raw = self.req(name) if required else self.opt(name)
        if raw is None:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from None
        if not value.is_finite():
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.")
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        raw = self.opt(name)
        if raw is None:
            return default
        if not raw.lstrip("-").isdigit():
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return int(raw)

    def flag(self, name: str) -> bool:
        raw = self.opt(name)
        if raw is None:
            return False
        if raw.lower() not in ("true", "false"):
            raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return raw.lower() == "true"

    def client_id(self, name: str) -> str | None:
        raw = self.opt(name)
        if raw is not None and not CLIENT_ID.match(raw):
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        return raw


class OrderCounter:
    """The account's new-order counts in fixed wall-clock windows of 10 s and 1 min (like Binance)."""

    def __init__(self, limit_10s: int, limit_1m: int, clock: Callable[[], float]) -> None:
        self.limit_10s, self.limit_1m = limit_10s, limit_1m
        self._clock = clock
        self._w10 = self._w1m = -1
        self.count_10s = self.count_1m = 0
        self.rejected = 0

    def _roll(self) -> None:
        now = self._clock()
        w10, w1m = int(now // 10), int(now // 60)
        if w10 != self._w10:
            self._w10, self.count_10s = w10, 0
        if w1m != self._w1m:
            self._w1m, self.count_1m = w1m, 0

    def headers(self) -> dict[str, str]:
        self._roll()
        return {"X-MBX-ORDER-COUNT-10S": str(self.count_10s), "X-MBX-ORDER-COUNT-1M": str(self.count_1m)}

    def charge(self) -> None:
        """Count one new order, or raise 429 -1015 (not counted) when either window is full."""
        self._roll()
        if self.count_10s >= self.limit_10s:
            self.rejected += 1
            raise ApiError(-1015, f"Too many new orders; current limit is {self.limit_10s} orders per TEN_SECONDS.",
                           429, self.headers())
        if self.count_1m >= self.limit_1m:
            self.rejected += 1
            raise ApiError(-1015, f"Too many new orders; current limit is {self.limit_1m} orders per MINUTE.",
                           429, self.headers())
        self.count_10s += 1
        self.count_1m += 1


def strip_signature(part: str) -> tuple[str, str | None]:
    """``part`` without its ``signature=`` parameter, and the signature (``None`` if absent)."""
    if not part:
        return part, None
    keep: list[str] = []
    sig: str | None = None
    for item in part.split("&"):
        if item.startswith("signature="):
            sig = item[len("signature="):]
        else:
            keep.append(item)
    return "&".join(keep), sig
