"""Helpers shared by the SmartOrderManager unit tests (``test_order_manager.py`` for the normal paths,
``test_order_manager_faults.py`` for the faults): the recorded sleep, a manager over a paper venue, an "open"
decision as the risk manager makes it, and look-ups on the simulated exchange and the real series.
"""

from __future__ import annotations

from decimal import Decimal

from smc_quant.domain.trading import PositionSide, Signal
from smc_quant.order_manager import OrderConfig, SmartOrderManager
from smc_quant.orders.filters import floor_to_step, round_price
from smc_quant.risk import Decision
from smc_quant.sim.account import SimAccount
from tests.unit.test_paper_broker import Venue, real_filters, real_series


class Sleeps:
    """The manager's sleep, recorded: backoff delays without waiting (the venue does not need wall time)."""

    def __init__(self, on_sleep: object = None) -> None:
        self.delays: list[float] = []
        self.on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if callable(self.on_sleep):
            self.on_sleep()


def make_manager(venue: Venue, sleeps: Sleeps | None = None, **config: object) -> SmartOrderManager:
    return SmartOrderManager(venue.broker, real_filters(), config=OrderConfig(**config),  # type: ignore[arg-type]
                             clock=venue.clock, sleep=sleeps or Sleeps())


def decision(symbol: str, side: PositionSide, price: Decimal, open_time: int, *, notional: str = "2000",
             stop_pct: float = 0.5, target_pct: float = 1.0, leverage: int = 10,
             quantity: Decimal | None = None) -> Decision:
    """An "open" decision as the risk manager makes it: quantity floored to the MARKET step, exits on the tick."""
    f = real_filters()[symbol]
    sign = 1 if side == "LONG" else -1
    stop = round_price(price * (1 - sign * Decimal(str(stop_pct)) / 100), f.tick_size, "half_up")
    target = round_price(price * (1 + sign * Decimal(str(target_pct)) / 100), f.tick_size, "half_up")
    qty = quantity if quantity is not None else floor_to_step(Decimal(notional) / price, f.market_step_size)
    signal = Signal(signal_id=f"{symbol}:{side}:{open_time}", symbol=symbol, side=side, open_time=open_time,
                    price=price, confidence=0.7, stop_pct=stop_pct, target_pct=target_pct, setup="test")
    return Decision(action="open", reason="test", signal=signal, quantity=qty, leverage=leverage, stop_price=stop,
                    target_price=target, close_symbol=None, notional=qty * price, margin=qty * price / leverage,
                    risk_amount=qty * price * Decimal(str(stop_pct)) / 100)


def client_ids(account: SimAccount) -> list[str]:
    """Every client id the simulated exchange accepted a request for, in order (orders and algo orders)."""
    return account.order_log


def bars(symbol: str, i: int) -> int:
    return int(real_series(symbol).open_time[i])
