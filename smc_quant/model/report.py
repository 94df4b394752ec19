"""The training report as plain text and as one self-contained HTML page with inline SVG plots.

The plots (calibration curve of the pooled out-of-sample predictions, gain importance per feature) are
SVG written here, so the report needs no plotting library and opens in any browser offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from smc_quant.model.metrics import calibration
from smc_quant.model.trainer import WalkForwardReport

I64 = npt.NDArray[np.int64]
_POOLED_KEYS = ("n", "base_rate", "auc", "fold_auc_mean", "log_loss", "brier", "precision", "taken", "hit_rate",
                "expectancy_pct", "profit_factor", "all_expectancy_pct")
_FOLD_KEYS = ("train_rows", "n", "base_rate", "auc", "shuffled_auc", "log_loss", "brier", "taken", "hit_rate",
              "expectancy_pct", "profit_factor")


@dataclass(frozen=True, slots=True)
class ReportMeta:
    """What was trained on and what was registered."""

    version: int
    symbols: Sequence[str]
    rows: int
    candles: int
    train_start: int
    train_end: int
    params: Mapping[str, Any]
    seconds: float


def utc(ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM`` UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def fmt(value: Any) -> str:
    """A metric for display: whole numbers without decimals, floats with 4, NaN/None as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _ranked(importance: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))


def text_report(wf: WalkForwardReport, y_oos: I64, meta: ReportMeta) -> str:
    """Header, per-fold table, pooled metrics, shuffled baseline, calibration and importance as text.

    ``y_oos`` are the labels of ``wf.oos_rows`` (the pooled out-of-sample rows, in ``wf.oos_p`` order)."""
    lines = [f"model v{meta.version}: {len(meta.symbols)} symbols ({', '.join(meta.symbols)})",
             f"training window {utc(meta.train_start)} .. {utc(meta.train_end)} UTC, {meta.rows:,} labelled setups "
             f"from {meta.candles:,} candles, {meta.seconds:.1f} s",
             f"params: {dict(meta.params)}", "", "walk-forward folds (purged, out of sample):",
             "fold " + " ".join(f"{k:>14}" for k in _FOLD_KEYS)]
    for i, fold in enumerate(wf.folds, 1):
        lines.append(f"{i:>4} " + " ".join(f"{fmt(fold.get(k)):>14}" for k in _FOLD_KEYS))
    lines += ["", "pooled out of sample:"]
    lines += [f"  {k:<20} {fmt(wf.pooled.get(k))}" for k in _POOLED_KEYS]
    lines += [f"  {'shuffled_auc':<20} {fmt(wf.shuffled_auc)}  (mean per fold, label-blind baseline: ~0.5)", "",
              "calibration (mean P, observed win rate, rows):"]
    lines += [f"  {p:.3f}  {o:.3f}  {n:,}" for p, o, n in calibration(y_oos, wf.oos_p)]
    lines += ["", "feature importance (share of split gain):"]
    lines += [f"  {name:<24} {share:6.1%}" for name, share in _ranked(wf.importance)]
    return "\n".join(lines) + "\n"


def calibration_svg(points: Sequence[tuple[float, float, int]], size: int = 360) -> str:
    """Observed win rate against mean predicted P per bin, with the diagonal; dot area ∝ rows."""
    pad, inner = 44, size - 64
    top = max([0.05] + [max(p, o) for p, o, _ in points])
    top = min(1.0, math.ceil(top * 10) / 10)

    def sx(v: float) -> float:
        return pad + v / top * inner

    def sy(v: float) -> float:
        return pad - 24 + inner - v / top * inner

    most = max((n for _, _, n in points), default=1)
    parts = [f'<svg class="calibration" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" font-family="sans-serif" font-size="11">',
             f'<rect x="{pad}" y="{sy(top):.1f}" width="{inner}" height="{inner}" fill="none" stroke="#999"/>',
             f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(top):.1f}" y2="{sy(top):.1f}" stroke="#bbb" '
             'stroke-dasharray="4 3"/>']
    for k in range(6):
        v = top * k / 5
        parts += [f'<text x="{sx(v):.1f}" y="{sy(0) + 14:.1f}" text-anchor="middle">{v:.2f}</text>',
                  f'<text x="{pad - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>']
    if points:
        path = " ".join(f"{sx(p):.1f},{sy(min(o, top)):.1f}" for p, o, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
        for p, o, n in points:
            r = 2.5 + 6 * math.sqrt(n / most)
            parts.append(f'<circle cx="{sx(p):.1f}" cy="{sy(min(o, top)):.1f}" r="{r:.1f}" fill="#1f77b4" '
                         f'fill-opacity="0.6"><title>P {p:.3f}, observed {o:.3f}, {n:,} rows</title></circle>')
    parts += [f'<text x="{pad + inner / 2:.1f}" y="{size - 6}" text-anchor="middle">mean predicted P(win)</text>',
              f'<text x="12" y="{sy(top / 2):.1f}" text-anchor="middle" transform="rotate(-90 12 '
              f'{sy(top / 2):.1f})">observed win rate</text>', "</svg>"]
    return "\n".join(parts)


def importance_svg(importance: Mapping[str, float], width: int = 560) -> str:
    """Horizontal bars of each feature's share of the split gain, largest first."""
    ranked = _ranked(importance)
    label_w, bar_h, gap = 170, 16, 4
    height = 12 + len(ranked) * (bar_h + gap)
    top = max((s for _, s in ranked), default=0.0) or 1.0
    span = width - label_w - 60
    parts = [f'<svg class="importance" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">']
    for i, (name, share) in enumerate(ranked):
        y = 6 + i * (bar_h + gap)
        w = share / top * span
        parts += [f'<text x="{label_w - 6}" y="{y + bar_h - 4}" text-anchor="end">{html.escape(name)}</text>',
                  f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#ff7f0e"/>',
                  f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}">{share:.1%}</text>']
    parts.append("</svg>")
    return "\n".join(parts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(wf: WalkForwardReport, y_oos: I64, meta: ReportMeta) -> str:
    """One self-contained HTML page: summary, fold table, pooled metrics and the two SVG plots."""
    folds = _table(("fold", *_FOLD_KEYS), [(str(i), *(fmt(f.get(k)) for k in _FOLD_KEYS))
                                          for i, f in enumerate(wf.folds, 1)])
    pooled = _table(("metric", "value"), [(k, fmt(wf.pooled.get(k))) for k in _POOLED_KEYS]
                    + [("shuffled_auc (baseline)", fmt(wf.shuffled_auc))])
    title = f"smc-quant model v{meta.version}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th{{background:#f4f4f4}}
.plots{{display:flex;gap:3em;flex-wrap:wrap}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(meta.symbols)} symbols ({html.escape(", ".join(meta.symbols))}); training window
{utc(meta.train_start)} .. {utc(meta.train_end)} UTC; {meta.rows:,} labelled setups from {meta.candles:,} candles;
{meta.seconds:.1f} s.</p>
<p><code>{html.escape(str(dict(meta.params)))}</code></p>
<h2>Walk-forward folds (purged, out of sample)</h2>
{folds}
<h2>Pooled out of sample</h2>
{pooled}
<div class="plots">
<div><h2>Calibration</h2>
{calibration_svg(calibration(y_oos, wf.oos_p))}</div>
<div><h2>Feature importance (gain share)</h2>
{importance_svg(wf.importance)}</div>
</div>
</body></html>
"""


__all__ = ["ReportMeta", "calibration_svg", "fmt", "html_report", "importance_svg", "text_report", "utc"]
