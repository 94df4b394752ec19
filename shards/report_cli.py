"""``smc-quant report``: how the account has traded, from its closed trades in PostgreSQL.

The same figures and page as a backtest (``smc_quant.backtest.report``: net PnL after fees, hit rate,
expectancy, profit factor, max drawdown, daily Sharpe/Sortino, exposure, per symbol and per exit reason,
equity and drawdown curves), over the trades of the database's current account (its latest epoch), printed
as text and written as ``report.json`` and ``report.html`` into ``--out``.

The window runs from ``--since`` (UTC, ``YYYY-MM-DD[THH:MM]`` or epoch ms, as the backtest's ``--from``; default
the first trade's entry) to the last trade's exit. The percentages are of ``--balance`` (default
``SMC_TRADING__PAPER_BALANCE``): pass the account's equity at the window's start for a live account.

Funding is not in a trade's net PnL; the headline adds what the account paid over the window
(``funding_paid``, received counts negative) and ``net_after_funding``: for the paper account from its stored
payments, for a signed account from the exchange's income history (``GET /fapi/v1/income``, which keeps three
months; no keys or no answer → left out, and said so).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from smc_quant.settings import Settings

__all__ = ["ReportRequest", "account_report", "add_subcommand", "cmd_report"]


@dataclass(frozen=True)
class ReportRequest:
    out: Path
    balance: Decimal | None = None
    """``None``: ``SMC_TRADING__PAPER_BALANCE``."""
    since_ms: int | None = None


def _time(text: str) -> int:
    from smc_quant.backtest.data import BacktestDataError, parse_time  # the backtest's --from/--to formats

    try:
        ms = parse_time(text)
    except BacktestDataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert ms is not None
    return ms


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive amount of USDT: {text!r}")
    return value


async def _exchange_funding(settings: Settings, start_ms: int, end_ms: int) -> Decimal:
    """What the signed account paid in funding over ``[start_ms, end_ms]``, from its income history."""
    import aiohttp

    from shards.trading import live_broker
    from smc_quant.exchange.governor import WeightGovernor

    async with aiohttp.ClientSession() as session:
        rows = await live_broker(settings, session, WeightGovernor()).funding_income(start_ms)
    return -sum((income for t, income in rows if t <= end_ms), Decimal(0))


async def account_report(pool: Any, settings: Settings, request: ReportRequest) -> dict[str, Any] | None:
    """Build, write and print the report of the database's current account; ``None`` when it has no closed
    trade in the window (said so)."""
    from smc_quant.backtest.report import account_document, write_report
    from smc_quant.store.trading import TradingRepository

    repo = TradingRepository(pool)
    epoch = await repo.read_epoch()
    account = epoch.account if epoch is not None else "unbound"
    trades = await repo.trades(since_ms=request.since_ms)
    if not trades:
        print(f"account {account}: no closed trades" + (" in the window" if request.since_ms else ""))
        return None
    start = request.since_ms if request.since_ms is not None else min(t.entry_time_ms for t in trades)
    end = max(t.exit_time_ms for t in trades)
    balance = request.balance if request.balance is not None else Decimal(str(settings.trading.paper_balance))
    notes = [f"starting equity of the figures: {balance} USDT (--balance)"]
    if request.balance is None and not account.startswith("paper"):
        notes.append("that is the paper balance setting, not this account's: pass --balance with the account's "
                     "equity at the window's start for true percentages")
    funding: Decimal | None = None
    if account.startswith("paper"):
        funding, source = await repo.funding_between(start, end), "the paper account's stored payments"
    elif settings.binance_api_key is not None and settings.binance_api_secret is not None:
        try:
            funding, source = await _exchange_funding(settings, start, end), "the exchange's income history"
        except Exception as exc:  # the report stands without it
            source = f"unknown ({type(exc).__name__}: {str(exc)[:120]})"
    else:
        source = "unknown (no API keys to read the exchange's income history)"
    notes.append(f"funding paid over the window: {'–' if funding is None else funding} USDT, from {source}; "
                 "not in the trades' net PnL nor in the equity curve")
    doc = account_document(account, trades, balance, start, end, notes, funding_paid=funding)
    json_path, html_path = write_report(request.out, doc)
    _print(doc, account)
    print(f"report: {html_path} · {json_path}")
    return doc


def cmd_report(args: argparse.Namespace) -> int:
    """Print the account's figures and write ``report.json`` / ``report.html``; exit 0 (1: database error)."""
    from shards.cli import _control_task, _settings

    settings = _settings()
    request = ReportRequest(Path(args.out), args.balance, args.since)

    async def task(pool: Any) -> int:
        await account_report(pool, settings, request)
        return 0

    return _control_task(task)


def _print(doc: dict[str, Any], account: str) -> None:
    h = doc["runs"][account]["headline"]
    hit = f"{h['hit_rate'] * 100:.1f} %" if h["hit_rate"] is not None else "–"
    pf = f"{h['profit_factor']:.2f}" if h["profit_factor"] is not None else "–"
    print(f"account {account} · {doc['window']} · {h['trades']} trades · hit rate {hit}")
    print(f"net {h['net_pnl']} USDT ({h['return_pct']:+.2f} % of {doc['balance']}) · fees {h['fees']} · "
          f"profit factor {pf} · max drawdown {h['max_drawdown']} USDT ({h['max_drawdown_pct']:.2f} %)")
    if h.get("funding_paid") is not None:
        print(f"funding paid {h['funding_paid']} USDT · net after funding {h['net_after_funding']} USDT")
    for title, key in (("per exit reason", "by_exit_reason"), ("per symbol", "by_symbol")):
        rows = doc["runs"][account][key]
        print(f"{title}: " + " · ".join(f"{k} {v['trades']} ({v['net_pnl']})" for k, v in rows.items()))
    for note in doc["notes"]:
        print(f"note: {note}")


def add_subcommand(sub: Any) -> None:
    rp = sub.add_parser("report", help="the account's closed trades: figures, equity curve; JSON + HTML report")
    rp.add_argument("--since", type=_time, default=None,
                    help="only trades closed at or after this time (UTC, YYYY-MM-DD[THH:MM] or epoch ms)")
    rp.add_argument("--balance", type=_money, default=None,
                    help="starting equity for the percentages (default SMC_TRADING__PAPER_BALANCE)")
    rp.add_argument("--out", default="reports/account", help="report folder (default reports/account)")
    rp.set_defaults(func=cmd_report)
