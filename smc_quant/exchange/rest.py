"""``BinanceRestClient``: the public USDT-M REST endpoints the data plane needs.

Every request takes its weight from the shared :class:`WeightGovernor` first. HTTP outcomes are
mapped to our error tree in one place (:meth:`BinanceRestClient._decode`): 429/418 penalise the
governor and raise ``RateLimited``; 5xx, 408, timeouts and broken connections raise
``TemporaryError`` (``ExchangeUnreachable`` when no connection could be made at all); any other
4xx raises ``VenueRejected`` with the exchange's ``code``. A 2xx whose body is not JSON (a truncated or
garbled answer, a proxy's page) is a ``TemporaryError`` too, counted in ``unreadable``. Only GETs are retried.

A ``/klines`` row that cannot be read (too short, a price that is not a number, a null time) is
``DataRejected("malformed")``: dropped, counted in ``rows_rejected`` by reason and logged; the other rows
come back (the feed counts that minute as missing). Values are judged by the feed's data firewall.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from smc_quant.domain.candles import Candle, interval_ms
from smc_quant.errors import DataRejected, RateLimited, TemporaryError, VenueRejected
from smc_quant.exchange.governor import WeightGovernor
from smc_quant.logging import get_logger

__all__ = ["BinanceRestClient", "ExchangeUnreachable", "WeightGovernor", "klines_weight", "parse_kline"]

Params = Mapping[str, str | int]
Backoff = Callable[[int], float]
"""Seconds to wait before retry number ``attempt`` (0-based)."""


class ExchangeUnreachable(TemporaryError):
    """No connection to the exchange could be made (DNS, refused, unroutable)."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach the exchange at {base_url}: {reason}")
        self.base_url = base_url


def default_backoff(attempt: int) -> float:
    """200 ms doubling per attempt, capped at 5 s, with ±25% jitter."""
    return min(5.0, 0.2 * 2.0**attempt) * random.uniform(0.75, 1.25)


