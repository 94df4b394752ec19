"""``smc-quant backtest`` and ``smc-quant replay``: history through the live decision path, and the live service
itself on the same candles, to compare their decisions (docs/backtest.md).

``backtest`` runs, over one set of candles, the ML-filtered strategy (the registry's champion, or the learner's
walk-forward models) and the two baselines (the same rules without the ML filter; random entries under the
same risk rules), and writes ``report.json`` and ``report.html`` into ``--out``.

``replay`` serves the candles from the built-in emulator, runs the full service against it (sockets, shards,
analyzer, scorer, strategy, executor, paper account) one minute at a time, then backtests the very candles the
service received and prints whether signals and orders are identical.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smc_quant.funding import funding_rate
from smc_quant.settings import Settings

if TYPE_CHECKING:  # the numeric stack loads when a command runs, not when `smc-quant` builds its parser
    from smc_quant.backtest.engine import BacktestResult, OrderRow
    from smc_quant.domain.series import KlineSeries
    from smc_quant.domain.trading import Trade

__all__ = ["ReplayOutcome", "add_subcommands", "backtest_scorecard", "cmd_backtest", "cmd_replay", "progress_bar",
           "replay_compare", "series_of_candles"]

Say = Callable[[str], None]


def progress_bar(label: str, stream: Any = None, width: int = 30) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (``\\r``-redrawn): ``label [#####.....] 42 % 1234/2938``."""
    out = stream if stream is not None else sys.stderr
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        secs = time.perf_counter() - started
        out.write(f"\r{label} [{bar}] {frac * 100:5.1f} % {done}/{total} {secs:6.1f}s")
        if done >= total:
            out.write("\n")
        out.flush()

    return show


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return asyncio.run(main())


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def backtest_scorecard(doc: Mapping[str, Any]) -> str:
    """The headline figures of every run side by side, as plain text."""
    runs = doc["runs"]
    names = list(runs)
    keys = ("trades", "hit_rate", "expectancy", "expectancy_pct", "profit_factor", "net_pnl", "fees",
            "max_drawdown_pct", "sharpe_daily", "sortino_daily", "exposure", "return_pct")
    marked = doc.get("marked", {})  # the equity marked every minute (beside the trades' figures)
    lines = [f"{'':24}" + "".join(f"{n:>16}" for n in names)]
    for k in (*keys, "max_drawdown_marked_pct") if marked else keys:
        cells = []
        for n in names:
            v = runs[n]["headline"][k] if k in runs[n]["headline"] else marked.get(n, {}).get(k)
            cells.append(f"{v:>16.4f}" if isinstance(v, float) else f"{'–' if v is None else str(v)[:15]:>16}")
        lines.append(f"{k:24}" + "".join(cells))
    return "\n".join(lines) + "\n"


async def _champion_scorer(settings: Settings, say: Say) -> tuple[Any, Any]:
    from smc_quant.backtest.data import BacktestDataError
    from smc_quant.model.cli_tasks import open_registry
    from smc_quant.model.predictor import MLPredictor

    async with open_registry(settings) as registry:
        record = await registry.champion()
        if record is None:
            raise BacktestDataError("the registry has no champion (smc-quant train, then promote) — "
                                    "or use --model walk-forward")
        predictor = MLPredictor(await registry.load(record.version), version=record.version)
    say(f"model: champion v{record.version} (trained on {_iso(record.train_start)} → {_iso(record.train_end)}; "
        "trades inside that window are in-sample)")
    return predictor, record


