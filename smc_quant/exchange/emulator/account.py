"""The emulator's trading account: what it must offer (:class:`TradingAccount`) and how it is built
(a ``smc_quant.sim`` account over the served symbols' real filters and leverage brackets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from smc_quant.datasets import LEVERAGE_TIERS
from smc_quant.domain.trading import ZERO, Fill
from smc_quant.exchange.brackets import Bracket, SymbolBrackets, load_brackets
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.market import Market
from smc_quant.exchange.exchange_info import SymbolFilters, parse_filters
from smc_quant.orders.broker import AccountEvent, AlgoState, Balance, ExchangePosition, IncomeRow, OrderState
from smc_quant.sim.account import SimAccount, SimConfig

__all__ = ["DEFAULT_TIER", "TradingAccount", "account_brackets", "account_filters", "build_account"]

DEFAULT_TIER = Bracket(ZERO, Decimal("1000000000"), 20, Decimal("0.01"), ZERO)
"""The one tier given to a served symbol the bracket file does not list (mapped or renamed symbols)."""



class TradingAccount(Protocol):
    """What the routes need of the simulated account (``smc_quant.sim.account.SimAccount``)."""

    fee_burn: bool
    """BNB Fee Discount (``/fapi/v1/feeBurn``): commissions charged in BNB while on."""

    @property
    def order_log(self) -> list[str]:
        """Client ids of accepted orders and algo orders, each once, in acceptance order."""

    @property
    def fills(self) -> list[Fill]:
        """Every execution, oldest first."""


    def on_price(self, symbol: str, price: Decimal, time_ms: int) -> list[AccountEvent]: ...

    def settle_funding(self, symbol: str, rate: Decimal, time_ms: int) -> tuple[Decimal, list[AccountEvent]]: ...
    def funding_income(self, symbol: str | None = None, *, start_ms: int | None = None, end_ms: int | None = None,
                       limit: int | None = None) -> list[IncomeRow]: ...
    def last_price(self, symbol: str) -> Decimal | None: ...
    def new_order(self, *, symbol: str, side: str, type: str, quantity: Decimal, time_ms: int,
                  client_order_id: str | None = None, price: Decimal | None = None, reduce_only: bool = False,
                  time_in_force: str = "GTC") -> tuple[OrderState, list[AccountEvent]]: ...
    def cancel_order(self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None,
                     time_ms: int) -> tuple[OrderState, list[AccountEvent]]: ...
    def query_order(self, symbol: str, *, client_order_id: str | None = None,
                    order_id: int | None = None) -> OrderState: ...
    def open_orders(self, symbol: str | None = None) -> list[OrderState]: ...
    def new_algo(self, *, symbol: str, side: str, type: str, trigger_price: Decimal | None, time_ms: int,
                 client_algo_id: str | None = None, quantity: Decimal | None = None, close_position: bool = False,
                 reduce_only: bool = False, working_type: str = "CONTRACT_PRICE",
                 callback_rate: Decimal | None = None) -> tuple[AlgoState, list[AccountEvent]]: ...
    def cancel_algo(self, *, symbol: str | None = None, client_algo_id: str | None = None,
                    algo_id: int | None = None, time_ms: int) -> tuple[AlgoState, list[AccountEvent]]: ...
    def query_algo(self, *, client_algo_id: str | None = None, algo_id: int | None = None) -> AlgoState: ...
    def open_algo_orders(self, symbol: str | None = None) -> list[AlgoState]: ...
    def set_leverage(self, symbol: str, leverage: int) -> tuple[int, Decimal]: ...
    def set_margin_type(self, symbol: str, margin_type: str) -> None: ...
    def leverage(self, symbol: str) -> int: ...
    def positions(self) -> list[ExchangePosition]: ...
    def balance(self) -> Balance: ...
    def set_filters(self, filters: Mapping[str, SymbolFilters]) -> None: ...


def account_filters(market: Market) -> dict[str, SymbolFilters]:
    """Filters of every served symbol from the exchangeInfo the emulator serves (symbols whose filters
    do not parse are left out: orders on them get -1121)."""
    info = market.exchange_info(market.start_ms, 2400)
    out: dict[str, SymbolFilters] = {}
    for entry in info["symbols"]:
        f = parse_filters(entry.get("filters") or ())
        if f is not None:
            out[str(entry["symbol"])] = f
    return out


def account_brackets(config: EmulatorConfig, symbols: Sequence[str]) -> dict[str, SymbolBrackets]:
    """Leverage brackets of the served symbols from the real file; a symbol it lacks gets one default tier."""
    path = config.data_dir / LEVERAGE_TIERS
    known = load_brackets(path) if path.is_file() else {}
    return {s: known.get(s) or SymbolBrackets(s, (DEFAULT_TIER,)) for s in symbols}


def build_account(config: EmulatorConfig, market: Market) -> TradingAccount:
    """A ``SimAccount`` for the served symbols, configured from ``config`` (balance, fees, slippage)."""
    sim_config = SimConfig(balance=config.balance, taker_fee=config.taker_fee, maker_fee=config.maker_fee,
                           slippage_bps=config.slippage_bps, trigger_ids=config.trigger_ids)
    return SimAccount(account_filters(market), account_brackets(config, market.symbols), sim_config)
