"""Helpers shared by the SimAccount unit tests (``test_sim_account.py`` and
``test_sim_account_triggers_and_properties.py``): the constants, a compact event trace and a MARKET order
that must fill. Their fixtures (``filters``, ``brackets``, ``make``) are in ``conftest.py``.
"""

from __future__ import annotations

from decimal import Decimal

from smc_quant.orders.broker import AccountEvent, AccountUpdate, AlgoUpdate, OrderUpdate
from smc_quant.sim import SimAccount, SimConfig

D = Decimal
T0 = 1_700_000_000_000
NO_SLIP = SimConfig(slippage_bps=D(0))

BTC = "BTCUSDT"


def kinds(events: list[AccountEvent]) -> list[str]:
    """A compact trace: ``NEW``/``TRADE``/… for orders, ``ACCOUNT``, ``algo:STATUS``."""
    out = []
    for e in events:
        if isinstance(e, OrderUpdate):
            out.append(e.execution)
        elif isinstance(e, AccountUpdate):
            out.append("ACCOUNT")
        elif isinstance(e, AlgoUpdate):
            out.append(f"algo:{e.status}")
    return out


def market(acc: SimAccount, side: str, qty: str, *, t: int = T0, symbol: str = "BTCUSDT", cid: str | None = None,
           reduce_only: bool = False) -> list[AccountEvent]:
    state, events = acc.new_order(symbol=symbol, side=side, type="MARKET", quantity=D(qty), time_ms=t,
                                  client_order_id=cid, reduce_only=reduce_only)
    assert state.status == "FILLED"
    return events