def _in_sample_note(record: Any, start_ms: int, end_ms: int, trades: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """Whether the backtest over ``[start_ms, end_ms)`` overlaps the champion's own training window, and how many
    ML-filtered trades entered inside it: a note and report fields (the report used to name neither)."""
    inside = sum(1 for t in trades if record.train_start <= t.entry_time_ms <= record.train_end)
    overlap = start_ms <= record.train_end and end_ms > record.train_start
    fields = {"champion_version": record.version, "model_train_start_ms": record.train_start,
              "model_train_end_ms": record.train_end, "in_sample": overlap,
              "ml_trades_in_sample": inside, "ml_trades_out_of_sample": len(trades) - inside}
    window = f"champion v{record.version}'s training window ({_iso(record.train_start)} → {_iso(record.train_end)})"
    if fields["in_sample"]:
        note = (f"IN-SAMPLE: the backtest overlaps {window}; {inside} of {len(trades)} ml_filtered trades entered "
                f"inside it, whose outcomes the model was fitted on, so its figures flatter it — for an honest test "
                f"use --from after {_iso(record.train_end)}, or --model walk-forward")
    else:
        note = f"out of sample: the backtest does not overlap {window}"
    return note, fields


async def run_backtests(series: Mapping[str, KlineSeries], *, model: str, settings: Settings, start_ms: int | None,
                        end_ms: int | None, say: Say, seed: int = 7, history_days: float | None = None,
                        show_progress: bool = True, funding_rate: Decimal | None = None) -> dict[str, Any]:
    """The ML run (champion or walk-forward) and both baselines over ``series``; the report document."""
    from smc_quant.backtest.engine import BacktestConfig, prepare, run_backtest
    from smc_quant.backtest.market import market_rules
    from smc_quant.backtest.report import build_document
    from smc_quant.backtest.walkforward import WalkForwardConfig, walk_forward

    filters, brackets, notes = market_rules(series)
    cfg = BacktestConfig(trading=settings.trading, start_ms=start_ms, end_ms=end_ms, seed=seed,
                         funding_rate=funding_rate)
    prepared = prepare(series, cfg.rules())
    say(f"features and setups: {prepared.candles} candles, {sum(len(s) for s in prepared.setups.values())} setup "
        f"rows in {prepared.seconds:.2f}s")

    def bar(label: str) -> Callable[[int, int], None] | None:
        return progress_bar(label) if show_progress else None

    extra: dict[str, Any] = {"model": model}
    if model == "walk-forward":
        ls = settings.learner
        wf = WalkForwardConfig(history_days=history_days or ls.history_days, min_history=ls.min_history_candles,
                               retrain_every=ls.retrain_every_trades,
                               retrain_interval_s=ls.retrain_interval_s, margin=ls.promote_margin,
                               z=ls.promote_z, paired_z=ls.promote_paired_z)
        out = await walk_forward(prepared, filters, brackets, cfg, wf, progress=bar("walk-forward"))
        ml = out.result
        extra["learner_rounds"] = out.rounds
        notes = [*notes, f"walk-forward: trading starts {_iso(out.trade_start_ms)} after {wf.min_history:,} "
                         f"warm-up candles and {wf.history_days} days of history; {len(out.rounds)} learner rounds, "
                         f"{sum(1 for r in out.rounds if r.get('promoted'))} promotions, "
                         f"{sum(1 for r in out.rounds if r.get('champion_edge') is False)} with a champion that "
                         f"showed no edge on the latest window"]
        cfg = replace(cfg, start_ms=out.trade_start_ms)
    else:
        predictor, record = await _champion_scorer(settings, say)
        ml = await run_backtest(prepared, filters, brackets, cfg, scorer=predictor.predict_batch,
                                model_version=lambda: record.version, progress=bar("ml-filtered"))
        note, fields = _in_sample_note(record, ml.start_ms, ml.end_ms, ml.trades)
        extra.update(fields)
        notes = [note, *notes]
        if fields["in_sample"]:
            say(f"warning: {note}")
    unf = await run_backtest(prepared, filters, brackets, replace(cfg, mode="unfiltered"), progress=bar("unfiltered"))
    rnd = await run_backtest(prepared, filters, brackets, replace(cfg, mode="random"), progress=bar("random"))
    runs = {"ml_filtered": ml, "unfiltered": unf, "random": rnd}
    if funding_rate is None:
        funding = "funding payments are not simulated (no funding history; --funding-rate assumes a constant rate)"
    else:
        paid = ", ".join(f"{name} {res.funding_paid:.2f}" for name, res in runs.items())
        funding = (f"funding: an assumed constant rate of {funding_rate * 100:f} % every {cfg.funding_interval_h} h "
                   f"(UTC), also seen by the risk manager's funding guard; paid (USDT, in the wallet, not in the "
                   f"trades' PnL): {paid}")
    notes = [*notes, funding, "fills: MARKET at the last price with "
             f"{settings.trading.slippage_bps} bps slippage, taker fee {settings.trading.taker_fee_pct} %; stops and "
             "targets fill at their trigger (at the open when a bar gaps through them)",
             f"baselines: unfiltered and random entries carry confidence {cfg.baseline_confidence} (1x risk); "
             f"random entries are seeded ({cfg.seed}), as many per symbol as the rules' distinct setups"]
    return build_document(f"{model} over {len(series)} symbols", sorted(series), runs,
                notes, extra)


def cmd_backtest(args: argparse.Namespace) -> int:
    """Backtest the candles of ``--data``; write report.json and report.html into ``--out``."""
    from smc_quant.backtest.data import BacktestDataError, load_folder, parse_time
    from smc_quant.backtest.report import write_report
    from smc_quant.errors import ConfigError, OperationalError
    from smc_quant.logging import configure_logging
    from smc_quant.settings import load_settings

    settings = load_settings()
    configure_logging("WARNING", settings.log_format)

    async def main() -> int:
        series = load_folder(Path(args.data), args.symbols)
        doc = await run_backtests(series, model=args.model, settings=settings, start_ms=parse_time(args.start),
                                  end_ms=parse_time(args.end), say=print, seed=args.seed,
                                  history_days=args.history_days, funding_rate=args.funding_rate)
        json_path, html_path = write_report(Path(args.out), doc)
        print(backtest_scorecard(doc), end="")
        print(f"report: {html_path} and {json_path}")
        return 0

    try:
        return _run_loop(main)
    except (BacktestDataError, OperationalError, ConfigError) as exc:
        print(f"smc-quant: {exc}", file=sys.stderr)
        return 1


# -- replay -------------------------------------------------------------------------------------------------


def series_of_candles(symbol: str, candles: Sequence[Any]) -> KlineSeries:
    """Closed candles (``Candle`` structs, e.g. what the emulator served) as a series."""
    import numpy as np

    from smc_quant.domain.series import KlineSeries

    cols = [np.array([getattr(c, f) for c in candles], dtype=np.float64)
            for f in ("open", "high", "low", "close", "volume")]
    return KlineSeries(symbol, np.array([c.open_time for c in candles], dtype=np.int64), *cols)


@dataclass
class ReplayOutcome:
    """What the live service did on the replayed candles and what the backtest did on the same candles."""

    live_signals: list[tuple[str, str]]
    live_orders: list[OrderRow]
    live_trades: list[Trade]
    """Closed trades the service stored in PostgreSQL."""
    backtest: BacktestResult
    minutes: int
    symbols: tuple[str, ...]

    @property
    def backtest_signals(self) -> list[tuple[str, str]]:
        return sorted((s.signal_id, s.side) for s in self.backtest.signals)

    @property
    def identical(self) -> bool:
        return (sorted(self.live_signals) == self.backtest_signals
                and _order_key(self.live_orders) == _order_key(self.backtest.orders)
                and _trade_key(self.live_trades) == _trade_key(self.backtest.trades))

    def summary(self) -> str:
        return (f"replayed {self.minutes} minutes of {', '.join(self.symbols)}: live {len(self.live_signals)} "
                f"signals / {len(self.live_orders)} orders / {len(self.live_trades)} trades, backtest "
                f"{len(self.backtest.signals)} signals / {len(self.backtest.orders)} orders / "
                f"{len(self.backtest.trades)} trades — {'IDENTICAL' if self.identical else 'DIFFERENT'}")


def _trade_key(trades: Sequence[Trade]) -> list[tuple[Any, ...]]:
    return sorted((t.signal_id, t.side, t.quantity, t.entry_price, t.exit_price, t.entry_time_ms, t.exit_time_ms,
                   t.fees, t.exit_reason.value) for t in trades)


def _order_key(orders: Sequence[OrderRow]) -> list[tuple[str, str, str, str, str, str]]:
    return sorted((o.client_id, o.symbol, o.side, o.type, o.quantity, o.trigger_price) for o in orders)


async def replay_compare(data_dir: Path, symbols: Sequence[str], dsn: str, *, start_ms: int | None, minutes: int,
                         trading: Mapping[str, Any] | None = None, shards: int = 1,
                         progress: Callable[[int, int], None] | None = None) -> ReplayOutcome:
    """The full service (paper account, replay clock) against the emulator for ``minutes`` minutes, stepped one
    minute at a time (the emulator pauses; the service's feed, analyzer, strategy and executor settle), then a
    backtest over exactly the candles the service received, with the same settings and the close-only price
    path of the service's paper mode. ``dsn`` must hold the champion model."""
    from shards.app import Service
    from smc_quant.backtest.engine import BacktestConfig, account_orders, prepare, run_backtest
    from smc_quant.backtest.market import market_rules
    from smc_quant.exchange.emulator import Emulator, EmulatorConfig
    from smc_quant.model.predictor import MLPredictor
    from smc_quant.settings import load_settings
    from smc_quant.store.models import ModelRegistry
    from smc_quant.store.trading import TradingRepository

    emu = Emulator(EmulatorConfig(data_dir=data_dir, symbols=tuple(symbols), speed=600.0, updates_per_candle=1,
                                  start_time_ms=start_ms, max_minutes=minutes, start_paused=True,
                                  serve_history=False))
    await emu.start()
    settings = load_settings(
        shard_count=shards, database_url=dsn, redis_url=None, mode="replay", log_level="WARNING",
        venue={"rest_base": emu.rest_url, "ws_market_base": emu.ws_market_base, "ws_public_base": emu.ws_public_base},
        universe={"symbols": tuple(symbols), "quote_assets": ("USDT", "USDC")},
        feed={"heartbeat_timeout_s": 30.0, "flush_interval_s": 0.05, "control_messages_per_s": 10.0,
              "bootstrap_candles": 0},  # the backtest starts with no history: so does the service
        ops={"port": 0, "freshness_window_s": 3600.0}, learner={"enabled": False},
        trading={"funding_stream": False, **(trading or {})},  # the backtest has no funding data: neither side guards
        binance_api_key=None, binance_api_secret=None)
    service = Service(settings)
    try:
        await service.start()
        assert service.cluster is not None and service.trading is not None and service.pool is not None
        await service.cluster.wait_subscribed()
        for m in range(minutes):
            emu.resume()
            await emu.wait_minutes(m + 1)
            emu.pause()
            await service.cluster.wait_until(emu.start_ms + m * 60_000)
            await service.trading.executor.idle()
            if progress is not None:
                progress(m + 1, minutes)
        repo = TradingRepository(service.pool)
        live_signals: list[tuple[str, str]] = []
        for sid in sorted(await repo.recent_signal_ids(0)):
            sig = await repo.signal(sid)
            if sig is not None:
                live_signals.append((sig.signal_id, sig.side))
        live_trades = await repo.trades()
        paper = service.trading.paper
        live_orders = account_orders(paper.account, list(symbols)) if paper is not None else []
        record = await ModelRegistry(service.pool).champion()
        model = await ModelRegistry(service.pool).load(record.version) if record is not None else None
        served = {s: series_of_candles(s, emu.candles(s)) for s in symbols}
    finally:
        await service.stop()
        await emu.stop()
    filters, brackets, _ = market_rules(served, data_dir)
    cfg = BacktestConfig(trading=settings.trading, price_path=settings.trading.paper_price_path)
    predictor = MLPredictor(model, version=record.version) if model is not None and record is not None else None
    result = await run_backtest(prepare(served, cfg.rules()), filters, brackets, cfg,
                                scorer=predictor.predict_batch if predictor is not None else None,
                                model_version=lambda: predictor.version if predictor is not None else None)
    return ReplayOutcome(live_signals, live_orders, live_trades, result, minutes, tuple(symbols))


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay candles through the live service, backtest the same candles, print whether decisions match."""
    from smc_quant.backtest.data import BacktestDataError, parse_time
    from smc_quant.errors import ConfigError, OperationalError
    from smc_quant.logging import configure_logging
    from smc_quant.model.cli_tasks import open_registry
    from smc_quant.settings import load_settings
    from smc_quant.store.db import create_pool
    from smc_quant.store.embedded import resolve_database
    from smc_quant.store.migrations import apply_migrations
    from smc_quant.store.models import ModelRegistry

    base = load_settings()
    configure_logging("WARNING", base.log_format)

    async def main() -> int:
        async with open_registry(base) as registry:
            record = await registry.champion()
            if record is None:
                raise BacktestDataError("the registry has no champion: smc-quant train, then promote")
            model = await registry.load(record.version)
        base.state_dir.mkdir(parents=True, exist_ok=True)
        state = Path(tempfile.mkdtemp(prefix="replay-", dir=base.state_dir))  # a fresh database every run:
        scratch = load_settings(database_url=None, state_dir=state)  # replayed candles never mix with the
        dsn, embedded = await resolve_database(scratch)  # main database, earlier replays never dedupe signals
        try:
            await apply_migrations(dsn)
            pool = await create_pool(dsn, max_size=2)
            try:
                reg = ModelRegistry(pool)
                copy = await reg.register(model, train_start=record.train_start, train_end=record.train_end,
                                          params=record.params, metrics=record.metrics)
                await reg.promote(copy.version)
            finally:
                await pool.close()
            trading = {"min_confidence": args.min_confidence} if args.min_confidence is not None else {}
            outcome = await replay_compare(Path(args.data), args.symbols, dsn, start_ms=parse_time(args.start),
                                           minutes=args.minutes, trading=trading, progress=progress_bar("replay"))
        finally:
            if embedded is not None:
                await embedded.stop()
            shutil.rmtree(state, ignore_errors=True)
        print(outcome.summary())
        if args.out:
            _write_replay(Path(args.out), outcome)
        return 0 if outcome.identical else 1

    try:
        return _run_loop(main)
    except (BacktestDataError, OperationalError, ConfigError) as exc:
        print(f"smc-quant: {exc}", file=sys.stderr)
        return 1


def _write_replay(out: Path, outcome: ReplayOutcome) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps({
        "identical": outcome.identical, "live_signals": outcome.live_signals,
        "backtest_signals": outcome.backtest_signals, "live_orders": _rows(outcome.live_orders),
        "backtest_orders": _rows(outcome.backtest.orders)}, indent=1))


def _rows(orders: Sequence[OrderRow]) -> list[dict[str, Any]]:
    return [{"client_id": o.client_id, "symbol": o.symbol, "side": o.side, "type": o.type, "quantity": o.quantity,
             "trigger_price": o.trigger_price} for o in orders]


def add_subcommands(sub: Any) -> None:
    """Register ``backtest`` and ``replay`` on the ``smc-quant`` sub-parser."""
    bt = sub.add_parser("backtest", help="backtest candles through the live decision path; JSON + HTML report")
    bt.add_argument("--data", required=True, help="candles: our CSV folder, a freqtrade data folder, Binance dumps")
    bt.add_argument("--symbols", nargs="+", default=None, help="symbols (default: every file)")
    bt.add_argument("--from", dest="start", default=None, help="trade from (UTC, YYYY-MM-DD[THH:MM] or epoch ms)")
    bt.add_argument("--to", dest="end", default=None, help="trade until (exclusive)")
    bt.add_argument("--model", choices=("champion", "walk-forward"), default="champion")
    bt.add_argument("--history-days", type=float, default=None, help="walk-forward history window (default: "
                    "SMC_LEARNER__HISTORY_DAYS)")
    bt.add_argument("--seed", type=int, default=7, help="seed of the random-entry baseline")
    bt.add_argument("--funding-rate", type=funding_rate, default=None,
                    help="assume this constant funding rate (fraction, e.g. 0.0001) every 8 h; default: not simulated")
    bt.add_argument("--out", default="reports/backtest", help="report folder (default reports/backtest)")
    bt.set_defaults(func=cmd_backtest)
    rp = sub.add_parser("replay", help="the live service on emulated candles vs the backtest on the same candles")
    rp.add_argument("--data", default="../shared/data", help="real data folder (default ../shared/data)")
    rp.add_argument("--symbols", nargs="+", default=["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"])
    rp.add_argument("--from", dest="start", default=None, help="first replayed minute (UTC)")
    rp.add_argument("--minutes", type=int, default=120)
    rp.add_argument("--min-confidence", type=float, default=None, help="override SMC_TRADING__MIN_CONFIDENCE")
    rp.add_argument("--out", default=None, help="write replay.json here")
    rp.set_defaults(func=cmd_replay)

