"""The symbol checked and set up before an entry (used by :class:`~smc_quant.order_manager.SmartOrderManager`).

One round trip before every entry, nothing cached per process (a person on the same account may have acted in the
Binance app since our last trade): the margin type and the decision's leverage are asserted (two POSTs) while the
symbol's open algo orders and open orders are read (``GET /fapi/v1/openAlgoOrders`` and ``GET /fapi/v1/openOrders``,
weight 1 each), the four requests at once.

- **A person's orders block the entry.** One-way mode holds one position per symbol, so every open order on it acts
  on the position we would open: a ``closePosition`` or reduce-only one would close ours at a level the strategy did
  not choose, an opening one would add to it or reverse it (a size the risk manager did not choose); a resting one
  also keeps the exchange from setting the margin type (-4048). Any open algo order or order whose client id is not
  ours, of either side, drops the entry (``foreign_orders: my-target BUY TAKE_PROFIT_MARKET closePosition
  @1846.61``, ``person-limit BUY LIMIT qty 1.000``); nothing is sent and the person's orders are never cancelled.
  The next signal on the symbol checks again.
- **A read that fails drops the entry** (``foreign_orders_not_checked: …``), after ``entry_max_attempts`` tries:
  an order we cannot see could close the position at any level, and an exchange that cannot list the symbol's
  orders is a poor place to open one; a missed entry costs only the opportunity.
- **Our stale protection is cancelled.** A ``closePosition`` algo order of ours from another signal belongs to a
  closed trade (its other leg fired); left alone it would close the new position at the old trade's level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from smc_quant.errors import TemporaryError, VenueRejected
from smc_quant.order_sender import READ_FAILURES, OrderConfig, OrderSender, error_text
from smc_quant.orders.broker import AlgoState, Broker, OrderState
from smc_quant.orders.client_ids import parse_client_order_id, same_signal

__all__ = ["SymbolSetup", "describe_algo", "describe_order"]

_DESCRIBED = 3
"""Foreign orders named in a drop reason (the rest counted)."""


def describe_algo(algo: AlgoState) -> str:
    """``my-target BUY TAKE_PROFIT_MARKET closePosition @1846.61`` (or ``qty 0.100`` instead of closePosition); a
    trailing stop: ``my-trail SELL TRAILING_STOP_MARKET qty 0.100 callback 1.5% from @1900`` (``from`` only with an
    activation price)."""
    size = "closePosition" if algo.close_position else f"qty {algo.quantity}"
    if algo.callback_rate is None:
        return f"{algo.client_algo_id} {algo.side} {algo.type} {size} @{algo.trigger_price}"
    start = f" from @{algo.trigger_price}" if algo.trigger_price is not None else ""
    return f"{algo.client_algo_id} {algo.side} {algo.type} {size} callback {algo.callback_rate}%{start}"


def describe_order(order: OrderState) -> str:
    """``person-limit BUY LIMIT qty 1.000`` (`` reduceOnly`` when it is)."""
    return (f"{order.client_order_id} {order.side} {order.type} qty {order.orig_qty}"
            f"{' reduceOnly' if order.reduce_only else ''}")


class SymbolSetup:
    """Asserts a symbol's settings and checks its open algo orders before an entry (see the module docstring)."""

    def __init__(self, broker: Broker, sender: OrderSender, config: OrderConfig, *, stats: dict[str, int],
                 logger: Any, cancelling: Callable[[str], None], sleep: Callable[[float], Awaitable[None]]) -> None:
        self._broker = broker
        self._sender = sender
        self._config = config
        self._stats = stats
        self._log = logger
        self._cancelling = cancelling
        self._sleep = sleep

    async def prepare(self, symbol: str, leverage: int, signal_id: str) -> str | None:
        """Ready ``symbol`` for the entry of ``signal_id``: ``None`` when it may go on, else why it is dropped.

        A leverage refusal (``leverage rejected …``), a temporary failure of either setting (``leverage not set:
        …``), a read of the open algo orders that keeps failing (``foreign_orders_not_checked: …``) or a person's
        algo order or order on the symbol (``foreign_orders: …``) drops it; our stale protection is cancelled
        otherwise.
        """
        settings, live, resting = await asyncio.gather(
            self._settings(symbol, leverage), self._read(lambda: self._broker.open_algo_orders(symbol)),
            self._read(lambda: self._broker.open_orders(symbol)), return_exceptions=True)
        if isinstance(settings, VenueRejected):
            return f"leverage rejected {error_text(settings)}"
        if isinstance(settings, TemporaryError):
            return f"leverage not set: {error_text(settings)}"
        if isinstance(settings, BaseException):
            raise settings
        for read in (live, resting):
            if isinstance(read, READ_FAILURES):
                self._log.warning("open_orders_not_checked", symbol=symbol, error=error_text(read))
                return f"foreign_orders_not_checked: {error_text(read)}"
            if isinstance(read, BaseException):
                raise read
        assert isinstance(live, list) and isinstance(resting, list)
        named = [describe_algo(a) for a in live if parse_client_order_id(a.client_algo_id) is None]
        named += [describe_order(o) for o in resting if parse_client_order_id(o.client_order_id) is None]
        if named:
            self._stats["foreign_orders"] += 1
            self._log.warning("foreign_orders_on_symbol", symbol=symbol, orders=named)
            more = f" (+{len(named) - _DESCRIBED} more)" if len(named) > _DESCRIBED else ""
            return f"foreign_orders: {', '.join(named[:_DESCRIBED])}{more}"
        await self._cancel_stale(symbol, signal_id, live)
        return None

    async def _settings(self, symbol: str, leverage: int) -> None:
        """Assert the configured margin type and ``leverage`` on ``symbol``, the two requests concurrently.

        A margin-type refusal other than -4046 (already so) is logged and the entry goes on; a leverage refusal, or a
        temporary failure of either after the sender's retries, is raised (the entry is dropped).
        ``stats["leverage_set"]`` / ``stats["margin_type_set"]`` count the assertions that held, changed or not.
        """
        margin, lev = await asyncio.gather(
            self._sender.retrying(lambda: self._broker.set_margin_type(symbol, self._config.margin_type)),
            self._sender.retrying(lambda: self._broker.set_leverage(symbol, leverage)),
            return_exceptions=True)
        if isinstance(margin, VenueRejected) and margin.code != -4046:  # -4046: already so
            self._log.warning("margin_type_not_set", symbol=symbol, error=error_text(margin))
        if isinstance(lev, BaseException):
            raise lev
        if isinstance(margin, BaseException) and not isinstance(margin, VenueRejected):
            raise margin
        self._stats["leverage_set"] += 1
        if not isinstance(margin, VenueRejected) or margin.code == -4046:
            self._stats["margin_type_set"] += 1

    async def _read(self, fetch: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
        """The symbol's open (algo) orders; a failed read is asked again (``entry_max_attempts`` tries), then
        raised."""
        for n in range(1, self._config.entry_max_attempts + 1):
            try:
                return await fetch()
            except READ_FAILURES as exc:  # says nothing about the orders: asked again, never taken as "none"
                if n == self._config.entry_max_attempts:
                    raise
                self._stats["retries"] += 1
                await self._sleep(self._sender.delay_after(exc, n))
        raise AssertionError("unreachable")

    async def _cancel_stale(self, symbol: str, signal_id: str, live: list[AlgoState]) -> None:
        """Cancel the closePosition algo orders of ours in ``live`` left by other signals' trades.

        One-way mode holds one position per symbol, so such an order belongs to a closed trade (its other leg
        fired); left alone it would close the new position at the old trade's level. A failed cancel is logged and
        counted (``cancel_failures``); the entry goes on.
        """
        for algo in live:
            if (algo.close_position and parse_client_order_id(algo.client_algo_id) is not None
                    and not same_signal(algo.client_algo_id, signal_id)):
                self._log.warning("stale_protection_cancelled", symbol=symbol, client_id=algo.client_algo_id)
                self._cancelling(algo.client_algo_id)
                try:
                    await self._broker.cancel_algo(symbol, algo.client_algo_id)
                except (TemporaryError, VenueRejected) as exc:
                    self._stats["cancel_failures"] += 1
                    self._log.warning("algo_cancel_failed", client_id=algo.client_algo_id, error=error_text(exc))
