"""The account-wide settings of the emulated account: Position Mode (One-way / Hedge), Asset Mode (Single /
Multi-Assets) and its fees (BNB Fee Discount, commission rates), with Binance's routes and rules
(``BINANCE-PROTOCOL.md`` §3.3, error codes §7).

- ``GET /fapi/v1/accountConfig`` (weight 5): ``feeTier``, ``canTrade``, ``canDeposit``, ``canWithdraw``,
  ``dualSidePosition``, ``updateTime``, ``multiAssetsMargin``, ``tradeGroupId``.
- ``GET``/``POST /fapi/v1/positionSide/dual`` (weight 30 / 1): the same mode again → -4059; with an open order
  (plain or algo) → -4067; with a position → -4068.
- ``GET``/``POST /fapi/v1/multiAssetsMargin`` (weight 30 / 1): the same mode again → -4171; with an open order
  → -4170. A change pushes ``ACCOUNT_CONFIG_UPDATE`` with ``ai.j`` on the user-data stream.
- ``GET``/``POST /fapi/v1/feeBurn`` (weight 30 / 1): BNB Fee Discount, off at start; while on, commissions are
  charged in BNB (``ORDER_TRADE_UPDATE`` ``N``/``n``) as long as the account's ``bnb_balance`` covers them and
  ``BNBUSDT`` has a price (``SimAccount._charge_bnb``).
- ``GET /fapi/v1/commissionRate`` (weight 20): the account's maker and taker rates for ``symbol`` (the
  emulator's ``maker_fee`` / ``taker_fee``); no symbol → -1102, an unknown one → -1121.
- Orders: in One-way Mode ``positionSide`` must be absent or ``BOTH``; in Hedge Mode it must be ``LONG`` or
  ``SHORT`` (else -4061) and ``reduceOnly`` may not be sent (-1106). The account behind stays one-way:
  Hedge Mode here exists to reject our orders the way Binance would, not to hold two positions a symbol.

The emulator starts in One-way, Single-Asset Mode (what smc-quant needs), unless configured otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from decimal import Decimal
from typing import Any

from aiohttp import web

from smc_quant.exchange.emulator.account import TradingAccount
from smc_quant.exchange.emulator.params import ApiError, Params
from smc_quant.exchange.emulator.rest import json_response
from smc_quant.orders.broker import AccountEvent, AccountModeChanged

__all__ = ["AccountModes"]

Handler = Callable[[Params], Awaitable[web.Response]]
Signed = Callable[[Handler, Callable[[web.Request], int]], Callable[[web.Request], Awaitable[web.StreamResponse]]]
SUCCESS = {"code": 200, "msg": "success"}


class AccountModes:
    """Position Mode and Asset Mode of one emulated account, its fee settings (BNB Fee Discount, commission
    rates), their routes, and the order-side rule."""

    def __init__(self, account: TradingAccount, publish: Callable[[list[AccountEvent]], None],
                 now_ms: Callable[[], int], *, hedge: bool = False, multi_assets: bool = False,
                 rates: tuple[Decimal, Decimal] = (Decimal("0.0002"), Decimal("0.0005")),
                 symbols: Collection[str] = ()) -> None:
        self._account = account
        self._rates = rates
        """(maker, taker) commission rates, fractions of the notional."""
        self._symbols = frozenset(symbols)
        self._publish = publish
        self._now = now_ms
        self.hedge = hedge
        self.multi_assets = multi_assets

    def check_order(self, p: Params) -> None:
        """The order's ``positionSide`` / ``reduceOnly`` against the Position Mode (-4061, -1106)."""
        side = p.opt("positionSide")
        if self.hedge:
            if side not in ("LONG", "SHORT"):
                raise ApiError(-4061, "Order's position side does not match user's setting.")
            if p.opt("reduceOnly") is not None:
                raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        elif side not in (None, "BOTH"):
            raise ApiError(-4061, "Order's position side does not match user's setting.")

    def routes(self, signed: Signed) -> list[web.RouteDef]:
        one: Callable[[web.Request], int] = lambda r: 1  # noqa: E731
        five: Callable[[web.Request], int] = lambda r: 5  # noqa: E731
        thirty: Callable[[web.Request], int] = lambda r: 30  # noqa: E731
        return [
            web.get("/fapi/v1/accountConfig", signed(self.config, five)),
            web.get("/fapi/v1/positionSide/dual", signed(self.get_dual, thirty)),
            web.post("/fapi/v1/positionSide/dual", signed(self.set_dual, one)),
            web.get("/fapi/v1/multiAssetsMargin", signed(self.get_multi, thirty)),
            web.post("/fapi/v1/multiAssetsMargin", signed(self.set_multi, one)),
            web.get("/fapi/v1/feeBurn", signed(self.get_fee_burn, thirty)),
            web.post("/fapi/v1/feeBurn", signed(self.set_fee_burn, one)),
            web.get("/fapi/v1/commissionRate", signed(self.commission_rate, lambda r: 20)),
        ]

    async def commission_rate(self, p: Params) -> web.Response:
        symbol = p.opt("symbol")
        if not symbol:
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol not in self._symbols:
            raise ApiError(-1121, "Invalid symbol.")
        maker, taker = self._rates
        return json_response({"symbol": symbol, "makerCommissionRate": str(maker),
                              "takerCommissionRate": str(taker)})

    async def get_fee_burn(self, p: Params) -> web.Response:
        return json_response({"feeBurn": self._account.fee_burn})

    async def set_fee_burn(self, p: Params) -> web.Response:
        self._account.fee_burn = _required_flag(p, "feeBurn")
        return json_response(SUCCESS)

    async def config(self, p: Params) -> web.Response:
        body: dict[str, Any] = {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                                "dualSidePosition": self.hedge, "updateTime": 0,
                                "multiAssetsMargin": self.multi_assets, "tradeGroupId": -1}
        return json_response(body)

    async def get_dual(self, p: Params) -> web.Response:
        return json_response({"dualSidePosition": self.hedge})

    async def get_multi(self, p: Params) -> web.Response:
        return json_response({"multiAssetsMargin": self.multi_assets})

    def _has_orders(self) -> bool:
        return bool(self._account.open_orders(None) or self._account.open_algo_orders(None))

    async def set_dual(self, p: Params) -> web.Response:
        wanted = _required_flag(p, "dualSidePosition")
        if wanted == self.hedge:
            raise ApiError(-4059, "No need to change position side.")
        if self._has_orders():
            raise ApiError(-4067, "Position side cannot be changed if there exists open orders.")
        if self._account.positions():
            raise ApiError(-4068, "Position side cannot be changed if there exists position.")
        self.hedge = wanted
        return json_response(SUCCESS)

    async def set_multi(self, p: Params) -> web.Response:
        wanted = _required_flag(p, "multiAssetsMargin")
        if wanted == self.multi_assets:
            raise ApiError(-4171, "Adjusted asset mode is currently set and does not need to be adjusted repeatedly.")
        if self._has_orders():
            raise ApiError(-4170, "Unable to adjust Multi-Assets Mode with open orders in USDⓈ-M Futures.")
        self.multi_assets = wanted
        self._publish([AccountModeChanged(multi_assets_margin=wanted, event_time_ms=self._now())])
        return json_response(SUCCESS)


def _required_flag(p: Params, name: str) -> bool:
    if p.opt(name) is None:
        raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return p.flag(name)