def klines_weight(limit: int) -> int:
    """REQUEST_WEIGHT of ``GET /fapi/v1/klines`` for ``limit`` rows (1/2/5/10)."""
    if not 1 <= limit <= 1500:
        raise ValueError("klines limit must be in 1..1500")
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def parse_kline(symbol: str, interval: str, row: Sequence[Any]) -> Candle:
    """One ``/klines`` row ``[openTime, "o", "h", "l", "c", "v", closeTime, "q", n, "V", "Q", _]``;
    ``DataRejected("malformed")`` when it cannot be read (its values are not judged here)."""
    try:
        return Candle(
            symbol, interval, int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]),
            float(row[5]), float(row[7]), int(row[8]), float(row[9]), float(row[10]),
        )
    except (IndexError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise DataRejected("malformed", f"{symbol} klines row {str(row)[:120]}: {type(exc).__name__}: {exc}") from None


class BinanceRestClient:
    """Market-data REST calls over an injected ``aiohttp.ClientSession``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, governor: WeightGovernor, *,
                 timeout_s: float = 10.0, retries: int = 3, backoff: Backoff = default_backoff,
                 max_wait_s: float = 90.0, logger: Any = None) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.governor = governor
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._backoff = backoff
        self._max_wait_s = max_wait_s
        self._log = logger if logger is not None else get_logger(component="rest")
        self.unreadable = 0
        """2xx answers whose body could not be read (not JSON, or not the shape the endpoint returns)."""
        self.rows_rejected: Counter[str] = Counter()
        """``/klines`` rows dropped because they could not be read, by reason."""

    async def ping(self) -> None:
        """``GET /fapi/v1/ping``: raises unless the exchange answers."""
        await self.request_with_retry("GET", "/fapi/v1/ping", {}, weight=1)

    async def server_time(self) -> int:
        """``GET /fapi/v1/time``: the exchange's clock in epoch ms."""
        body = await self.request_with_retry("GET", "/fapi/v1/time", {}, weight=1)
        return int(body["serverTime"])

    async def exchange_info(self) -> dict[str, Any]:
        """``GET /fapi/v1/exchangeInfo``: the raw payload (parse it with ``exchange_info.py``)."""
        body: dict[str, Any] = await self.request_with_retry("GET", "/fapi/v1/exchangeInfo", {}, weight=1)
        return body

    async def klines(self, symbol: str, interval: str, *, start_time: int | None = None,
                     end_time: int | None = None, limit: int = 500) -> list[Candle]:
        """``GET /fapi/v1/klines``: up to ``limit`` bars, oldest first; the last may still be open. Unreadable
        rows are left out (counted, see the module docstring)."""
        candles, _ = await self._klines_page(symbol, interval, start_time, end_time, limit)
        return candles

    async def _klines_page(self, symbol: str, interval: str, start_time: int | None, end_time: int | None,
                           limit: int) -> tuple[list[Candle], int]:
        """The readable candles of one ``/klines`` answer and how many rows it had."""
        interval_ms(interval)
        params: dict[str, str | int] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_time is not None:
            params["startTime"] = start_time
        if end_time is not None:
            params["endTime"] = end_time
        rows = await self.request_with_retry("GET", "/fapi/v1/klines", params, weight=klines_weight(limit))
        if not isinstance(rows, list):
            self.unreadable += 1
            raise TemporaryError(f"GET /fapi/v1/klines: expected a list of rows, got {type(rows).__name__}")
        candles: list[Candle] = []
        for row in rows:
            try:
                candles.append(parse_kline(symbol, interval, row))
            except DataRejected as exc:
                self.rows_rejected[exc.reason] += 1
                self._log.warning("rest_row_rejected", symbol=symbol, reason=exc.reason, error=str(exc))
        return candles, len(rows)

    async def closed_klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, *,
                            now_ms: int, limit: int = 1000) -> list[Candle]:
        """Every closed bar with ``start_ms <= open_time <= end_ms``, paginated; open bars are dropped."""
        step = interval_ms(interval)
        out: list[Candle] = []
        cursor = start_ms
        while cursor <= end_ms:
            page, rows = await self._klines_page(symbol, interval, cursor, end_ms, limit)
            closed = [c for c in page if c.open_time >= cursor and c.open_time <= end_ms
                      and c.close_time <= now_ms]
            out.extend(closed)
            if rows < limit or not page or len(closed) < len(page):
                break
            cursor = page[-1].open_time + step  # an unreadable last row is asked for again: one more try
        return out

    async def request_with_retry(self, method: str, path: str, params: Params, *, weight: int) -> Any:
        """A request retried on ``TemporaryError`` (incl. ``RateLimited``) with backoff; GET only."""
        if method != "GET":
            raise ValueError("only GET requests are retried; send other methods with request()")
        for attempt in range(self._retries + 1):
            try:
                return await self.request(method, path, params, weight=weight)
            except TemporaryError as exc:
                if attempt == self._retries or self._too_long(exc):
                    raise
                delay = 0.0 if isinstance(exc, RateLimited) else self._backoff(attempt)
                self._log.warning("rest_retry", path=path, attempt=attempt + 1, error=str(exc), delay_s=delay)
                if delay > 0:
                    await self.governor.sleep(delay)
        raise AssertionError("unreachable")

    def _too_long(self, exc: TemporaryError) -> bool:
        """A penalty (an IP ban) lasting longer than ``max_wait_s`` is reported, not waited out."""
        wait_ms = exc.retry_at_ms - self.governor.clock() if isinstance(exc, RateLimited) else 0
        return wait_ms > self._max_wait_s * 1000

    async def request(self, method: str, path: str, params: Params, *, weight: int) -> Any:
        """One request, no retry: take the weight, send, map the outcome (see the module docstring)."""
        await self.governor.acquire(weight, max_wait_s=self._max_wait_s)
        sent_at = self.governor.clock()
        url = self.base_url + path
        try:
            async with self._session.request(method, url, params=params, timeout=self._timeout) as resp:
                body = await resp.read()
                self._observe_weight(resp.headers, sent_at)
                return self._decode(path, resp.status, resp.headers, body)
        except aiohttp.ClientConnectorError as exc:
            raise ExchangeUnreachable(self.base_url, f"{type(exc).__name__}: {exc.os_error}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TemporaryError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc

    def _observe_weight(self, headers: Mapping[str, str], sent_at: int) -> None:
        used = headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            self.governor.observe(int(used), sent_at)

    def _decode(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> Any:
        if 200 <= status < 300:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                self.unreadable += 1
                raise TemporaryError(f"GET {path}: HTTP {status} body is not JSON ({len(body)} bytes: "
                                     f"{body[:80]!r})") from None
        text = body.decode("utf-8", "replace")
        if status in (418, 429):
            retry_at = self.governor.penalise(status, _retry_after(headers), text)
            self._log.warning("rest_rate_limited", path=path, status=status, retry_at_ms=retry_at)
            raise RateLimited(f"GET {path}: HTTP {status} {text[:200]}", status=status, retry_at_ms=retry_at)
        if status >= 500 or status in (403, 408):  # 403: the WAF's limit, which lifts by itself
            raise TemporaryError(f"GET {path}: HTTP {status} {text[:200]}")
        code, msg = _error_body(text)
        raise VenueRejected(f"GET {path}: HTTP {status} code {code}: {msg}", status=status, code=code)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_body(text: str) -> tuple[int | None, str]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, text[:200]
    if isinstance(data, dict):
        code = data.get("code")
        return (code if isinstance(code, int) else None), str(data.get("msg", ""))[:200]
    return None, text[:200]
