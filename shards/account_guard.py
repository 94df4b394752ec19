"""The open book at a start: its symbols keep their rules, and a live start checks that the account behind the API
key is the one that opened it.

**Symbols no longer traded.** An open position on a symbol the settings left out (``SMC_UNIVERSE__SYMBOLS`` /
``MAX_SYMBOLS`` narrowed) or the exchange took out of trading keeps its symbol's rules until it closes: its stop,
target and exits need them. The live start used to fail on it (``KeyError``, in a loop, the position left to its
exchange-side orders with no 2-hour exit, breaker or drawdown guard), and a paper start dropped it. Its candles are
not watched: its marks stand still until it closes.

**Another account.** The database is bound to an account by venue (``live https://fapi.binance.com``): two
sub-accounts on the same venue look alike, and Binance's futures API names no account. A key pointed at another
sub-account while positions were open used to end the whole book as ``position_vanished`` — its stops cancelled
where there were none, its entries marked ended, no trade stored — and, once the key came back, the real positions
were somebody else's to the service: no 2-hour exit, no caps, no breaker. The evidence: our entry orders. Binance
answers a query for a filled order for 90 days, and a position of ours lasts hours; an account that knows none of
the book's journalled entries did not open them. When nothing can be told (no journalled entry, a query refused
or failing), the start goes on.

Both found by a review of settings changed between runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from smc_quant.errors import ConfigError
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.orders.broker import Broker

__all__ = ["BookElsewhere", "check_book_is_this_accounts", "keep_booked_symbols"]


class BookElsewhere(ConfigError):
    """The open book's entries are unknown to the account behind the API key (the message says what to do)."""


async def check_book_is_this_accounts(repo: Any, broker: Broker, log: Any) -> None:
    """Raise :class:`BookElsewhere` when the exchange knows none of the open book's journalled entry orders."""
    asked: list[str] = []
    for position, _ in await repo.open_positions():
        entries = [str(o["client_order_id"]) for o in await repo.orders_for_signal(position.signal_id)
                   if o["kind"] == "entry" and o["status"] != "REJECTED"]
        for cid in entries:
            try:
                if await broker.query_order(position.symbol, cid) is not None:
                    return  # this account opened it: the book is here
            except Exception as exc:  # failing now, or refused (a symbol not listed): nothing told, the start goes on
                log.warning("book_account_not_checked", symbol=position.symbol, error=f"{type(exc).__name__}: {exc}")
                return
            asked.append(f"{position.symbol} {cid}")
    if asked:
        raise BookElsewhere(
            f"the exchange account behind BINANCE_API_KEY knows none of the open book's entries ({len(asked)}: "
            f"{', '.join(asked[:5])}): they were opened on another account (a sub-account on the same venue?). "
            "Start with that account's key until the book is flat, or point DATABASE_URL at another database")


async def keep_booked_symbols(repo: Any, traded: Mapping[str, SymbolFilters], others: Mapping[str, SymbolFilters],
                              add: Callable[[Mapping[str, SymbolFilters]], Awaitable[object]], log: Any) -> None:
    """Give the open book's symbols outside ``traded`` their rules from ``others`` (``add``: the stack's
    ``set_filters``); a booked symbol the exchange does not list at all is logged."""
    booked = sorted({p.symbol for p, _ in await repo.open_positions()} - traded.keys())
    if kept := {s: others[s] for s in booked if s in others}:
        await add(kept)
        log.warning("symbols_kept_until_closed", symbols=sorted(kept), note="closed as usual, not entered again")
    if unknown := [s for s in booked if s not in kept]:
        log.error("booked_symbols_without_rules", symbols=unknown, note="not listed: reconciled as found")
