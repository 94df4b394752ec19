"""The paper account across a restart: the simulated account lives in memory, so the trading stack rebuilds it
from PostgreSQL before the executor recovers its book (``TradingStack._restore_paper_account``)::

    wallet = paper_balance + Σ net PnL of the closed trades + Σ (realised PnL − fee) of the open
             positions' fills − Σ funding paid

(the trades of the current account epoch: after live trading on this database, paper starts afresh from
``paper_balance``). Each open position row comes back at the quantity its stored fills leave
(``smc_quant.book.held``): a position whose exit fill was stored but whose trade was not (the process died between
the two, or its stop gave up a trade write that was retrying through a database blip) is flat — it is not opened
again, and its realised PnL, already in the wallet through its fills, is not made a second time. The executor's
reconciliation then finds it flat at the (simulated) exchange and settles the trade from those same fills.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import TYPE_CHECKING

import structlog

from smc_quant.book import held
from smc_quant.domain.trading import ZERO

if TYPE_CHECKING:
    from smc_quant.sim.account import SimAccount
    from smc_quant.store.trading import TradingRepository


async def restore_paper_account(account: SimAccount, repo: TradingRepository, *, balance: Decimal,
                                tradable: Collection[str], log: structlog.stdlib.BoundLogger) -> None:
    """Rebuild ``account`` (which has not traded yet) from what ``repo`` holds; see the module docstring.

    ``balance`` is the configured paper balance, ``tradable`` the symbols with filters and leverage brackets (a
    position on another one is not restored: the reconciliation reports it). Never raises on a state the account
    refuses: that is logged, and the reconciliation reports what is missing."""
    wallet = balance + await repo.realized_since(0) - await repo.funding_paid()
    positions: dict[str, tuple[Decimal, Decimal, int, int]] = {}
    for position, _meta in await repo.open_positions():
        fills = await repo.fills_for_signal(position.signal_id)
        wallet += sum((f.realized_pnl - f.fee for f in fills), ZERO)
        left = held(position, fills)
        reason = ("not traded any more" if position.symbol not in tradable
                  else "no quantity or price" if position.quantity <= 0 or position.entry_price <= 0
                  else "closed by its stored fills" if left <= 0 else None)
        if reason is not None:
            log.warning("paper_position_not_restored", symbol=position.symbol, signal_id=position.signal_id,
                        reason=reason)
            continue  # the reconciliation settles its trade from its fills, else reports it (position_vanished)
        amount = left if position.side == "LONG" else -left
        positions[position.symbol] = (amount, position.entry_price, position.leverage, position.entry_time_ms)
    if positions or wallet != account.balance().wallet:
        try:
            account.restore(wallet, positions)
        except ValueError as exc:  # never a reason not to start: the reconciliation reports what is missing
            log.error("paper_account_not_restored", error=str(exc))
            return
        log.info("paper_account_restored", wallet=str(wallet), positions=sorted(positions))


__all__ = ["restore_paper_account"]
