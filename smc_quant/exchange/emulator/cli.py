"""``smc-quant emulator``: run the emulator as a process until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

from smc_quant.datasets import data_dir
from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.server import Emulator
from smc_quant.funding import funding_rate
from smc_quant.logging import configure_logging


def _balance(text: str) -> Decimal:
    """A positive decimal amount (argparse turns the ValueError into a usage error, exit 2)."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise ValueError(text) from None
    if not value.is_finite() or value <= 0:
        raise ValueError(text)
    return value


def parser() -> argparse.ArgumentParser:
    """Command-line options of ``smc-quant emulator``."""
    p = argparse.ArgumentParser(
        prog="smc-quant emulator", description="Binance USDT-M exchange emulator replaying real candles."
    )
    p.add_argument(
        "--data", type=Path, default=None, help="data folder (default: SMC_DATA_DIR or ../shared/data)"
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="1 = real time, N = N× faster, 0 = as fast as possible"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    p.add_argument("--symbols", nargs="*", default=(), help="serve only these symbols")
    p.add_argument(
        "--map-to-exchange-info",
        action="store_true",
        help="serve all 347 exchangeInfo symbols, real series mapped round-robin onto them",
    )
    p.add_argument("--updates-per-candle", type=int, default=3)
    p.add_argument("--start-time-ms", type=int, default=None)
    p.add_argument("--max-minutes", type=int, default=None)
    p.add_argument("--start-paused", action="store_true", help="wait for POST /_emulator/faults resume")
    p.add_argument("--weight-limit", type=int, default=2400)
    p.add_argument("--ping-interval", type=float, default=180.0)
    p.add_argument("--api-key", default="emulator-key", help="the account's API key (X-MBX-APIKEY)")
    p.add_argument("--api-secret", default=None,
                   help="HMAC secret (default: SMC_EMULATOR_API_SECRET or 'emulator-secret')")
    p.add_argument("--balance", type=_balance, default=Decimal("10000"), help="starting USDT wallet balance")
    p.add_argument("--funding-rate", type=funding_rate, default=Decimal("0.0001"),
                   help="funding rate of every symbol on !markPrice@arr (fraction; 0.0001 = 0.01 %%)")
    p.add_argument("--symbol-funding", nargs="*", default=(), metavar="SYMBOL=RATE",
                   help="per-symbol funding rates, e.g. DOGEUSDT=0.0075")
    p.add_argument("--log-level", default="INFO")
    return p


def _symbol_rates(pairs: list[str]) -> tuple[tuple[str, Decimal], ...]:
    out = []
    for pair in pairs:
        symbol, sep, rate = pair.partition("=")
        if not sep or not symbol:
            raise SystemExit(f"smc-quant emulator: --symbol-funding wants SYMBOL=RATE, got {pair!r}")
        try:
            out.append((symbol.upper(), funding_rate(rate)))
        except ValueError:
            raise SystemExit(f"smc-quant emulator: --symbol-funding {pair!r}: the rate must be a fraction "
                             "within ±0.05") from None
    return tuple(out)


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    """The :class:`EmulatorConfig` the parsed options describe."""
    return EmulatorConfig(
        data_dir=(args.data or data_dir()).resolve(),
        speed=args.speed,
        updates_per_candle=args.updates_per_candle,
        map_to_exchange_info=args.map_to_exchange_info,
        symbols=tuple(s.upper() for s in args.symbols),
        start_time_ms=args.start_time_ms,
        max_minutes=args.max_minutes,
        start_paused=args.start_paused,
        weight_limit=args.weight_limit,
        ping_interval_s=args.ping_interval,
        api_key=args.api_key,
        api_secret=args.api_secret or os.environ.get("SMC_EMULATOR_API_SECRET", "emulator-secret"),
        balance=args.balance,
        funding_rate=args.funding_rate,
        funding_rates=_symbol_rates(list(args.symbol_funding)),
    )


async def serve(config: EmulatorConfig, host: str, port: int) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    emulator = Emulator(config)
    await emulator.start(host, port)
    print(
        f"emulator rest={emulator.rest_url} market={emulator.ws_market_base} "
        f"public={emulator.ws_public_base} private={emulator.ws_private_base} legacy={emulator.ws_legacy_base} "
        f"symbols={len(emulator.symbols)} start_ms={emulator.start_ms}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(main)
    else:
        uvloop.run(main)


def run_emulator(argv: list[str]) -> int:
    """Entry point: parse ``argv``, serve until a signal; exit code 0, or 2 on bad options."""
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = config_from(args)
    except (ValueError, OSError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    try:
        _run(serve(config, args.host, args.port))
    except (ValueError, OSError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0
