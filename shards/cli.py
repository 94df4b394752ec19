"""``smc-quant`` command line: run, demo, emulator, migrate, check, train, models, promote, rollback, halt,
resume, status, backtest, replay, report.

Exit codes: 0 success, 1 runtime failure (exchange unreachable, unhealthy), 2 invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

# Each command imports what it needs when it runs: `check` is Docker's HEALTHCHECK (every 30 s, 5 s timeout) and
# must not load the service, numba and LightGBM (seconds and ~200 MB) to make one HTTP request.
from smc_quant.errors import ConfigError, OperationalError
from smc_quant.logging import configure_logging, get_logger
from smc_quant.settings import Settings, load_settings


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main())
    return uvloop.run(main())


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _settings(overrides: dict[str, Any] | None = None) -> Settings:
    settings = load_settings(**(overrides or {}))
    configure_logging(settings.log_level, settings.log_format)
    return settings


def cmd_run(_: argparse.Namespace) -> int:
    """Run the service until SIGINT/SIGTERM."""
    from shards.app import Service, ServiceUnavailable, run_service
    from shards.supervisor import install_error_aggregation

    settings = _settings()
    install_error_aggregation()  # repeated warnings/errors: one line, then one with repeated=N

    async def main() -> int:
        try:
            clean = await run_service(Service(settings), _stop_event())
        except (ServiceUnavailable, OperationalError) as exc:  # exchange unreachable, database not startable
            print(f"smc-quant: {exc}", file=sys.stderr)
            return 1
        return 0 if clean else 1

    return _run_loop(main)


def _cluster_command(role: str) -> int:
    """Run a shard worker or the executor (multi-process mode, docs/scaling.md) until SIGTERM/SIGINT."""
    from shards.supervisor import install_error_aggregation
    from shards.worker import run_process

    settings = _settings()
    if not settings.redis_url:
        raise ConfigError(f"invalid setting REDIS_URL: `smc-quant {role}` needs Redis (multi-process mode)")
    install_error_aggregation()

    async def main() -> int:
        if role == "shard":
            from shards.worker import ShardWorker

            return await run_process(ShardWorker(settings), _stop_event())
        from shards.executor_main import ExecutorProcess

        return await run_process(ExecutorProcess(settings), _stop_event())

    return _run_loop(main)


def cmd_shard(_: argparse.Namespace) -> int:
    """Run one shard worker: lease shard slots in Redis, store candles, publish signals."""
    return _cluster_command("shard")


def cmd_executor(_: argparse.Namespace) -> int:
    """Run the executor: consume the signal stream and manage orders and positions (one per account)."""
    return _cluster_command("executor")


def cmd_migrate(_: argparse.Namespace) -> int:
    """Apply pending migrations and exit."""
    from smc_quant.store.embedded import resolve_database
    from smc_quant.store.migrations import apply_migrations

    settings = _settings()

    async def main() -> int:
        dsn, embedded = await resolve_database(settings)
        try:
            applied = await apply_migrations(dsn)
        finally:
            if embedded is not None:
                await embedded.stop()
        print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
        return 0

    return _run_loop(main)


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when /health answers 200, 1 otherwise (for Docker HEALTHCHECK)."""
    url = args.url
    if url is None:
        ops = load_settings().ops
        host = "127.0.0.1" if ops.host in ("0.0.0.0", "::") else ops.host
        url = f"http://{host}:{ops.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            print(f"healthy ({resp.status})")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy ({exc.code}): {exc.read().decode(errors='replace')[:500]}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"unreachable: {url} ({exc})")
    return 1


