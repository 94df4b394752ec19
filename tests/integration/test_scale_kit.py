"""Helpers of the multi-process tests (no tests here): real `smc-quant shard|executor` subprocesses aimed at
an in-process emulator, a PostgreSQL database and the real Redis under a unique key prefix."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.settings import Settings, load_settings
from tests.conftest import TEST_REDIS_URL

SMC_CLI = Path(sys.executable).parent / "smc-quant"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_settings(emu: Emulator, dsn: str, state_dir: Path, prefix: str, *, ops: dict[str, Any] | None = None,
                     **fields: Any) -> Settings:
    """One scaled process's settings (in process: ``ExecutorProcess``, ``ShardWorker``) against ``emu``: replay
    mode unless ``mode`` says otherwise, PostgreSQL at ``dsn``, the test Redis with the cluster's keys under
    ``prefix``, a free ops port, no learner; ``fields`` are further settings (``cluster`` is merged with the
    prefix, ``learner`` with ``enabled: False``)."""
    cluster = {"key_prefix": prefix, **fields.pop("cluster", {})}
    learner = {"enabled": False, **fields.pop("learner", {})}
    mode = fields.pop("mode", "replay")
    return load_settings(database_url=dsn, redis_url=TEST_REDIS_URL, mode=mode, state_dir=state_dir,
                         venue={"rest_base": emu.rest_url, "ws_market_base": emu.ws_market_base,
                                "ws_public_base": emu.ws_public_base},
                         ops={"port": 0, **(ops or {})}, learner=learner, cluster=cluster, **fields)


def emulator(data: Path, *, minutes: int, speed: float) -> Emulator:
    return Emulator(EmulatorConfig(data_dir=data, speed=speed, updates_per_candle=2, map_to_exchange_info=True,
                                   max_minutes=minutes, start_paused=True))


async def wait_for(check: Callable[[], Awaitable[bool]], limit_s: float, what: str, every: float = 0.1) -> float:
    """Poll the condition ``check`` until true; return the seconds it took; fail naming ``what``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"timed out after {limit_s:g}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - start


class Cluster:
    """Spawns worker/executor processes with one shared environment; kills what it started."""

    def __init__(self, emu: Emulator, dsn: str, state: Path, *, shards: int, redis_url: str = TEST_REDIS_URL,
                 lease_ttl_s: float = 2.0, **extra: str) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.state = state
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SMC_", "SHARD_", "REDIS_", "DATABASE_"))},
            "DATABASE_URL": dsn, "REDIS_URL": redis_url, "SHARD_COUNT": str(shards),
            "SMC_CLUSTER__KEY_PREFIX": self.prefix, "SMC_CLUSTER__LEASE_TTL_S": str(lease_ttl_s),
            "SMC_CLUSTER__LEASE_RENEW_S": str(lease_ttl_s / 4), "SMC_CLUSTER__CLAIM_IDLE_S": "1",
            "SMC_CLUSTER__HEARTBEAT_S": "2", "SMC_CLUSTER__CRASH_DELAY_S": "0",
            "SMC_VENUE__REST_BASE": emu.rest_url, "SMC_VENUE__WS_MARKET_BASE": emu.ws_market_base,
            "SMC_VENUE__WS_PUBLIC_BASE": emu.ws_public_base, "SMC_VENUE__WS_PRIVATE_BASE": emu.ws_private_base,
            "SMC_UNIVERSE__QUOTE_ASSETS": '["USDT","USDC"]', "SMC_MODE": "replay",
            "SMC_FEED__HEARTBEAT_TIMEOUT_S": "20", "SMC_FEED__BACKOFF_INITIAL_S": "0.05",
            "SMC_FEED__BACKOFF_MAX_S": "0.5", "SMC_FEED__FLUSH_INTERVAL_S": "0.05",
            "SMC_FEED__CONTROL_MESSAGES_PER_S": "10", "SMC_FEED__BOOTSTRAP_CANDLES": "0",  # counted from minute 0
            "SMC_OPS__FRESHNESS_WINDOW_S": "5",
            "SMC_LOG_FORMAT": "json", "SMC_LOG_LEVEL": "WARNING", "SMC_LEARNER__ENABLED": "false",
            **extra,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def spawn(self, name: str, role: str, **env: str) -> subprocess.Popen[bytes]:
        port = free_port()
        state = self.state / name
        state.mkdir(parents=True, exist_ok=True)
        log = (self.state / f"{name}.log").open("ab")
        proc = subprocess.Popen([str(SMC_CLI), role], env={**self.env, "SMC_OPS__PORT": str(port),
                                                            "SMC_STATE_DIR": str(state), **env},
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name], self.ports[name] = proc, port
        return proc

    def log(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in (self.state / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "line": line})
        return out

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(30)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                codes[name] = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(10)
        self.procs.clear()
        return codes


async def universe_of(emu: Emulator) -> tuple[str, ...]:
    """The symbols the workers trade: the emulator's exchangeInfo under the cluster's universe settings."""
    import aiohttp

    from smc_quant.exchange.exchange_info import parse_exchange_info
    from smc_quant.settings import UniverseSettings
    from smc_quant.universe import select_universe

    async with aiohttp.ClientSession() as http, http.get(f"{emu.rest_url}/fapi/v1/exchangeInfo") as resp:
        payload = await resp.json()
    return select_universe(parse_exchange_info(payload), UniverseSettings(quote_assets=("USDT", "USDC")),
                           "exchange").symbols


async def candle_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM candles WHERE interval = '1m'"))
    finally:
        await conn.close()
