"""Funding quotes: the real markPriceUpdate payload, the all-symbols frame, rejections, the book's merge and age."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest

from smc_quant.errors import DataRejected
from smc_quant.funding import FundingBook, FundingQuote, funding_cost_pct, parse_mark_prices

PAYLOAD = "payloads/binance-futures/market_data_json/mark_price_stream.json"


@pytest.fixture(scope="module")
def real(shared_data: Path) -> dict[str, object]:
    """Binance's documented markPriceUpdate (with the undocumented ``st`` key live frames carry)."""
    event: dict[str, object] = orjson.loads((shared_data / PAYLOAD).read_bytes())
    return event


def test_the_real_payload_parses_exactly(real: dict[str, object]) -> None:
    [(symbol, q)], rejected = parse_mark_prices(orjson.dumps(real))
    assert rejected == []
    assert symbol == "BTCUSDT"
    assert q == FundingQuote(D("0.00038167"), 1562306400000, D("11794.15000000"), 1562305380000)
    assert q.as_record() == {"rate": "0.00038167", "next_ms": 1562306400000}


def test_the_all_symbols_frame_in_its_combined_wrapper(real: dict[str, object]) -> None:
    eth = {**real, "s": "ETHUSDT", "r": "-0.00012000", "p": "1801.5"}
    quarterly = {**real, "s": "BTCUSDT_241227", "r": "", "T": 0}  # delivery contracts do not fund
    frame = orjson.dumps({"stream": "!markPrice@arr", "data": [real, quarterly, eth]})
    found, rejected = parse_mark_prices(frame)
    quotes = dict(found)
    assert rejected == []
    assert set(quotes) == {"BTCUSDT", "ETHUSDT"}
    assert (quotes["ETHUSDT"].rate, quotes["ETHUSDT"].mark) == (D("-0.00012000"), D("1801.5"))


@pytest.mark.parametrize(("change", "reason"), [
    ({"r": None}, "bad_field"), ({"r": "NaN"}, "bad_field"), ({"r": "abc"}, "bad_field"), ({"r": 0.0001}, "bad_field"),
    ({"p": "0"}, "bad_field"), ({"T": "1562306400000"}, "bad_field"), ({"E": True}, "bad_field"),
    ({"s": ""}, "bad_field"),
    ({"e": "kline"}, "not_mark_price"),
])
def test_a_bad_item_is_rejected_by_reason_and_the_others_kept(real: dict[str, object], change: dict[str, object],
                                                              reason: str) -> None:
    bad = {k: v for k, v in {**real, "s": "BADUSDT", **change}.items() if v is not None}
    quotes, rejected = parse_mark_prices(orjson.dumps({"stream": "!markPrice@arr", "data": [bad, real]}))
    assert [s for s, _ in quotes] == ["BTCUSDT"]
    assert [r.reason for r in rejected] == [reason]


def test_not_json_is_malformed() -> None:
    with pytest.raises(DataRejected) as info:
        parse_mark_prices(b'{"stream":"!markPrice@arr","data":[')
    assert info.value.reason == "malformed"


def test_the_book_keeps_the_newest_quote_and_forgets_stale_ones() -> None:
    """Age is the receiving clock's: a quote not refreshed for max_age_s reads as unknown."""
    now = [1000.0]
    book = FundingBook(max_age_s=120.0, clock=lambda: now[0])
    new = FundingQuote(D("0.0001"), 1_000_000, D("10"), 500_000)
    old = FundingQuote(D("0.0090"), 1_000_000, D("10"), 499_000)
    assert book.update([("XUSDT", new), ("XUSDT", old)]) == 1  # a late, older push changes nothing
    now[0] += 120.0
    assert book.quote("XUSDT") == new
    now[0] += 0.001
    assert book.quote("XUSDT") is None
    assert book.update([("XUSDT", new)]) == 1 and book.quote("XUSDT") == new  # refreshed: known again
    assert book.quote("YUSDT") is None
    assert len(book) == 1
    with pytest.raises(ValueError, match="positive"):
        FundingBook(0, clock=lambda: 0.0)


def test_who_pays() -> None:
    """A positive rate: longs pay, shorts receive; a negative rate the other way round (percent of notional)."""
    assert funding_cost_pct("LONG", D("0.0001")) == D("0.0100")
    assert funding_cost_pct("SHORT", D("0.0001")) == D("-0.0100")
    assert funding_cost_pct("SHORT", D("-0.0075")) == D("0.7500")


def test_the_emulator_command_line_sets_the_funding_rates(tmp_path: Path) -> None:
    """``--funding-rate`` and ``--symbol-funding SYMBOL=RATE`` reach the emulator's config; a rate beyond ±5 % or a
    pair without ``=`` is a usage error, not a silent default."""
    from smc_quant.exchange.emulator.cli import config_from, parser

    args = parser().parse_args(["--data", str(tmp_path), "--funding-rate", "-0.0002",
                                "--symbol-funding", "dogeusdt=0.0075", "BTCUSDT=0"])
    cfg = config_from(args)
    assert cfg.funding_rate == D("-0.0002")
    assert cfg.funding_rates == (("DOGEUSDT", D("0.0075")), ("BTCUSDT", D("0")))
    with pytest.raises(SystemExit):
        parser().parse_args(["--funding-rate", "0.9"])
    with pytest.raises(SystemExit, match="SYMBOL=RATE"):
        config_from(parser().parse_args(["--symbol-funding", "DOGEUSDT"]))
    with pytest.raises(SystemExit, match=r"within ±0\.05"):
        config_from(parser().parse_args(["--symbol-funding", "DOGEUSDT=0.2"]))
