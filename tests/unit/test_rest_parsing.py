"""Pure parts of the REST client: kline rows and the klines weight table."""

from __future__ import annotations

import pytest

from smc_quant.domain.candles import Candle
from smc_quant.exchange.rest import klines_weight, parse_kline

DOC_ROW = [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
           1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "17928899.62484339"]


def test_parse_kline_reads_every_field_of_the_documented_row() -> None:
    """The documented example row becomes a Candle with all twelve fields mapped."""
    candle = parse_kline("BTCUSDT", "1m", DOC_ROW)
    assert candle == Candle("BTCUSDT", "1m", 1499040000000, 0.0163479, 0.8, 0.015758, 0.015771,
                            148976.11427815, 2434.19055334, 308, 1756.87402397, 28.46694368)


@pytest.mark.parametrize(("limit", "weight"), [
    (1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)])
def test_klines_weight_follows_the_documented_table(limit: int, weight: int) -> None:
    """Weight is 1/2/5/10 for limits [1,100), [100,500), [500,1000], >1000."""
    assert klines_weight(limit) == weight


@pytest.mark.parametrize("limit", [0, 1501])
def test_klines_limit_outside_the_range_is_refused(limit: int) -> None:
    """Limits the exchange would reject are refused before any request."""
    with pytest.raises(ValueError, match=r"1\.\.1500"):
        klines_weight(limit)
