"""What ``smc-quant train / models / promote / rollback`` do; the CLI only parses arguments and prints.

Unlike the rest of :mod:`smc_quant.model` this module does I/O: it reads candle files, writes the
reports and talks to the registry (PostgreSQL from ``DATABASE_URL``, or the embedded server).

``train`` labels the ``"broad"`` setups (the strategy's setups plus every ``every``-th trend-side bar,
all with the strategy's exits; ``labels.select_setups``), reports a purged walk-forward, and registers a
candidate trained on every setup except the latest window (the last ``1/(folds + 1)`` by signal time,
purged), which is stored with it in the registry (``metrics["holdout"]``, its latest 5,000 rows).

``promote`` gates the challenger against the current champion on the latest out-of-sample window:

* without ``--data``: the challenger's stored held-out window — rows it was not trained on; the
  champion is scored on the same rows (the strategy's setups there when there are 100 with both
  outcomes, else all of them). A model registered without a stored window is refused (pass ``--data``);
* with ``--data``: the setups of those candles whose signal time is after both models' training windows
  (neither model has seen them), labelled like the challenger's training set.

When the window is empty or has one class only it refuses unless ``force`` is given; every outcome
carries its reason.
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
from smc_quant.labels import BarrierSpec, SetupSource
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.gate import (
    GateDecision,
    decide,
    gate_rows,
    holdout_from_json,
    holdout_to_json,
    split_latest,
    time_blocks,
)
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
                             config: TrainConfig | None = None, source: SetupSource = "broad",
                             min_history: int = 0) -> TrainResult:
    """Dataset → purged walk-forward report → final model on all but the latest window → candidate (with
    that window) → text/HTML report. ``min_history``: the first candles of each series only warm the
    features up (``build_dataset``; the service's ``learner.min_history_candles``).

    The CPU-bound steps run in a worker thread (``asyncio.to_thread``)."""
    spec, config = spec or BarrierSpec(), config or TrainConfig()
    started = time.perf_counter()
    say(f"building features and triple-barrier labels ({source} setups, every {every} bars, "
        f"after {min_history:,} warm-up candles) ...")
    ds = await asyncio.to_thread(build_dataset, series, spec, every, "trend_1m", None, source,
                                 min_history=min_history)
    if len(ds) < 10 * (folds + 1):
        raise OperationalError(f"only {len(ds)} labelled setups: too few for {folds} folds (use more data)")
    say(f"  {len(ds):,} setups ({int(ds.is_setup.sum()):,} strategy setups), base rate {ds.win.mean():.3f} "
        f"({time.perf_counter() - started:.1f} s)")
    say(f"walk-forward: {folds} purged folds + shuffled-label baseline ...")
    try:
        wf = await asyncio.to_thread(walk_forward_report, ds, folds, spec.horizon * 60_000, config)
    except ValueError as exc:
        raise OperationalError(f"{exc}: use more data or fewer folds") from None
    for i, f in enumerate(wf.folds, 1):
        say(f"  fold {i}: AUC {fmt(f['auc'])}  shuffled {fmt(f['shuffled_auc'])}  test rows {fmt(f['n'])}")
    say(f"  pooled AUC {fmt(wf.pooled['auc'])}, mean fold AUC {fmt(wf.pooled['fold_auc_mean'])}, "
        f"shuffled {fmt(wf.shuffled_auc)} ({time.perf_counter() - started:.1f} s)")
    split = split_latest(ds.start, ds.end, 1.0 / (folds + 1), min_rows=10)
    fit, hold = ds.take(split.train), ds.take(split.holdout)
    say(f"training the final model on {len(fit):,} setups; the latest {len(hold):,} are held out for its gate ...")
    model = await asyncio.to_thread(train, fit.x, fit.win, config)
    params = {**config.to_json(), "barrier": asdict(spec), "every": every, "folds": folds, "source": source,
              "min_history": min_history, "symbols": list(ds.symbols), "candles": sum(len(s) for s in series)}
    metrics = {**wf.pooled, "shuffled_auc": wf.shuffled_auc, "folds": wf.folds, "importance": wf.importance,
               "holdout_start": split.cut_ms,
               "holdout": holdout_to_json(hold.x, hold.win, hold.is_setup, hold.start, hold.end, max_rows=5000)}
    train_start, train_end = int(fit.start.min()), int(fit.end.max())
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


async def promote(registry: ModelRegistry, version: int, *, series: Sequence[KlineSeries] | None, every: int | None,
                  margin: float, force: bool, say: Say, spec: BarrierSpec | None = None,
                  z: float = 1.645, paired_z: float = 1.645) -> PromoteOutcome:
    """Gate ``version`` against the champion on the latest out-of-sample window, or promote with ``force``
    (``every``, ``spec``: how ``series`` is labelled — ``None``: as the candidate's own training data was)."""
    record = await registry.get(version)
    if record is None:
        raise OperationalError(f"no model version {version} in the registry")
    champion = await registry.champion()
    gated_against = None if champion is None else champion.version  # promoted only if it is still the champion
    if champion is not None and champion.version == version:
        return PromoteOutcome(False, f"model v{version} is already the champion")
    if champion is not None and await registry.usable_champion() is None:  # the engine refuses it: none to beat
        say(f"champion v{champion.version} was trained on feature schema {champion.feature_schema!r}, which the "
            f"engine no longer computes: gated as if there were no champion")
        champion = None
    reason = await _gate(registry, record, champion, series, every, margin, z, paired_z, spec, say)
    if isinstance(reason, GateDecision) and reason.promote:
        if await registry.promote_over(version, gated_against) is None:
            return PromoteOutcome(False, f"not promoted v{version}: the champion changed while it was gated (the "
                                         f"learner promoted?); run promote again", reason)
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
                series: Sequence[KlineSeries] | None, every: int | None, margin: float, z: float,
                paired_z: float, spec: BarrierSpec | None, say: Say) -> GateDecision | str:
    if series is None:
        stored = record.metrics.get("holdout")
        if not isinstance(stored, dict):
            return f"model v{record.version} has no stored held-out window (pass --data DIR, or --force)"
        try:
            held = holdout_from_json(stored)
        except ValueError as exc:
            return f"{exc} (pass --data DIR, or --force)"
        if held.win.shape[0] == 0:
            return f"model v{record.version}'s stored held-out window is empty (pass --data DIR, or --force)"
        rows, gate_on = gate_rows(held.win, held.is_setup)
        say(f"gate window: the {rows.shape[0]:,} {gate_on} of v{record.version}'s stored held-out window "
            f"(from {utc(int(record.metrics.get('holdout_start', 0)))} UTC)")
        x, win, blocks = held.x[rows], held.win[rows], time_blocks(held.start[rows], held.end[rows])
    else:
        after = max(record.train_end, champion.train_end if champion is not None else record.train_end)
        source = record.params.get("source", "candidates")  # labelled as the candidate's training data was
        every = every if every is not None else int(record.params.get("every", 5))
        if spec is None:
            barrier = record.params.get("barrier")
            try:
                spec = BarrierSpec(**barrier) if isinstance(barrier, dict) else BarrierSpec()
            except (TypeError, ValueError) as exc:  # written by another version of BarrierSpec
                say(f"the candidate's stored barriers are unreadable ({exc}): the default ones label the window")
                spec = BarrierSpec()
        min_history = int(record.params.get("min_history", 0))  # its training rows' warm-up
        ds = await asyncio.to_thread(build_dataset, series, spec, every, "trend_1m", None, source,
                                     min_history=min_history)
        window = latest_window(ds, after)
        if len(window) == 0:
            return f"no setups after {utc(after)} UTC in the data (both training windows cover it)"
        say(f"gate window: {len(window):,} setups after {utc(after)} UTC")
        x, win, blocks = window.x, window.win, time_blocks(window.start, window.end)
    challenger_p = (await registry.load(record.version)).predict(x)
    champion_p = None if champion is None else (await registry.load(champion.version)).predict(x)
    rate = record.metrics.get("train_base_rate")  # stored by the learner since the Brier condition
    return decide(win, challenger_p, champion_p, margin, z, blocks, paired_z,
                  base_rate=float(rate) if isinstance(rate, int | float) else None)


async def rollback(registry: ModelRegistry) -> ModelRecord:
    """Retire the champion and reinstate the previous one (``OperationalError`` when there is none)."""
    return await registry.rollback()


__all__ = ["PromoteOutcome", "TrainResult", "latest_window", "load_series", "models_table", "open_registry",
           "promote", "rollback", "train_and_register"]