def cmd_emulator(args: argparse.Namespace) -> int:
    """Serve the Binance USDT-M emulator until SIGINT/SIGTERM."""
    from smc_quant.exchange.emulator.cli import run_emulator

    return run_emulator(args.rest)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the service against the built-in emulator replaying real candles (no network needed).

    The demo always uses its own embedded database under ``<state_dir>/demo``: replayed history must
    never land in the database of a live deployment. A later run resumes the replay at the minute after
    the newest candle that database holds (its models and trades stay valid: market time only moves
    forward); ``--fresh`` deletes it and starts over.
    """
    from shards.app import Service, ServiceUnavailable, run_until_signalled
    from smc_quant.exchange.emulator import Emulator, EmulatorConfig
    from smc_quant.notify import utc_minute
    from smc_quant.store.embedded import EmbeddedPostgres

    log = get_logger()

    base = load_settings()
    state = base.state_dir / "demo"

    async def main() -> int:
        if args.fresh:
            shutil.rmtree(state / "pg", ignore_errors=True)
        embedded = EmbeddedPostgres(state / "pg")
        dsn = await embedded.start()
        try:
            resume = await _demo_resume_ms(dsn)
            # a fresh database: the replay starts after the history its bootstrap fetches first
            config = EmulatorConfig(data_dir=Path(args.data), speed=args.speed, map_to_exchange_info=True,
                                    history_minutes=base.feed.bootstrap_candles, start_time_ms=resume)
            emu = Emulator(config)
            await emu.start(port=args.emulator_port)
            try:
                if emu.market.n_minutes == 0:
                    print(f"smc-quant: the demo database in {state} has replayed all of the data; "
                          "`smc-quant demo --fresh` starts over", file=sys.stderr)
                    return 1
                if resume is not None:
                    _say(f"demo: resuming the replay at {utc_minute(resume)} (the minute after the newest stored "
                         f"candle; --fresh starts over), {emu.market.n_minutes:,} minutes left")
                settings = _settings({
                    "database_url": dsn,  # the demo's own embedded server: replayed candles never mix with live ones
                    "state_dir": state,
                    # nothing of a live deployment's environment: no Redis (its universe cache and weight budget),
                    # no keys (paper on the emulator), no notifications (replayed trades in the real chat)
                    "redis_url": None, "binance_api_key": None, "binance_api_secret": None,
                    "notify": {"discord_webhook_url": None, "telegram_token": None, "telegram_chat_id": None},
                    "venue": {"rest_base": emu.rest_url, "ws_market_base": emu.ws_market_base,
                              "ws_public_base": emu.ws_public_base, "ws_private_base": emu.ws_private_base},
                    "universe": {"quote_assets": ("USDT", "USDC")},
                    "ops": {"port": args.ops_port, "freshness_window_s": max(2.0, 60.0 / max(args.speed, 1.0) * 3)},
                    "mode": "replay",
                    # the replay's engines have only what the bootstrap fetched behind them: learn from the rows
                    # with that much history at once, rather than wait three replayed days for the live warm-up's
                    "learner": {"min_history_candles": base.feed.bootstrap_candles},
                })
                log.info("demo_emulator", rest=emu.rest_url, market=emu.ws_market_base, speed=args.speed)
                clean = await run_until_signalled(Service(settings), _stop_event())
            finally:
                await emu.stop()
        finally:
            await embedded.stop()
        return 0 if clean else 1

    try:
        configure_logging("INFO")
        return _run_loop(main)
    except (ServiceUnavailable, OperationalError) as exc:
        print(f"smc-quant: {exc}", file=sys.stderr)
        return 1


async def _demo_resume_ms(dsn: str) -> int | None:
    """The minute after the newest 1m candle in the demo database, or ``None`` when it holds none."""
    from smc_quant.domain.candles import MINUTE_MS
    from smc_quant.store.candles import CandleRepository
    from smc_quant.store.db import create_pool

    pool = await create_pool(dsn, max_size=1)
    try:
        if await pool.fetchval("SELECT to_regclass('candles')") is None:
            return None  # never migrated: a fresh database
        newest = [t for _, interval, t in await CandleRepository(pool).series() if interval == "1m"]
    finally:
        await pool.close()
    return max(newest) + MINUTE_MS if newest else None


def _say(msg: str) -> None:
    print(msg, flush=True)


def _model_task(task: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run ``task(registry)`` on the model registry; a registry or data error prints one line, exit 1."""
    from smc_quant.errors import OperationalError
    from smc_quant.model.cli_tasks import open_registry

    settings = _settings()

    async def main() -> int:
        async with open_registry(settings) as registry:
            return await task(registry)

    try:
        return _run_loop(main)
    except OperationalError as exc:
        print(f"smc-quant: {exc}", file=sys.stderr)
        return 1


def cmd_train(args: argparse.Namespace) -> int:
    """Build the dataset from real candles, walk-forward report, train, register a candidate, write reports."""
    from smc_quant.model.cli_tasks import load_series, train_and_register

    async def task(registry: Any) -> int:
        series = load_series(Path(args.data), args.symbols, args.max_bars, _say)
        warm = args.min_history if args.min_history is not None else load_settings().learner.min_history_candles
        result = await train_and_register(registry, series, every=args.every, folds=args.folds, out=Path(args.out),
                                          say=_say, source=args.setups, min_history=warm)
        print(result.text, end="")
        return 0

    return _model_task(task)


def cmd_models(_: argparse.Namespace) -> int:
    """Print the model registry."""
    from smc_quant.model.cli_tasks import models_table

    async def task(registry: Any) -> int:
        print(models_table(await registry.list()), end="")
        return 0

    return _model_task(task)


def cmd_promote(args: argparse.Namespace) -> int:
    """Promote VERSION if it beats the champion on the latest out-of-sample window (or with --force)."""
    from smc_quant.model.cli_tasks import load_series, promote

    async def task(registry: Any) -> int:
        series = load_series(Path(args.data), args.symbols, args.max_bars, _say) if args.data else None
        outcome = await promote(registry, args.version, series=series, every=args.every, margin=args.margin, z=args.z,
                                paired_z=args.paired_z, force=args.force, say=_say)
        print(outcome.reason)
        return 0 if outcome.promoted else 1

    return _model_task(task)


