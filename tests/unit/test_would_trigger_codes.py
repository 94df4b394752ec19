"""-4142 STRATEGY_INVALID_TRIGGER_PRICE ("REJECT: take profit or stop order will be triggered immediately") is the
algo service's -2021: the trigger is already passed. The reactions table maps both alike, and the order manager
closes the position at market for either, exactly as it does for -2021 (real PaperBroker and SimAccount, real
filters and candles; the only stand-in is a broker that answers the stop with the code under test)."""

from __future__ import annotations

import pytest

from smc_quant.errors import VenueRejected
from smc_quant.orders.broker import AlgoRequest, AlgoState
from smc_quant.orders.client_ids import Leg, client_order_id
from smc_quant.orders.reactions import REACTIONS, Reaction, reaction_for
from smc_quant.paper import PaperBroker
from tests.unit.order_manager_kit import bars, client_ids, decision, make_manager
from tests.unit.test_paper_broker import make_venue, pytestmark

__all__ = ["pytestmark"]

MESSAGES = {-2021: "Order would immediately trigger.",
            -4142: "REJECT: take profit or stop order will be triggered immediately"}


def test_4142_has_the_rule_of_2021() -> None:
    """Same reaction, same step (recompute the trigger or close); the name is Binance's."""
    would, strategy = REACTIONS[-2021], REACTIONS[-4142]
    assert (strategy.reaction, strategy.action) == (would.reaction, would.action) == (
        Reaction.REPAIR, "recompute_trigger_or_close")
    assert strategy.name == "STRATEGY_INVALID_TRIGGER_PRICE"
    assert reaction_for(400, -4142, MESSAGES[-4142]) is strategy


def refuse_stops(broker: PaperBroker, code: int) -> None:
    """The exchange answers every STOP_MARKET with ``code`` (the price already went through it)."""
    place = broker.place_algo

    async def place_algo(request: AlgoRequest) -> AlgoState:
        if request.type == "STOP_MARKET":
            raise VenueRejected(f"{code} {MESSAGES[code]}", status=400, code=code)
        return await place(request)

    broker.place_algo = place_algo  # type: ignore[method-assign]


@pytest.mark.parametrize("code", [-2021, -4142])
async def test_a_stop_refused_as_already_triggered_closes_the_position_at_once(code: int) -> None:
    """ensure_protection: the stop is refused with ``code`` → the position is closed at market right away (an exit
    order ``ex-0``), not retried as an ordinary refusal three times and then closed with an alarm."""
    venue = make_venue()
    refuse_stops(venue.broker, code)
    price = venue.start("ETHUSDT", 100)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", 100), stop_pct=0.4, target_pct=0.8)
    manager = make_manager(venue)
    result = await manager.open(d, price)  # the stop is refused here too: closed at once
    assert result.position is not None and result.close is not None and result.close.closed  # a round trip
    assert result.reason.startswith("closed_at_once: STOP_MARKET already passed")
    assert venue.position("ETHUSDT") is None

    stops = [c for c in client_ids(venue.account) if "-sl-" in c]
    assert stops == []  # one send, refused: no second attempt
    assert manager.stats["immediate_trigger_closes"] == 1 and manager.stats["alarms"] == 0
    assert client_order_id(d.signal.signal_id, Leg.EXIT, 0) in client_ids(venue.account)


@pytest.mark.parametrize("code", [-2021, -4142])
async def test_ensure_protection_closes_for_either_code(code: int) -> None:
    """A position protected normally loses its stop; re-placing it is refused with ``code``: closed at market."""
    venue = make_venue()
    price = venue.start("ETHUSDT", 100)
    d = decision("ETHUSDT", "LONG", price, bars("ETHUSDT", 100), stop_pct=0.4, target_pct=0.8)
    manager = make_manager(venue)
    result = await manager.open(d, price)
    assert result.position is not None and result.sl is not None
    await venue.broker.cancel_algo("ETHUSDT", result.sl.client_algo_id)

    refuse_stops(venue.broker, code)
    sl, tp = await manager.ensure_protection(result.position, price)

    assert (sl, tp) == (None, None) and venue.position("ETHUSDT") is None
    assert manager.stats["immediate_trigger_closes"] == 1 and manager.stats["alarms"] == 0
