"""The backtest report: trades table, headline figures, breakdowns; written as JSON and as an HTML page. The
account's own trades (``smc-quant report``) get the same figures and page (:func:`account_document`).

Every figure is computed from the trades table alone (plus the starting balance and the window), so anyone
can recompute it (the acceptance test does, in plain Python). Definitions (``net`` = gross PnL − fees, USDT):

- ``hit_rate`` = trades with net > 0 / trades;
- ``expectancy`` = Σ net / trades (USDT per trade, after fees); ``expectancy_pct`` = mean of each trade's
  net % of its entry notional;
- ``profit_factor`` = Σ net of winners / |Σ net of losers| (``null`` without a losing trade);
- equity after trade k (in exit-time order) = balance + Σ net of trades 1..k; ``max_drawdown`` = the largest
  fall from a running peak of that curve (the peak includes the starting balance), in USDT and in % of the peak;
  beside the headline (``marked``, not from the trades), a backtest gives ``max_drawdown_marked`` (and ``_pct``):
  the same on the equity marked to market at every minute's close (wallet + unrealised PnL,
  ``BacktestResult.equity``) — what the account went through with its positions open, which the trades table
  cannot show (a trade that fell 3 % before reaching its target);
- daily returns: for each UTC day d of the window, r_d = Σ net of trades exiting on d / equity at the start
  of d; ``sharpe_daily`` = mean(r) / stdev(r) × √365 (sample stdev; ``null`` when it is 0 or < 2 days);
  ``sortino_daily`` = mean(r) / √(mean(min(r, 0)²)) × √365 (``null`` without a losing day);
- ``exposure`` = length of the union of the trades' [entry, exit] intervals / window length;
- ``fees`` = Σ fees; ``net_pnl`` = Σ net; ``return_pct`` = net_pnl / balance × 100.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from smc_quant.domain.trading import Trade

__all__ = ["DAY_MS", "account_document", "breakdown", "build_document", "daily_returns", "headline", "plots",
           "run_report", "trade_rows", "write_report"]

DAY_MS = 86_400_000


def trade_rows(trades: Iterable[Trade]) -> list[dict[str, Any]]:
    """The trades table: one dict per trade, money as Decimal strings, times in epoch ms."""
    return [{"signal_id": t.signal_id, "symbol": t.symbol, "side": t.side, "quantity": format(t.quantity, "f"),
             "entry_price": format(t.entry_price, "f"), "exit_price": format(t.exit_price, "f"),
             "entry_time_ms": t.entry_time_ms, "exit_time_ms": t.exit_time_ms, "fees": format(t.fees, "f"),
             "gross_pnl": format(t.gross_pnl, "f"), "net_pnl": format(t.net_pnl, "f"),
             "net_return_pct": t.net_return_pct, "exit_reason": t.exit_reason.value, "confidence": t.confidence}
            for t in trades]


def _nets(trades: Sequence[Trade]) -> list[Decimal]:
    return [t.net_pnl for t in trades]


def _profit_factor(nets: Sequence[Decimal]) -> float | None:
    wins = sum((n for n in nets if n > 0), Decimal(0))
    losses = -sum((n for n in nets if n < 0), Decimal(0))
    return None if losses == 0 else float(wins / losses)


def _drawdown(balance: Decimal, nets: Sequence[Decimal]) -> tuple[Decimal, float]:
    return _drawdown_of(balance, itertools.accumulate(nets, initial=balance))


def _drawdown_of(balance: Decimal, levels: Iterable[Decimal]) -> tuple[Decimal, float]:
    """The largest fall from a running peak of the equity ``levels`` (the peak starts at ``balance``), in USDT
    and in % of that peak."""
    peak, worst, worst_pct = balance, Decimal(0), 0.0
    for equity in levels:
        peak = max(peak, equity)
        if peak - equity > worst:
            worst = peak - equity
        if peak > 0:
            worst_pct = max(worst_pct, float((peak - equity) / peak * 100))
    return worst, worst_pct


def daily_returns(trades: Sequence[Trade], balance: Decimal, start_ms: int, end_ms: int) -> list[float]:
    """r_d of every UTC day touching [start_ms, end_ms) (see the module docstring), and the day of any exit after
    it (a forced exit at the window's last minute closes at ``end_ms``: its PnL is in the net, so in a day too)."""
    first, last = start_ms // DAY_MS, (max(end_ms, start_ms + 1) - 1) // DAY_MS
    last = max([last, *(t.exit_time_ms // DAY_MS for t in trades)])
    pnl: dict[int, Decimal] = {}
    for t in trades:
        day = t.exit_time_ms // DAY_MS
        pnl[day] = pnl.get(day, Decimal(0)) + t.net_pnl
    equity, out = balance, []
    for day in range(first, last + 1):
        p = pnl.get(day, Decimal(0))
        out.append(float(p / equity) if equity > 0 else 0.0)
        equity += p
    return out


def _exposure(trades: Sequence[Trade], start_ms: int, end_ms: int) -> float:
    spans = sorted((t.entry_time_ms, t.exit_time_ms) for t in trades)
    covered, cur_s, cur_e = 0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_s is not None and cur_e is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_s is not None and cur_e is not None:
        covered += cur_e - cur_s
    return covered / (end_ms - start_ms) if end_ms > start_ms else 0.0


def headline(trades: Sequence[Trade], balance: Decimal, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The headline figures (definitions in the module docstring)."""
    trades = sorted(trades, key=lambda t: (t.exit_time_ms, t.signal_id))
    nets = _nets(trades)
    n = len(trades)
    net = sum(nets, Decimal(0))
    dd, dd_pct = _drawdown(balance, nets)
    r = daily_returns(trades, balance, start_ms, end_ms)
    sd = statistics.stdev(r) if len(r) >= 2 else 0.0
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r)) if r else 0.0
    mean = statistics.fmean(r) if r else 0.0
    return {
        "trades": n,
        "wins": sum(1 for x in nets if x > 0),
        "hit_rate": (sum(1 for x in nets if x > 0) / n) if n else None,
        "net_pnl": format(net, "f"),
        "fees": format(sum((t.fees for t in trades), Decimal(0)), "f"),
        "expectancy": format(net / n, "f") if n else None,
        "expectancy_pct": statistics.fmean(t.net_return_pct for t in trades) if n else None,
        "profit_factor": _profit_factor(nets),
        "max_drawdown": format(dd, "f"),
        "max_drawdown_pct": dd_pct,
        "sharpe_daily": mean / sd * math.sqrt(365) if sd > 0 else None,
        "sortino_daily": mean / down * math.sqrt(365) if down > 0 else None,
        "exposure": _exposure(trades, start_ms, end_ms),
        "return_pct": float(net / balance * 100) if balance else 0.0,
        "days": len(r),
    }


def breakdown(trades: Sequence[Trade], key: str) -> dict[str, dict[str, Any]]:
    """Per ``symbol`` or per ``exit_reason``: trades, hit rate, net PnL and expectancy (USDT per trade)."""
    groups: dict[str, list[Trade]] = {}
    for t in trades:
        k = t.exit_reason.value if key == "exit_reason" else str(getattr(t, key))
        groups.setdefault(k, []).append(t)
    out = {}
    for k in sorted(groups):
        nets = _nets(groups[k])
        net = sum(nets, Decimal(0))
        out[k] = {"trades": len(nets), "hit_rate": sum(1 for x in nets if x > 0) / len(nets),
                  "net_pnl": format(net, "f"), "expectancy": format(net / len(nets), "f")}
    return out


def run_report(trades: Sequence[Trade], balance: Decimal, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Headline, breakdowns and the trades table of one run."""
    ordered = sorted(trades, key=lambda t: (t.exit_time_ms, t.signal_id))
    return {"headline": headline(ordered, balance, start_ms, end_ms),
            "by_symbol": breakdown(ordered, "symbol"), "by_exit_reason": breakdown(ordered, "exit_reason"),
            "trades": trade_rows(ordered)}


def build_document(title: str, symbols: Sequence[str], runs: Mapping[str, Any], notes: Sequence[str],
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report document of several runs over one window (``runs``: name → ``BacktestResult``)."""
    first = next(iter(runs.values()))
    window = f"{_iso(first.start_ms)} → {_iso(first.end_ms)} (UTC)"
    doc: dict[str, Any] = {
        "title": title, "window": window, "start_ms": first.start_ms, "end_ms": first.end_ms,
        "balance": format(first.balance, "f"), "candles": first.candles, "symbols": list(symbols),
        "notes": list(notes), "runs": {}, "signals": {}, "skip_reasons": {}, "open_at_end": {}, "seconds": {},
    }
    for name, res in runs.items():
        doc["runs"][name] = run_report(res.trades, res.balance, res.start_ms, res.end_ms)
        if res.equity:  # not a figure of the trades table: beside the headline, shown with it
            dd, dd_pct = _drawdown_of(res.balance, (e for _, e in res.equity))
            doc.setdefault("marked", {})[name] = {"max_drawdown_marked": format(dd, "f"),
                                                  "max_drawdown_marked_pct": dd_pct}
        if res.funding_paid:  # simulated (--funding-rate): money that left the wallet outside the trades' PnL
            head = doc["runs"][name]["headline"]
            head["funding_paid"] = format(res.funding_paid, "f")
            head["net_after_funding"] = format(Decimal(head["net_pnl"]) - res.funding_paid, "f")
        doc["signals"][name] = len(res.signals)
        doc["skip_reasons"][name] = res.skip_reasons
        doc["open_at_end"][name] = res.open_positions
        doc["seconds"][name] = round(res.seconds, 3)
    doc.update(extra or {})
    return doc


def account_document(account: str, trades: Sequence[Trade], balance: Decimal, start_ms: int, end_ms: int,
                     notes: Sequence[str] = (), funding_paid: Decimal | None = None) -> dict[str, Any]:
    """The report document of the account's own closed trades over ``[start_ms, end_ms]`` (one run, named after
    the account), with ``balance`` as the starting equity of the figures. ``funding_paid`` (received counts
    negative; ``None``: unknown) adds ``funding_paid`` and ``net_after_funding`` = ``net_pnl − funding_paid`` to
    the headline."""
    run = run_report(trades, balance, start_ms, end_ms)
    head = run["headline"]
    head["funding_paid"] = None if funding_paid is None else format(funding_paid, "f")
    head["net_after_funding"] = None if funding_paid is None else format(Decimal(head["net_pnl"]) - funding_paid, "f")
    return {"heading": "Account", "title": account, "window": f"{_iso(start_ms)} → {_iso(end_ms)} (UTC)",
            "start_ms": start_ms, "end_ms": end_ms, "balance": format(balance, "f"),
            "symbols": sorted({t.symbol for t in trades}), "notes": list(notes), "runs": {account: run}}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def _curve(balance: Decimal, report: Mapping[str, Any], start_ms: int) -> tuple[list[int], list[float]]:
    """(time, realised equity) after each trade, from the trades table."""
    xs, ys, eq = [start_ms], [float(balance)], balance
    for row in report["trades"]:
        eq += Decimal(row["net_pnl"])
        xs.append(int(row["exit_time_ms"]))
        ys.append(float(eq))
    return xs, ys


def plots(runs: Mapping[str, Mapping[str, Any]], balance: Decimal, start_ms: int) -> dict[str, str]:
    """Equity curves and drawdowns of every run as PNG, base64-encoded (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    for name, title in (("equity", "Equity (USDT, realised)"), ("drawdown", "Drawdown from peak (%)")):
        fig, ax = plt.subplots(figsize=(10, 3.6), dpi=90)
        for label, rep in runs.items():
            xs, ys = _curve(balance, rep, start_ms)
            if name == "drawdown":
                peak, dd = ys[0], []
                for y in ys:
                    peak = max(peak, y)
                    dd.append(-(peak - y) / peak * 100 if peak > 0 else 0.0)
                ys = dd
            ax.step(np.array(xs, dtype="datetime64[ms]"), ys, where="post", label=label)
        ax.set_title(title)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # 10 004.1, not "0.41 + 1e4"
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        out[name] = base64.b64encode(buf.getvalue()).decode()
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _skip_rows(doc: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """Signals per run, then why signals were not traded (the executor's skip reasons, most frequent first),
    then the positions still open at the window's end."""
    skips: Mapping[str, Mapping[str, int]] = doc["skip_reasons"]
    total: dict[str, int] = {}
    for counts in skips.values():
        for reason, n in counts.items():
            total[reason] = total.get(reason, 0) + n
    rows: list[dict[str, Any]] = [{"signals": "signals", **{n: doc.get("signals", {}).get(n) for n in names}}]
    rows += [{"signals": f"skipped: {reason}", **{n: skips.get(n, {}).get(reason, 0) for n in names}}
             for reason in sorted(total, key=lambda r: (-total[r], r))]
    rows.append({"signals": "open at the end", **{n: doc.get("open_at_end", {}).get(n) for n in names}})
    return rows


def _html(doc: Mapping[str, Any], images: Mapping[str, str]) -> str:
    runs = doc["runs"]
    names = list(runs)
    keys = list(next(iter(runs.values()))["headline"]) if runs else []
    head_rows = [{"figure": k, **{n: runs[n]["headline"][k] for n in names}} for k in keys]
    marked: Mapping[str, Mapping[str, Any]] = doc.get("marked", {})
    for k in ("max_drawdown_marked", "max_drawdown_marked_pct"):
        if marked:
            head_rows.append({"figure": k, **{n: marked.get(n, {}).get(k) for n in names}})
    heading = doc.get("heading", "Backtest")
    candles = f"{doc['candles']} candles · " if "candles" in doc else ""
    parts = [f"<h1>{html.escape(heading)} {html.escape(doc['title'])}</h1>",
             f"<p>{html.escape(doc['window'])} · balance {html.escape(doc['balance'])} USDT · "
             f"{candles}{html.escape(', '.join(doc['symbols']))}</p>",
             "<h2>Scorecard (after fees)</h2>", _table(head_rows, ["figure", *names]),
             f'<h2>Equity</h2><img alt="equity curve" src="data:image/png;base64,{images["equity"]}">',
             f'<h2>Drawdown</h2><img alt="drawdown" src="data:image/png;base64,{images["drawdown"]}">']
    for n in names:
        rep = runs[n]
        sym = [{"symbol": k, **v} for k, v in rep["by_symbol"].items()]
        why = [{"exit_reason": k, **v} for k, v in rep["by_exit_reason"].items()]
        parts += [f"<h2>{html.escape(n)}: per symbol</h2>", _table(sym, ["symbol", "trades", "hit_rate", "net_pnl",
                                                                          "expectancy"]),
                  f"<h2>{html.escape(n)}: per exit reason</h2>", _table(why, ["exit_reason", "trades", "hit_rate",
                                                                              "net_pnl", "expectancy"])]
    if doc.get("skip_reasons"):
        parts += ["<h2>Signals and skips</h2>", _table(_skip_rows(doc, names), ["signals", *names])]
    first = runs[names[0]] if names else {"trades": []}
    cols = ["signal_id", "side", "quantity", "entry_price", "exit_price", "fees", "net_pnl", "net_return_pct",
            "exit_reason", "confidence"]
    parts += [f"<h2>Trades ({html.escape(names[0] if names else '')})</h2>", _table(first["trades"], cols)]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in doc.get("notes", []))
    parts.append(f"<h2>Notes</h2><ul>{notes}</ul>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>smc-quant {html.escape(heading.lower())}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(out: Path, doc: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` (plots embedded) into ``out``; returns both paths.

    ``doc`` holds ``title``, ``window``, ``balance`` (string), ``start_ms``, ``candles``, ``symbols``, ``notes``
    and ``runs`` (name → :func:`run_report`)."""
    out.mkdir(parents=True, exist_ok=True)
    images = plots(doc["runs"], Decimal(doc["balance"]), int(doc["start_ms"]))
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    html_path.write_text(_html(doc, images))
    return json_path, html_path
