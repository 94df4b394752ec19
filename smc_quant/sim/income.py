"""The income ledger of a simulated account: what ``GET /fapi/v1/income`` lists.

Pure, no clock, no I/O. :class:`~smc_quant.sim.account.SimAccount` records one row per non-zero funding
charge (``FUNDING_FEE``, ``income`` = minus the payment: positive = received); realised PnL and commissions
are in the account's fills, not here. ``tranId`` is a counter from 1, so a run is deterministic. Rows are
kept sorted by ``(time, tranId)`` even if a caller records out of time order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from decimal import Decimal

from smc_quant.orders.broker import IncomeRow

__all__ = ["FUNDING_FEE", "IncomeLedger"]

FUNDING_FEE = "FUNDING_FEE"
QUOTE = "USDT"


def _order(row: IncomeRow) -> tuple[int, int]:
    return row.time_ms, row.tran_id


class IncomeLedger:
    """Income rows of one account, oldest first; append with :meth:`record`, read with :meth:`rows`."""

    def __init__(self) -> None:
        self._rows: list[IncomeRow] = []
        self._next_tran_id = 1

    def __len__(self) -> int:
        return len(self._rows)

    def record(self, symbol: str, income_type: str, income: Decimal, time_ms: int) -> IncomeRow:
        """Book ``income`` (signed, USDT) of ``income_type`` on ``symbol`` at ``time_ms``; returns the row."""
        if not income.is_finite():
            raise ValueError(f"{symbol}: income {income} is not a number")
        row = IncomeRow(symbol, income_type, income, QUOTE, time_ms, self._next_tran_id)
        self._next_tran_id += 1
        insort(self._rows, row, key=_order)
        return row

    def rows(self, *, income_type: str | None = None, symbol: str | None = None, start_ms: int | None = None,
             end_ms: int | None = None, limit: int | None = None) -> list[IncomeRow]:
        """Rows of ``income_type`` and ``symbol`` (``None``: any) with ``start_ms ≤ time ≤ end_ms`` (both
        inclusive, as Binance), oldest first (ties by tranId), at most ``limit`` — the oldest ones.
        Cost: O(log n) to the start, then O(rows scanned)."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit {limit} is not positive")
        i = 0 if start_ms is None else bisect_left(self._rows, start_ms, key=lambda r: r.time_ms)
        out: list[IncomeRow] = []
        for row in self._rows[i:]:
            if end_ms is not None and row.time_ms > end_ms:
                break
            if income_type in (None, row.income_type) and symbol in (None, row.symbol):
                out.append(row)
                if limit is not None and len(out) >= limit:
                    break
        return out