def cmd_rollback(_: argparse.Namespace) -> int:
    """Retire the champion and reinstate the previous one."""
    from smc_quant.model.cli_tasks import rollback

    async def task(registry: Any) -> int:
        record = await rollback(registry)
        print(f"rolled back: v{record.version} is the champion again")
        return 0

    return _model_task(task)


def _control_task(task: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run ``task(pool)`` on the trading database (``DATABASE_URL``, or the embedded server the service created
    — never a new one: a halt written where no service reads it would be a false confirmation), migrated first;
    a database error prints one line, exit 1."""
    from smc_quant.store.db import create_pool
    from smc_quant.store.embedded import resolve_database
    from smc_quant.store.migrations import apply_migrations

    settings = _settings()
    embedded_dir = settings.state_dir / "pg"
    if not settings.database_url and not (embedded_dir / "PG_VERSION").exists():
        print(f"smc-quant: no trading database here: DATABASE_URL is unset and there is no embedded database in "
              f"{embedded_dir}; set DATABASE_URL to the database the service trades from", file=sys.stderr)
        return 1

    async def main() -> int:
        dsn, embedded = await resolve_database(settings)
        try:
            await apply_migrations(dsn)
            pool = await create_pool(dsn, max_size=1)
            try:
                return await task(pool)
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                await embedded.stop()

    try:
        return _run_loop(main)
    except OperationalError as exc:
        print(f"smc-quant: {exc}", file=sys.stderr)
        return 1


async def _print_control(pool: Any) -> None:
    """The control state, the open positions of the book and the account's closed trades (count, net PnL, the
    latest), as the operator reads them."""
    from smc_quant.notify import utc_minute
    from smc_quant.store.control import ControlRepository
    from smc_quant.store.trading import TradingRepository

    repo = TradingRepository(pool)
    holder = await repo.executor_holder()
    print(f"database: {_database_label()} · " + (f"executor running (PostgreSQL backend pid {holder})" if holder
          else "no executor running on it: a request applies when one starts"))
    state = await ControlRepository(pool).state()
    print(state.describe())
    positions = await repo.open_positions()
    print(f"open positions: {len(positions)}")
    for position, _meta in positions:
        stop = f" · SL {position.stop_price}" if position.stop_price is not None else ""
        print(f"  {position.symbol} {position.side} {position.quantity} @ {position.entry_price}{stop} · since "
              f"{utc_minute(position.entry_time_ms)}")
    epoch = await repo.read_epoch()
    trades = await repo.trades()
    line = f"closed trades: {len(trades)}" + (f" (account {epoch.account})" if epoch is not None else "")
    if trades:
        last, net = trades[-1], sum((t.net_pnl for t in trades), Decimal(0))
        line += (f" · net {net:+.2f} USDT · last {last.symbol} {last.side} {last.net_pnl:+.2f} USDT "
                 f"({last.exit_reason.value}) {utc_minute(last.exit_time_ms)} · smc-quant report for more")
    print(line)


def _database_label() -> str:
    """The database the control commands use, as the operator recognises it (password masked)."""
    from smc_quant.settings import masked_url

    settings = load_settings()
    if settings.database_url:
        return masked_url(settings.database_url)
    return f"embedded in {settings.state_dir / 'pg'}"


def _requested_by() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _control_request(action: Any, reason: str) -> int:
    """Append ``action`` to ``control_events`` (the running executor is notified), then print the state."""
    from smc_quant.store.control import ControlRepository

    async def task(pool: Any) -> int:
        await ControlRepository(pool).request(action, reason, _requested_by())
        await _print_control(pool)
        return 0

    return _control_task(task)


def cmd_halt(args: argparse.Namespace) -> int:
    """Stop new entries now (exits, stops and the 2-hour limit go on); ``--flatten`` also closes every position."""
    return _control_request("flatten" if args.flatten else "halt", args.reason)


def cmd_resume(args: argparse.Namespace) -> int:
    """Allow new entries again (a flatten not yet carried out is dropped)."""
    return _control_request("resume", args.reason)


def cmd_status(_: argparse.Namespace) -> int:
    """Print whether trading is halted and the open positions of the book."""

    async def task(pool: Any) -> int:
        await _print_control(pool)
        return 0

    return _control_task(task)


def _data_args(parser: argparse.ArgumentParser, required: bool, every: int | None = 5) -> None:
    parser.add_argument("--data", required=required, default=None, help="real data folder (e.g. ../shared/data)")
    parser.add_argument("--symbols", nargs="+", default=None, help="symbols to use (default: every file)")
    parser.add_argument("--max-bars", type=int, default=None, help="use only the first N 1m candles per symbol")
    parser.add_argument("--every", type=int, default=every,
                        help="a candidate setup every N bars (default " + ("5)" if every else
                                                                           "the candidate's own, else 5)"))


def _setup_source(text: str) -> str:
    """``--setups``: one of the label sources (argparse ``type``, so only ``train`` loads the labels module)."""
    from smc_quant.labels import SETUP_SOURCES

    if text not in SETUP_SOURCES:
        raise argparse.ArgumentTypeError(f"unknown setup source {text!r} (one of {', '.join(SETUP_SOURCES)})")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smc-quant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the service (settings from the environment)").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("shard", help="run one shard worker (multi-process mode, needs REDIS_URL)").set_defaults(
        func=cmd_shard)
    sub.add_parser("executor", help="run the executor (multi-process mode, needs REDIS_URL)").set_defaults(
        func=cmd_executor)
    check = sub.add_parser("check", help="exit 0 if /health is 200, else 1")
    check.add_argument("--url", default=None, help="health URL (default from SMC_OPS__HOST/PORT)")
    check.add_argument("--timeout", type=float, default=5.0)
    check.set_defaults(func=cmd_check)
    emu = sub.add_parser("emulator", help="serve the Binance USDT-M emulator", add_help=False)
    emu.add_argument("rest", nargs=argparse.REMAINDER)
    emu.set_defaults(func=cmd_emulator)
    demo = sub.add_parser("demo", help="offline demo: the service against the emulator on real data")
    demo.add_argument("--data", default="../shared/data", help="real data folder (default ../shared/data)")
    demo.add_argument("--speed", type=float, default=60.0, help="replay speed (60 = one minute per second)")
    demo.add_argument("--ops-port", type=int, default=8080)
    demo.add_argument("--emulator-port", type=int, default=0)
    demo.add_argument("--fresh", action="store_true",
                      help="delete the demo database first (default: resume where the last demo stopped)")
    demo.set_defaults(func=cmd_demo)
    tr = sub.add_parser("train", help="train on real candles, register a candidate, write text/HTML reports")
    _data_args(tr, required=True)
    tr.add_argument("--folds", type=int, default=5, help="walk-forward folds (default 5)")
    tr.add_argument("--setups", type=_setup_source, default="broad", metavar="{strategy,broad,candidates}",
                    help="rows to label: the strategy's setups, plus every Nth bar (broad, the learner's "
                         "choice; default), or every Nth bar only (candidates)")
    tr.add_argument("--min-history", type=int, default=None, metavar="N",
                    help="label a row only with N candles before it in its file; they warm the features up "
                         "(default SMC_LEARNER__MIN_HISTORY_CANDLES, 4320: the live warm-up)")
    tr.add_argument("--out", default="reports", help="report folder (default reports/)")
    tr.set_defaults(func=cmd_train)
    sub.add_parser("models", help="list the model registry").set_defaults(func=cmd_models)
    pr = sub.add_parser("promote", help="make VERSION the champion if it beats the current one (or --force)")
    pr.add_argument("version", type=int)
    _data_args(pr, required=False, every=None)
    pr.add_argument("--margin", type=float, default=0.01, help="AUC margin the challenger must win by")
    pr.add_argument("--z", type=float, default=1.645,
                    help="the challenger's AUC − z·SE must exceed 0.5 (significance; 0 turns it off)")
    pr.add_argument("--paired-z", type=float, default=1.645,
                    help="its AUC gain over the champion − z·SE (paired) must exceed 0 (0 turns it off)")
    pr.add_argument("--force", action="store_true", help="promote even if the gate says no (prints why)")
    pr.set_defaults(func=cmd_promote)
    sub.add_parser("rollback", help="reinstate the previous champion").set_defaults(func=cmd_rollback)
    halt = sub.add_parser("halt", help="stop new entries now (exits and stops go on); --flatten closes every position")
    halt.add_argument("--reason", default="", help="why (stored, logged and notified)")
    halt.add_argument("--flatten", action="store_true", help="also close every open position at market")
    halt.set_defaults(func=cmd_halt)
    resume = sub.add_parser("resume", help="allow new entries again")
    resume.add_argument("--reason", default="", help="why (stored, logged and notified)")
    resume.set_defaults(func=cmd_resume)
    sub.add_parser("status", help="halted or trading, and the open positions").set_defaults(func=cmd_status)
    from shards.backtest_cli import add_subcommands as add_backtest_subcommands
    from shards.report_cli import add_subcommand as add_report_subcommand

    add_backtest_subcommands(sub)  # backtest, replay
    add_report_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # the emulator owns its options (argparse REMAINDER drops leading --flags)
        from smc_quant.exchange.emulator.cli import run_emulator

        return run_emulator(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"smc-quant: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
