"""The live decision objects, composed for a backtest: the same classes and settings as ``shards/trading.py``.

``build_stack`` mirrors :class:`shards.trading.TradingStack` (paper branch) line for line — RiskConfig,
OrderConfig, SimConfig and ExecutorConfig are built from the same :class:`~smc_quant.settings.TradingSettings`
fields — with four differences a backtest needs: no database (the executor's repository is ``None``),
no notifier, the executor's wall-clock loops (exit checks, reconciliation) pushed out of reach because the
backtest drives exits on the candle clock itself (``Executor.check_exits`` after every minute), and the
correlation guard reading the candles in memory (:class:`~smc_quant.correlation.SeriesReturns`, the same
figure as the service's :class:`~smc_quant.correlation.ReturnWindows`). The broker is
:class:`BarBroker`, the :class:`~smc_quant.paper.PaperBroker` plus a bar-level price feed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import structlog

from smc_quant.correlation import ReturnSource
from smc_quant.errors import ConfigError
from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.executor import Executor, ExecutorConfig
from smc_quant.funding import FundingQuote
from smc_quant.order_manager import OrderConfig, SmartOrderManager
from smc_quant.paper import PaperBroker
from smc_quant.risk import RiskConfig, RiskManager
from smc_quant.settings import TradingSettings
from smc_quant.sim.account import SimAccount, SimConfig

__all__ = ["BacktestClock", "BarBroker", "PricePath", "Stack", "build_stack", "quiet_logger"]

PricePath = Literal["ohlc", "close"]
NEVER_S = 1e9
"""The executor's own wall-clock loops (exit checks, reconciliation) wait this long: never, in a backtest."""


class BacktestClock:
    """Epoch ms of the candle being processed (its close time), like the service's replay ``MarketClock``."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class BarBroker(PaperBroker):
    """The paper broker as the backtest uses it: whole 1m bars through :meth:`PaperBroker.on_bar` (the
    service's paper mode does the same with every closed candle)."""


@dataclass
class Stack:
    """What one backtest run trades through."""

    broker: BarBroker
    risk: RiskManager
    manager: SmartOrderManager
    executor: Executor


def _drop(_logger: Any, _name: str, _event: Any) -> Any:
    raise structlog.DropEvent


def quiet_logger() -> Any:
    """A structlog logger that drops everything (a backtest would otherwise log every order)."""
    return structlog.wrap_logger(None, processors=[_drop])


def build_stack(t: TradingSettings, filters: Mapping[str, SymbolFilters], brackets: Mapping[str, SymbolBrackets],
                clock: BacktestClock, logger: Any | None = None, returns: ReturnSource | None = None,
                funding: Callable[[str], FundingQuote | None] | None = None) -> Stack:
    """Paper account → broker → SmartOrderManager → RiskManager → Executor, configured like the service.

    MARKET entries only: a LIMIT entry rests until the order manager's fill wait (seconds of wall time) ends, while
    the minute loop — which alone brings the next bar to the paper account — waits for it; every LIMIT entry was
    cancelled unfilled, and the run reported no trades without a reason."""
    if t.entry_type != "MARKET":
        raise ConfigError(f"invalid setting SMC_TRADING__ENTRY_TYPE={t.entry_type}: the backtest simulates MARKET "
                          "entries only (a resting LIMIT order would need bars while the loop waits for its fill)")
    log = logger if logger is not None else quiet_logger()
    taker = Decimal(str(t.taker_fee_pct)) / 100
    account = SimAccount(dict(filters), dict(brackets), SimConfig(
        balance=Decimal(str(t.paper_balance)), taker_fee=taker, slippage_bps=Decimal(str(t.slippage_bps))))
    broker = BarBroker(account, clock)
    risk = RiskManager(RiskConfig.of(t), filters, brackets)
    manager = SmartOrderManager(broker, filters, config=OrderConfig(entry_type=t.entry_type,
                                                                    margin_type=t.margin_type),
                                journal=None, clock=clock, logger=log)
    executor = Executor(broker=broker, manager=manager, risk=risk, repo=None, notifier=None, clock=clock,
                        logger=log, config=ExecutorConfig(exit_check_interval_s=NEVER_S,
                                                          reconcile_interval_s=NEVER_S, taker_fee=taker),
                        returns=returns, funding=funding)
    return Stack(broker, risk, manager, executor)
