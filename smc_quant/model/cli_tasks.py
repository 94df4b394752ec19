"""What ``smc-quant train / models / promote / rollback`` do; the CLI only parses arguments and prints.

Unlike the rest of :mod:`smc_quant.model` this module does I/O: it reads candle files, writes the
reports and talks to the registry (PostgreSQL from ``DATABASE_URL``, or the embedded server).

``promote`` gates the challenger against the current champion on the latest out-of-sample window:
the setups of ``--data`` whose signal time is after both models' training windows (neither model has
seen them). Without data, or when that window is empty or has one class only, it refuses unless
``force`` is given; every outcome carries its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from smc_quant.datasets import KLINES_2023_1M, KlineSeries, kline_files, read_klines
from smc_quant.errors import OperationalError
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.gate import GateDecision, decide
from smc_quant.model.report import ReportMeta, fmt, html_report, text_report, utc
from smc_quant.model.trainer import TrainConfig, train, walk_forward_report
from smc_quant.settings import Settings
from smc_quant.store.models import ModelRecord, ModelRegistry

Say = Callable[[str], None]


@asynccontextmanager
async def open_registry(settings: Settings) -> AsyncIterator[ModelRegistry]:
    """A registry on ``DATABASE_URL`` (or the embedded server), migrations applied; closed on exit."""
    from smc_quant.store.db import create_pool
    from smc_quant.store.embedded import resolve_database
    from smc_quant.store.migrations import apply_migrations

    dsn, embedded = await resolve_database(settings)
    try:
        await apply_migrations(dsn)
        pool = await create_pool(dsn, max_size=2)
        try:
            yield ModelRegistry(pool)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await embedded.stop()


def load_series(data: Path, symbols: Sequence[str] | None, max_bars: int | None, say: Say) -> list[KlineSeries]:
    """The 2023 1m series of ``data`` (all symbols, or the listed ones), each cut to its first ``max_bars``."""
    files = kline_files(KLINES_2023_1M, root=data)
    by_symbol = {p.name.split(".")[0].split("_")[0]: p for p in files}
    wanted = list(symbols) if symbols else sorted(by_symbol)
    missing = [s for s in wanted if s not in by_symbol]
    if missing:
        raise OperationalError(f"no 1m candles for {', '.join(missing)} under {data / KLINES_2023_1M}")
    out = []
    for k, symbol in enumerate(wanted, 1):
        series = read_klines(by_symbol[symbol])
        if max_bars is not None:
            series = series.slice(0, min(max_bars, len(series)))
        out.append(series)
        say(f"[{k}/{len(wanted)}] read {symbol}: {len(series):,} candles")
    return out


@dataclass(frozen=True, slots=True)
class TrainResult:
    """The registered candidate and where its reports went."""

    record: ModelRecord
    text_path: Path
    html_path: Path
    text: str


async def train_and_register(registry: ModelRegistry, series: Sequence[KlineSeries], *, every: int, folds: int,
                             out: Path, say: Say, spec: BarrierSpec | None = None,
                             config: TrainConfig | None = None) -> TrainResult:
    """Dataset → purged walk-forward report → final model on every row → candidate → text/HTML report.

    The CPU-bound steps run in a worker thread (``asyncio.to_thread``)."""
    spec, config = spec or BarrierSpec(), config or TrainConfig()
    started = time.perf_counter()
    say(f"building features and triple-barrier labels (every {every} bars) ...")
    ds = await asyncio.to_thread(build_dataset, series, spec, every)
    if len(ds) < 10 * (folds + 1):
        raise OperationalError(f"only {len(ds)} labelled setups: too few for {folds} folds (use more data)")
    say(f"  {len(ds):,} setups, base rate {ds.win.mean():.3f} ({time.perf_counter() - started:.1f} s)")
    say(f"walk-forward: {folds} purged folds + shuffled-label baseline ...")
    wf = await asyncio.to_thread(walk_forward_report, ds, folds, spec.horizon * 60_000, config)
    for i, f in enumerate(wf.folds, 1):
        say(f"  fold {i}: AUC {fmt(f['auc'])}  shuffled {fmt(f['shuffled_auc'])}  test rows {fmt(f['n'])}")
    say(f"  pooled AUC {fmt(wf.pooled['auc'])}, mean fold AUC {fmt(wf.pooled['fold_auc_mean'])}, "
        f"shuffled {fmt(wf.shuffled_auc)} ({time.perf_counter() - started:.1f} s)")
    say(f"training the final model on all {len(ds):,} setups ...")
    model = await asyncio.to_thread(train, ds.x, ds.win, config)
    params = {**config.to_json(), "barrier": asdict(spec), "every": every, "folds": folds,
              "symbols": list(ds.symbols), "candles": sum(len(s) for s in series)}
    metrics = {**wf.pooled, "shuffled_auc": wf.shuffled_auc, "folds": wf.folds, "importance": wf.importance}
    train_start, train_end = int(ds.start.min()), int(ds.end.max())
    record = await registry.register(model, train_start=train_start, train_end=train_end, params=params,
                                     metrics=metrics)
    meta = ReportMeta(record.version, ds.symbols, len(ds), params["candles"], train_start, train_end,
                      config.to_json(), time.perf_counter() - started)
    y_oos = ds.win[wf.oos_rows]
    text = text_report(wf, y_oos, meta)
    text_path, html_path = await asyncio.to_thread(_write, out, record.version, text, html_report(wf, y_oos, meta))
    say(f"registered model v{record.version} as candidate; reports: {text_path}, {html_path}")
    return TrainResult(record, text_path, html_path, text)


def _write(out: Path, version: int, text: str, page: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    text_path, html_path = out / f"model-v{version}.txt", out / f"model-v{version}.html"
    text_path.write_text(text)
    html_path.write_text(page)
    return text_path, html_path


def models_table(records: Sequence[ModelRecord]) -> str:
    """The registry as a fixed-width table, oldest first."""
    header = ("version", "status", "schema", "train window (UTC)", "auc", "fold auc", "shuffled", "created",
              "promoted")
    rows = [header]
    for r in records:
        m = r.metrics
        rows.append((str(r.version), r.status, r.feature_schema, f"{utc(r.train_start)} .. {utc(r.train_end)}",
                     fmt(m.get("auc")), fmt(m.get("fold_auc_mean")), fmt(m.get("shuffled_auc")),
                     r.created_at.strftime("%Y-%m-%d %H:%M"),
                     r.promoted_at.strftime("%Y-%m-%d %H:%M") if r.promoted_at else "-"))
    if len(rows) == 1:
        return "no models registered (train one with: smc-quant train --data DIR)\n"
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows) + "\n"


def latest_window(ds: Dataset, after_ms: int) -> Dataset:
    """The setups whose signal candle opens after ``after_ms`` (out of sample for a model trained up to it)."""
    return ds.take(np.flatnonzero(ds.start > after_ms).astype(np.int64))


@dataclass(frozen=True, slots=True)
class PromoteOutcome:
    """Whether ``version`` became champion, and why."""

    promoted: bool
    reason: str
    decision: GateDecision | None = None


async def promote(registry: ModelRegistry, version: int, *, series: Sequence[KlineSeries] | None, every: int,
                  margin: float, force: bool, say: Say, spec: BarrierSpec | None = None) -> PromoteOutcome:
    """Gate ``version`` against the champion on the latest out-of-sample window, or promote with ``force``."""
    record = await registry.get(version)
    if record is None:
        raise OperationalError(f"no model version {version} in the registry")
    champion = await registry.champion()
    if champion is not None and champion.version == version:
        return PromoteOutcome(False, f"model v{version} is already the champion")
    reason = await _gate(registry, record, champion, series, every, margin, spec, say)
    if isinstance(reason, GateDecision) and reason.promote:
        await registry.promote(version)
        return PromoteOutcome(True, f"promoted v{version}: {reason.reason}", reason)
    why = reason.reason if isinstance(reason, GateDecision) else reason
    if force:
        await registry.promote(version)
        return PromoteOutcome(True, f"promoted v{version} with --force (gate: {why})",
                              reason if isinstance(reason, GateDecision) else None)
    return PromoteOutcome(False, f"kept {_name(champion)}: {why}",
                          reason if isinstance(reason, GateDecision) else None)


def _name(champion: ModelRecord | None) -> str:
    return f"champion v{champion.version}" if champion is not None else "no champion"


async def _gate(registry: ModelRegistry, record: ModelRecord, champion: ModelRecord | None,
                series: Sequence[KlineSeries] | None, every: int, margin: float, spec: BarrierSpec | None,
                say: Say) -> GateDecision | str:
    if series is None:
        return "no data to score the models on (pass --data DIR, or --force)"
    after = max(record.train_end, champion.train_end if champion is not None else record.train_end)
    ds = await asyncio.to_thread(build_dataset, series, spec or BarrierSpec(), every)
    window = latest_window(ds, after)
    if len(window) == 0:
        return f"no setups after {utc(after)} UTC in the data (both training windows cover it)"
    say(f"gate window: {len(window):,} setups after {utc(after)} UTC")
    challenger_p = (await registry.load(record.version)).predict(window.x)
    champion_p = None if champion is None else (await registry.load(champion.version)).predict(window.x)
    return decide(window.win, challenger_p, champion_p, margin)


async def rollback(registry: ModelRegistry) -> ModelRecord:
    """Retire the champion and reinstate the previous one (``OperationalError`` when there is none)."""
    return await registry.rollback()


__all__ = ["PromoteOutcome", "TrainResult", "latest_window", "load_series", "models_table", "open_registry",
           "promote", "rollback", "train_and_register"]
