"""Kline frame parsing and the data firewall, on Binance's own payloads."""

from __future__ import annotations

import json

import orjson
import pytest

from smc_quant.errors import DataRejected
from smc_quant.exchange.schemas import ControlReply, KlineUpdate, parse_frame

PAYLOADS = "payloads/binance-futures/market_data_json"


def _combined(shared_data, name: str) -> dict:  # type: ignore[no-untyped-def]
    data = json.loads((shared_data / PAYLOADS / name).read_text())
    return {"stream": f"{data['s'].lower()}@kline_{data['k']['i']}", "data": data}


def test_closed_kline_parses_to_candle(shared_data) -> None:  # type: ignore[no-untyped-def]
    """The documented closed-kline payload becomes a final candle with every field."""
    update = parse_frame(orjson.dumps(_combined(shared_data, "kline_stream_closed.json")))
    assert isinstance(update, KlineUpdate) and update.final
    c = update.candle
    assert (c.symbol, c.interval, c.open_time) == ("BTCUSDT", "1m", 1638747660000)
    assert (c.open, c.high, c.low, c.close, c.volume) == (0.001, 0.0025, 0.001, 0.002, 1000.0)
    assert (c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume) == (1.0, 100, 500.0, 0.5)


def test_open_kline_is_not_final(shared_data) -> None:  # type: ignore[no-untyped-def]
    """An in-candle update parses as non-final."""
    update = parse_frame(orjson.dumps(_combined(shared_data, "kline_stream_open.json")))
    assert isinstance(update, KlineUpdate) and not update.final


def test_control_reply() -> None:
    """A SUBSCRIBE ack is a control reply, not data."""
    reply = parse_frame('{"result":null,"id":7}')
    assert reply == ControlReply(7, None, None)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda k: k.update(c="NaN"), "bad_price"),
        (lambda k: k.update(l="-1"), "bad_price"),
        (lambda k: k.update(o="0"), "bad_price"),
        (lambda k: k.update(h="0.0001"), "high_below_low"),
        (lambda k: k.update(v="-5"), "bad_volume"),
        (lambda k: k.pop("c"), "malformed"),
        (lambda k: k.update(x="true"), "malformed"),
        (lambda k: k.update(t="soon"), "malformed"),
    ],
)
def test_firewall_rejects_bad_values(shared_data, mutate, reason) -> None:  # type: ignore[no-untyped-def]
    """Impossible values in a final kline are rejected with a countable reason."""
    frame = _combined(shared_data, "kline_stream_closed.json")
    mutate(frame["data"]["k"])
    with pytest.raises(DataRejected) as err:
        parse_frame(orjson.dumps(frame))
    assert err.value.reason == reason


@pytest.mark.parametrize("raw", ['{"stream":"x","data":{"e":"kline","k":', "[]", '"x"', '{"stream":"a","data":3}'])
def test_firewall_rejects_malformed_frames(raw: str) -> None:
    """Broken JSON and wrong shapes are rejected as malformed."""
    with pytest.raises(DataRejected) as err:
        parse_frame(raw)
    assert err.value.reason == "malformed"
