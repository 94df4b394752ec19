"""README's offline demo command: the whole service against the emulator, healthy, then a clean SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration
SMC_CLI = Path(sys.executable).parent / "smc-quant"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _healthy(url: str) -> dict:  # type: ignore[type-arg]
    """Poll /health the way an uptime monitor does until it answers 200."""
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return await resp.json()  # type: ignore[no-any-return]
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def _persisted(url: str) -> float:
    """Poll /metrics until the feed has persisted candles; their number."""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as resp:
                text = await resp.text()
            stored = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith("smc_feed_persisted_total"))
            if stored > 0:
                return stored
            await asyncio.sleep(0.2)


LIVE_ENV = {"BINANCE_API_KEY": "live-key", "BINANCE_API_SECRET": "live-secret", "REDIS_URL": "redis://127.0.0.1:9/0",
            "SMC_NOTIFY__DISCORD_WEBHOOK_URL": "http://127.0.0.1:9/api/webhooks/1/live"}
"""A live deployment's environment (keys, the shared Redis, the real chat): the demo takes none of it."""


async def _run_demo(shared_data: Path, state: Path, port: int,  # type: ignore[type-arg]
                    env: dict[str, str] | None = None) -> tuple[dict, str, str]:
    """Start ``smc-quant demo``, wait until /health says ok and candles are stored, SIGTERM it; (health body,
    stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(SMC_CLI), "demo", "--data", str(shared_data), "--speed", "120", "--ops-port", str(port),
        env={"PATH": "/usr/bin:/bin", "SMC_STATE_DIR": str(state), "HOME": str(state),
             "SMC_LOG_LEVEL": "WARNING", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stdout = asyncio.ensure_future(proc.stdout.read())  # read as they come: a full pipe would block the demo
    stderr = asyncio.ensure_future(proc.stderr.read())
    health = asyncio.ensure_future(_healthy(f"http://127.0.0.1:{port}/health"))
    exited = asyncio.ensure_future(proc.wait())
    try:
        # cold numba compile on a fresh checkout; a process that dies first fails at once, with its stderr
        await asyncio.wait({health, exited}, timeout=200, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            pytest.fail(f"demo exited {proc.returncode} before it was healthy:\n{(await stderr).decode()[-3000:]}")
        assert health.done(), "demo not healthy within 200 s"
        body = health.result()
        await asyncio.wait_for(_persisted(f"http://127.0.0.1:{port}/metrics"), 60)
    finally:
        health.cancel()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        done, _ = await asyncio.wait({exited}, timeout=30)
        if not done:
            proc.kill()
            await exited
            pytest.fail(f"demo did not exit within 30 s of SIGTERM:\n{(await stderr).decode()[-3000:]}")
        code = exited.result()
    err = (await stderr).decode()
    assert code == 0, err[-2000:]
    assert "Task exception was never retrieved" not in err, err[-3000:]
    return body, (await stdout).decode(), err


async def test_demo_command_serves_health_stops_on_sigterm_and_resumes(shared_data: Path, tmp_path: Path) -> None:
    """`smc-quant demo` ingests 300+ symbols from the emulator, reports healthy, and exits 0 on SIGTERM; run
    again on the same state it resumes the replay after its newest stored candle and is healthy again (a
    replay from the start would bring only candles older than the stored ones: stale for ever)."""
    port = _free_port()
    body, out, err = await _run_demo(shared_data, tmp_path, port, LIVE_ENV)  # a live host's environment: ignored
    assert "redis" not in err.lower() and "notify" not in err.lower(), err[-2000:]
    assert body["status"] == "ok"
    assert sum(s["symbols"] for s in body["shards"]) >= 300
    assert (tmp_path / "demo" / "pg").is_dir()
    assert "resuming" not in out
    body, out, _ = await _run_demo(shared_data, tmp_path, port)
    assert body["status"] == "ok" and "demo: resuming the replay at 2023-" in out, out


async def test_a_demo_that_has_replayed_all_the_data_says_so(shared_data: Path, tmp_path: Path) -> None:
    """Resuming after the last candle of the data: nothing left to replay → one clear line, exit 1."""
    from smc_quant.datasets import load_klines
    from smc_quant.store.candles import CandleRepository
    from smc_quant.store.db import create_pool
    from smc_quant.store.embedded import EmbeddedPostgres
    from smc_quant.store.migrations import apply_migrations
    from tests.builders import candle_at

    series = max(load_klines(root=shared_data).values(), key=lambda s: int(s.open_time[-1]))
    embedded = EmbeddedPostgres(tmp_path / "demo" / "pg")
    dsn = await embedded.start()
    try:
        await apply_migrations(dsn)
        pool = await create_pool(dsn)
        try:
            await CandleRepository(pool).upsert([candle_at(series, len(series) - 1)])  # the newest real minute
        finally:
            await pool.close()
    finally:
        await embedded.stop()
    proc = await asyncio.create_subprocess_exec(
        str(SMC_CLI), "demo", "--data", str(shared_data), "--ops-port", str(_free_port()),
        env={"PATH": "/usr/bin:/bin", "SMC_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1
    assert "has replayed all of the data; `smc-quant demo --fresh` starts over" in err.decode()
