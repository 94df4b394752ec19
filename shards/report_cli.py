"""``smc-quant report``: how the account has traded, from its closed trades in PostgreSQL.

The same figures and page as a backtest (``smc_quant.backtest.report``: net PnL after fees, hit rate,
expectancy, profit factor, max drawdown, daily Sharpe/Sortino, exposure, per symbol and per exit reason,
equity and drawdown curves), over the trades of the database's current account (its latest epoch), printed
as text and written as ``report.json`` and ``report.html`` into ``--out``.

The window runs from ``--since`` (UTC, ``YYYY-MM-DD[THH:MM]`` or epoch ms, as the backtest's ``--from``; default
the first trade's entry) to the last trade's exit. The
percentages are of ``--balance`` (default ``SMC_TRADING__PAPER_BALANCE``): pass the account's equity at the
window's start for a live account. Paper funding payments are summed in the notes (live funding is not in
the database: the exchange's income history has it).
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = ["add_subcommand", "cmd_report"]


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


def cmd_report(args: argparse.Namespace) -> int:
    """Print the account's figures and write ``report.json`` / ``report.html``; exit 0 (1: database error)."""
    from shards.cli import _control_task, _settings
    from smc_quant.backtest.report import account_document, write_report
    from smc_quant.store.trading import TradingRepository

    balance = args.balance if args.balance is not None else Decimal(str(_settings().trading.paper_balance))

    async def task(pool: Any) -> int:
        repo = TradingRepository(pool)
        epoch = await repo.read_epoch()
        account = epoch.account if epoch is not None else "unbound"
        trades = await repo.trades(since_ms=args.since)
        if not trades:
            print(f"account {account}: no closed trades" + (" since the given date" if args.since else ""))
            return 0
        start = args.since if args.since is not None else min(t.entry_time_ms for t in trades)
        end = max(t.exit_time_ms for t in trades)
        notes = [f"starting equity of the figures: {balance} USDT (--balance)"]
        if args.balance is None and not account.startswith("paper"):
            notes.append("that is the paper balance setting, not this account's: pass --balance with the account's "
                         "equity at the window's start for true percentages")
        if account.startswith("paper"):
            notes.append(f"paper funding paid over the account's life: {await repo.funding_paid()} USDT "
                         "(not in the trades' net PnL)")
        doc = account_document(account, trades, balance, start, end, notes)
        json_path, html_path = write_report(Path(args.out), doc)
        _print(doc, account)
        print(f"report: {html_path} · {json_path}")
        return 0

    return _control_task(task)


def _print(doc: dict[str, Any], account: str) -> None:
    h = doc["runs"][account]["headline"]
    hit = f"{h['hit_rate'] * 100:.1f} %" if h["hit_rate"] is not None else "–"
    pf = f"{h['profit_factor']:.2f}" if h["profit_factor"] is not None else "–"
    print(f"account {account} · {doc['window']} · {h['trades']} trades · hit rate {hit}")
    print(f"net {h['net_pnl']} USDT ({h['return_pct']:+.2f} % of {doc['balance']}) · fees {h['fees']} · "
          f"profit factor {pf} · max drawdown {h['max_drawdown']} USDT ({h['max_drawdown_pct']:.2f} %)")
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
