"""The account's order registry: every order and algo order, and the indexes the matching needs.

Open LIMIT orders and untriggered algo orders are indexed per symbol, so a price update only visits
the orders of its own symbol. Client ids map to the *latest* order that carried them (Binance keeps a
client id unique among open orders only; a filled order's id can be reused). Ids are counters from 1.
"""

from __future__ import annotations

from decimal import Decimal

from smc_quant.domain.trading import ZERO, OrderSide
from smc_quant.orders.broker import AlgoType, OrderStatus
from smc_quant.sim.records import AlgoRecord, OrderRecord

__all__ = ["OrderBook"]


class OrderBook:
    """Orders and algo orders of one account, by id, by client id, and open ones by symbol."""

    def __init__(self) -> None:
        self._orders: dict[int, OrderRecord] = {}
        self._order_ids: dict[tuple[str, str], int] = {}
        self._resting: dict[str, dict[int, OrderRecord]] = {}
        self._algos: dict[int, AlgoRecord] = {}
        self._algo_ids: dict[str, int] = {}
        self._open_algos: dict[str, dict[int, AlgoRecord]] = {}
        self.next_order_id = 1
        self.next_algo_id = 1

    # -- orders -------------------------------------------------------------------------------------

    def add_order(self, symbol: str, cid: str | None, side: OrderSide, type: str, qty: Decimal,
                  price: Decimal | None, reduce_only: bool, tif: str, time_ms: int) -> OrderRecord:
        """Record a new order (client id ``sim-<orderId>`` when none is given) and return it."""
        order_id = self.next_order_id
        self.next_order_id += 1
        order = OrderRecord(symbol, cid or f"sim-{order_id}", order_id, side, type, qty, price, reduce_only, tif,
                            time_ms)
        self._orders[order_id] = order
        if self.open_order(symbol, order.client_order_id) is None:
            self._order_ids[(symbol, order.client_order_id)] = order_id
        return order

    def rest(self, order: OrderRecord) -> None:
        """Put ``order`` on its symbol's book (it waits for the price)."""
        self._resting.setdefault(order.symbol, {})[order.order_id] = order

    def unrest(self, order: OrderRecord, status: OrderStatus | None, time_ms: int) -> None:
        """Take ``order`` off the book and release its margin; ``status`` None when a fill follows."""
        self._resting.get(order.symbol, {}).pop(order.order_id, None)
        order.margin = ZERO
        order.time_ms = time_ms
        if status is not None:
            order.status = status

    def is_resting(self, order: OrderRecord) -> bool:
        return order.order_id in self._resting.get(order.symbol, {})

    def resting(self, symbol: str | None = None) -> list[OrderRecord]:
        """Resting orders of ``symbol`` (or of every symbol), oldest first."""
        if symbol is not None:
            return list(self._resting.get(symbol, {}).values())
        return sorted((o for book in self._resting.values() for o in book.values()), key=lambda o: o.order_id)

    def has_resting(self, symbol: str) -> bool:
        return bool(self._resting.get(symbol))

    def held_margin(self) -> Decimal:
        """Initial margin held by all resting orders."""
        return sum((o.margin for book in self._resting.values() for o in book.values()), ZERO)

    def open_order(self, symbol: str, cid: str) -> OrderRecord | None:
        """The resting order of ``symbol`` with client id ``cid``, if any."""
        order_id = self._order_ids.get((symbol, cid))
        return self._resting.get(symbol, {}).get(order_id) if order_id is not None else None

    def find_order(self, symbol: str, cid: str | None, order_id: int | None) -> OrderRecord | None:
        """By ``order_id`` (checked against ``cid`` when both are given) or by the latest ``cid``."""
        if order_id is None and cid is not None:
            order_id = self._order_ids.get((symbol, cid))
        order = self._orders.get(order_id) if order_id is not None else None
        if order is None or order.symbol != symbol or (cid is not None and order.client_order_id != cid):
            return None
        return order

    # -- algo orders --------------------------------------------------------------------------------

    def add_algo(self, symbol: str, cid: str | None, side: OrderSide, type: AlgoType, trigger: Decimal | None,
                 quantity: Decimal | None, close_position: bool, reduce_only: bool, working_type: str,
                 time_ms: int, callback_rate: Decimal | None = None) -> AlgoRecord:
        """Record a new open algo order (client id ``simalgo-<algoId>`` when none is given)."""
        algo_id = self.next_algo_id
        self.next_algo_id += 1
        algo = AlgoRecord(symbol, cid or f"simalgo-{algo_id}", algo_id, side, type, trigger, quantity,
                          close_position, reduce_only, working_type, time_ms, callback_rate=callback_rate)
        self._algos[algo_id] = algo
        self._algo_ids[algo.client_algo_id] = algo_id
        self._open_algos.setdefault(symbol, {})[algo_id] = algo
        return algo

    def open_algo(self, cid: str) -> AlgoRecord | None:
        """The untriggered algo order with client id ``cid``, if any."""
        algo_id = self._algo_ids.get(cid)
        algo = self._algos.get(algo_id) if algo_id is not None else None
        return algo if algo is not None and algo_id in self._open_algos.get(algo.symbol, {}) else None

    def close_algo(self, algo: AlgoRecord) -> None:
        """Take ``algo`` out of the open index (it triggered or was cancelled)."""
        self._open_algos.get(algo.symbol, {}).pop(algo.algo_id, None)

    def is_open_algo(self, algo: AlgoRecord) -> bool:
        return algo.algo_id in self._open_algos.get(algo.symbol, {})

    def open_algos(self, symbol: str | None = None) -> list[AlgoRecord]:
        """Untriggered algo orders of ``symbol`` (or of every symbol), oldest first."""
        if symbol is not None:
            return list(self._open_algos.get(symbol, {}).values())
        return sorted((a for book in self._open_algos.values() for a in book.values()), key=lambda a: a.algo_id)

    def find_algo(self, cid: str | None, algo_id: int | None) -> AlgoRecord | None:
        """By ``algo_id`` (checked against ``cid`` when both are given) or by the latest ``cid``."""
        if algo_id is None and cid is not None:
            algo_id = self._algo_ids.get(cid)
        algo = self._algos.get(algo_id) if algo_id is not None else None
        if algo is None or (cid is not None and algo.client_algo_id != cid):
            return None
        return algo
