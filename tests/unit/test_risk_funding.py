"""The risk manager's funding guard, and the drawdown guard: funding inside the hold, the settings' limit,
drawdown by hand, transfers, the trades' path. Real exchangeInfo and leverage brackets (fixtures of test_risk)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from smc_quant.exchange.brackets import SymbolBrackets
from smc_quant.exchange.exchange_info import SymbolFilters
from smc_quant.funding import FundingQuote
from smc_quant.risk import RiskConfig, RiskManager
from tests.unit.test_risk import MIN, T0, _three, acct, market, rm, sig  # noqa: F401 (fixtures)


def _funding(rate: str, next_ms: int) -> FundingQuote:
    return FundingQuote(D(rate), next_ms, D("30000.0"), T0)


def test_funding_inside_the_hold_that_the_side_pays_is_refused(rm: RiskManager) -> None:  # noqa: F811
    """Default 0.05 %: a long refused when 0.06 % is due within the 2-hour hold, a short (which receives it)
    sized; the same rate after the hold, a rate at the limit, or an unknown quote never refuse; a refused
    signal rotates nothing out."""
    due = T0 + 30 * MIN
    refused = rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.0006", due))
    assert (refused.action, refused.reason) == ("skip", "funding")
    assert rm.evaluate(sig(side="SHORT", stop=2.0), acct(), D("30000.0"), T0,
                       funding=_funding("0.0006", due)).action == "open"
    assert rm.evaluate(sig(side="SHORT"), acct(), D("30000.0"), T0,
                       funding=_funding("-0.0006", due)).reason == "funding"  # shorts pay a negative rate
    assert rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("-0.0075", due)).action == "open"
    limit = rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.0005", due))
    assert limit.action == "open"  # exactly max_funding_pct is allowed
    hold = RiskConfig().max_hold_ms
    assert rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.01", T0 + hold)).reason == "funding"
    # the forced exit fills after the hold (the exit clock's 15 s, the next minute close): a minute's slack
    assert rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.01", T0 + hold + MIN)).reason == "funding"
    assert rm.evaluate(sig(), acct(), D("30000.0"), T0,
                       funding=_funding("0.01", T0 + hold + MIN + 1)).action == "open"
    assert rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.01", T0)).action == "open"  # settled
    assert rm.evaluate(sig(), acct(), D("30000.0"), T0, funding=None).action == "open"
    three = rm.evaluate(sig(), acct(positions=_three("2010")), D("30000.0"), T0, funding=_funding("0.0006", due))
    assert (three.action, three.close_symbol) == ("skip", None)


def test_funding_limit_comes_from_the_settings(market: tuple[dict[str, SymbolFilters],  # noqa: F811
                                                            dict[str, SymbolBrackets]]) -> None:
    """SMC_TRADING__MAX_FUNDING_PCT maps onto the risk config; a negative limit is refused."""
    from smc_quant.settings import load_settings

    cfg = RiskConfig.of(load_settings(trading={"max_funding_pct": 0.2}).trading)
    assert cfg.max_funding_pct == D("0.2")
    strict = RiskManager(cfg, *market)
    assert strict.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.0019", T0 + MIN)).action == "open"
    assert strict.evaluate(sig(), acct(), D("30000.0"), T0, funding=_funding("0.0021", T0 + MIN)).reason == "funding"
    with pytest.raises(ValueError, match="max_funding_pct"):
        RiskConfig(max_funding_pct=D("-0.01"))


def test_drawdown_by_hand_and_transfers_are_not_losses() -> None:
    """Wallet 10 000 at the baseline; trades made +1 000 then gave back 1 500 (Σ −500, peak +1 000): peak equity
    11 000, equity 9 500 → 13.6 %; an open loss of 400 more → 17.3 %. Withdrawing 2 000 moves wallet and base
    together: 7 500 at a 9 000 peak → the same 1 500 below it, 16.7 % of the smaller base; a deposit after a loss
    does not hide it (500 of 10 500). Nothing lost or a new high → 0."""
    from smc_quant.risk import drawdown_pct

    assert round(drawdown_pct(D(9500), D(0), D(-500), D(1000)), 2) == D("13.64")
    assert round(drawdown_pct(D(9500), D(-400), D(-500), D(1000)), 2) == D("17.27")
    assert round(drawdown_pct(D(7500), D(0), D(-500), D(1000)), 2) == D("16.67")
    assert drawdown_pct(D(10000), D(0), D(0), D(0)) == 0
    assert drawdown_pct(D(12000), D(50), D(2000), D(2000)) == 0
    assert round(drawdown_pct(D(10000), D(0), D(-500), D(0)), 2) == D("4.76")  # 500 lost, then 500 deposited
    assert drawdown_pct(D(0), D(0), D(0), D(0)) == 0


def test_drawdown_guard_follows_the_trades_and_trips_once() -> None:
    """+1 000 then −1 500 on a 10 000 wallet: 13.6 % stays under 15 %; an open loss of 400 trips it (17.3 %), once;
    rearmed (a resume) it trips again while still past the limit; a new baseline starts from that PnL."""
    from smc_quant.risk import DrawdownGuard

    guard = DrawdownGuard(D(15))
    guard.on_trade(D(1000))
    guard.on_trade(D(-1500))
    assert (guard.pnl, guard.pnl_peak, guard.peak_equity(D(9500))) == (D(-500), D(1000), D(11000))
    assert guard.trip(D(9500), D(0)) is None
    tripped = guard.trip(D(9500), D(-400))
    assert tripped is not None and round(tripped, 2) == D("17.27")
    assert guard.trip(D(9500), D(-400)) is None  # latched
    guard.rearm()
    assert guard.trip(D(9500), D(-400)) is not None
    guard.restore(D(0), D(0))
    assert not guard.tripped and guard.trip(D(9500), D(-400)) is None  # 4.2 % from the new baseline
    assert DrawdownGuard().trip(D(1), D(-1)) is None  # limit 0: off


def test_funding_is_money_lost_in_the_drawdown_and_the_path_folds_in_time_order() -> None:
    """Paying 100 of funding on a 10 000 wallet is a 1 % drawdown (the wallet alone would cancel out of it);
    receiving it back restores the peak. ``pnl_path`` folds trades and funding by time, whatever order they
    come in: +300 at t=1, −100 funding at t=2, −500 at t=3 → Σ −300, peak +300; a path that only falls has
    peak 0."""
    from smc_quant.risk import DrawdownGuard, funding_amount, pnl_path

    # the update's bc when sent, else the wallet's move since the last known wallet, else unknown
    assert funding_amount(D("-0.38"), D(9000), D(1)) == D("-0.38")
    assert funding_amount(None, D("9999.62"), D(10000)) == D("-0.38")
    assert funding_amount(None, D(9999), None) is None and funding_amount(None, None, D(1)) is None

    guard = DrawdownGuard(D(15))
    guard.on_funding(D(-100))
    assert (guard.pnl, guard.pnl_peak) == (D(-100), D(0))
    assert guard.pct(D(9900), D(0)) == D(1)
    guard.on_funding(D(100))
    assert guard.pct(D(10000), D(0)) == 0
    assert pnl_path([(3, D(-500)), (1, D(300)), (2, D(-100))]) == (D(-300), D(300))
    assert pnl_path([(1, D(-5)), (2, D(-1))]) == (D(-6), D(0))
    assert pnl_path([]) == (D(0), D(0))
