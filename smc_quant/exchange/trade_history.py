"""The account's history over signed REST, mixed into :class:`~smc_quant.exchange.trade_client.LiveBroker`: the
funding it booked (``GET /fapi/v1/income``) and its executions (``GET /fapi/v1/userTrades``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from smc_quant.exchange.wire_trading import parse_income, parse_user_trade
from smc_quant.orders.broker import ExchangeTrade
from smc_quant.orders.signing import Param

__all__ = ["INCOME_PAGE", "TRADES_PAGE", "TradeHistory"]

INCOME_PAGE = 1000
"""Rows per ``GET /fapi/v1/income`` page: Binance's maximum ``limit``."""
TRADES_PAGE = 1000
"""Rows per ``GET /fapi/v1/userTrades`` page: Binance's maximum ``limit``."""


class TradeHistory:
    """The broker's request path and parsing are its own (declared here for the type checker)."""

    _log: Any
    rejected_payloads: Counter[str]

    async def _call(self, method: str, path: str, params: Sequence[Param], *, weight: int = 1,
                    order: bool = False, exit: bool = False, client_id: str | None = None) -> Any:
        raise NotImplementedError  # LiveBroker's

    def _parsed_rows(self, parse: Callable[[Any], Any], rows: Any, reason: str) -> list[Any]:
        raise NotImplementedError  # LiveBroker's

    async def funding_income(self, since_ms: int) -> list[tuple[int, Decimal]]:
        """Every ``FUNDING_FEE`` the account booked at or after ``since_ms``: ``(time_ms, income)``, oldest first,
        ``income`` signed as Binance sends it (negative = paid, positive = received).

        ``GET /fapi/v1/income`` (weight 30 per page) with ``incomeType=FUNDING_FEE``, ``startTime`` (inclusive)
        and ``limit=1000``, paged by moving ``startTime`` to the last row's time: rows of that millisecond may
        straddle two pages, so each ``tranId`` is kept once; a page of fewer than 1000 rows is the last. A full
        page that does not move the time on (1000 rows in one millisecond) asks for the next ``page`` of the
        same ``startTime``. Binance keeps only the last three months of income history: older funding is not
        returned, even when ``since_ms`` asks for it. Malformed rows are counted (``income_malformed``) and
        skipped; a row of another income type or in another asset than USDT (multi-asset mode) is dropped.
        """
        out: list[tuple[int, Decimal]] = []
        seen: set[int] = set()
        start, page, pages = since_ms, 1, 0
        while True:
            params: list[Param] = [("incomeType", "FUNDING_FEE"), ("startTime", start), ("limit", INCOME_PAGE)]
            if page > 1:
                params.append(("page", page))
            raw = await self._call("GET", "/fapi/v1/income", params, weight=30)
            rows = self._parsed_rows(parse_income, raw, "income_malformed")
            pages += 1
            for row in rows:
                wanted = row.income_type == "FUNDING_FEE" and row.asset == "USDT" and row.time_ms >= since_ms
                if wanted and row.tran_id not in seen:
                    seen.add(row.tran_id)
                    out.append((row.time_ms, row.income))
            if len(raw) < INCOME_PAGE:
                break
            last = rows[-1].time_ms if rows else start
            start, page = (last, 1) if last > start else (start, page + 1)
        out.sort(key=lambda item: item[0])  # stable: Binance's order within a millisecond stays
        self._log.info("funding_income", since_ms=since_ms, rows=len(out), pages=pages)
        return out

    async def funding_between(self, start_ms: int, end_ms: int) -> Decimal:
        """Σ the funding booked at times in ``[start_ms, end_ms)`` (:meth:`funding_income`), received positive."""
        return sum((amount for at, amount in await self.funding_income(start_ms) if at < end_ms), Decimal(0))

    async def user_trades(self, symbol: str, since_ms: int) -> list[ExchangeTrade]:
        """The account's executions on ``symbol`` at or after ``since_ms``, oldest first: ours and anyone else's (a
        person's close in the app, the exchange's liquidation). ``GET /fapi/v1/userTrades`` (weight 5) with
        ``startTime`` and ``limit=1000``, paged with ``fromId`` (the last row's id + 1) while a page is full.
        Binance answers 7 days from ``startTime`` at most, and keeps this history for a limited time only.
        Malformed rows are counted (``trade_malformed``) and skipped."""
        out: list[ExchangeTrade] = []
        params: list[Param] = [("symbol", symbol), ("startTime", since_ms), ("limit", TRADES_PAGE)]
        while True:
            raw = await self._call("GET", "/fapi/v1/userTrades", params, weight=5)
            rows: list[ExchangeTrade] = self._parsed_rows(parse_user_trade, raw, "trade_malformed")
            out.extend(r for r in rows if r.time_ms >= since_ms and r.symbol == symbol)
            if len(raw) < TRADES_PAGE or not rows:
                break
            params = [("symbol", symbol), ("fromId", rows[-1].trade_id + 1), ("limit", TRADES_PAGE)]
        out.sort(key=lambda t: (t.time_ms, t.trade_id))
        return out
