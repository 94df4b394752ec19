"""The emulator's wire formatting on the real data: exact number strings, in-candle paths, frame bytes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from smc_quant.exchange.emulator import EmulatorConfig
from smc_quant.exchange.emulator.frames import Bar, Precision, fmt, in_candle_path, ws_text_frame
from smc_quant.exchange.emulator.market import Market


@pytest.fixture(scope="module")
def market(shared_data: Path) -> Market:
    """Every real 1m series, mapped onto the 347 exchangeInfo symbols."""
    return Market(EmulatorConfig(data_dir=shared_data, map_to_exchange_info=True))


def test_every_wire_string_parses_back_to_the_source_float(market: Market) -> None:
    """Prices and volumes formatted for the wire parse back to exactly the source floats."""
    for src, s in market.series.items():
        prec = market.precision[src]
        for column, decimals in (
            (s.open, prec.price),
            (s.high, prec.price),
            (s.low, prec.price),
            (s.close, prec.price),
            (s.volume, prec.qty),
        ):
            for x in column[:3000].tolist():
                text = fmt(x, decimals)
                assert float(text) == x, (src, x, text)
                assert "e" not in text, (src, x, text)


def test_fmt_pads_like_binance_and_never_rounds() -> None:
    """Values get the symbol's decimals ("79095.40") unless that would change them."""
    assert fmt(79095.4, 2) == "79095.40"
    assert fmt(0.0000123, 2) == "0.0000123"
    assert fmt(1e-7, 8) == "0.00000010"
    assert fmt(12.0, 0) == "12"


def test_in_candle_paths_stay_inside_the_real_range(market: Market) -> None:
    """Partial bars stay within [low, high], widen monotonically, grow in volume and end at the real bar."""
    for src in market.series:
        prec = market.precision[src]
        for i in range(0, 2000, 7):
            real = market.bar(src, i)
            path = in_candle_path(real, 4, prec)
            assert path[-1] == real
            assert len(path) == 5
            for a, b in itertools.pairwise(path):
                assert b.high >= a.high
                assert b.low <= a.low
                assert b.volume >= a.volume
            for p in path:
                assert p.open == real.open
                assert (
                    real.low <= p.low <= min(p.open, p.close) <= max(p.open, p.close) <= p.high <= real.high
                )


def test_in_candle_path_without_updates_is_the_bar() -> None:
    """With no in-candle updates only the final bar is sent."""
    bar = Bar(1.0, 2.0, 0.5, 1.5, 10.0)
    assert in_candle_path(bar, 0, Precision(2, 1)) == [bar]


@pytest.mark.parametrize(
    ("size", "header"),
    [(125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"), (65536, b"\x81\x7f" + (65536).to_bytes(8, "big"))],
)
def test_ws_text_frames_use_the_right_length_encoding(size: int, header: bytes) -> None:
    """Server frames are unmasked FIN text frames with 7-bit, 16-bit or 64-bit lengths."""
    payload = b"x" * size
    assert ws_text_frame(payload) == header + payload
