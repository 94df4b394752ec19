"""Which protection leg an exit fill whose client id is not ours was: the stop's or the target's own order, named
by its price when ``ALGO_UPDATE``'s ``ai`` has not named it first (a real Binance trade frame, its price moved)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path

from smc_quant.domain.trading import ExitReason, Position
from smc_quant.exchange.wire_trading import parse_event
from smc_quant.executor_events import nearest_leg
from smc_quant.orders.broker import OrderUpdate

FRAME = "payloads/binance-integration/ws_messages/ws_futures_order_update_trade_reduce_only_qty.json"


def test_an_unnamed_exit_fill_is_the_leg_its_price_is_near(shared_data: Path) -> None:
    fill = parse_event(json.loads((shared_data / FRAME).read_text()))
    assert isinstance(fill, OrderUpdate) and fill.has_fill
    long = Position(fill.symbol, "LONG", D(1), D(100), 0, 5, "s", 0.7, stop_price=D(98), target_price=D(103))

    def at(price: str, side: str = "SELL") -> ExitReason | None:
        return nearest_leg(long, replace(fill, side=side, last_price=D(price)))  # type: ignore[arg-type]

    assert at("97.9") is ExitReason.STOP_LOSS  # a stop filled with slippage
    assert at("96.5") is None  # beyond half the stop's distance again: not the stop's fill (a person's close)
    assert at("103.02") is ExitReason.TAKE_PROFIT
    assert at("100.4") is None  # near neither leg: a manual close stays `reconciled`
    assert at("97.9", side="BUY") is None  # the entry's side: not an exit
    assert nearest_leg(replace(long, stop_price=None), replace(fill, side="SELL", last_price=D(98))) is None
    short = replace(long, side="SHORT", stop_price=D(102), target_price=D(97))
    assert nearest_leg(short, replace(fill, side="BUY", last_price=D("102.05"))) is ExitReason.STOP_LOSS
