"""Recovery paths of the feed: a mis-routed subscription, a restart that fetches only the gap, a stop
while PostgreSQL cannot take the candles, and a first start on an empty database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from structlog.testing import capture_logs

from shards.analysis import FeatureBatch
from shards.app import Service
from shards.connection import is_market_route
from shards.supervisor import stop_within
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.features import FEATURE_SCHEMA
from tests.integration.cluster_kit import assert_exact, candles_locked, settings_for, stored_candles

pytestmark = pytest.mark.integration
MIN = 60_000


async def _replay_until(service: Service, emu: Emulator, minute: int) -> tuple[str, ...]:
    """Start ``service``, replay until every symbol has closed ``minute`` (counted from the replay's
    start), pause the replay; the service's symbols."""
    await service.start()
    assert service.cluster is not None and service.universe is not None
    await service.cluster.wait_subscribed()
    emu.resume()
    await asyncio.wait_for(service.cluster.wait_until(emu.start_ms + minute * MIN), 60)
    emu.pause()
    return service.universe.symbols


def _emulator(data: Path, minutes: int, speed: float = 120.0) -> Emulator:
    return Emulator(EmulatorConfig(data_dir=data, speed=speed, updates_per_candle=1, map_to_exchange_info=True,
                                   max_minutes=minutes, start_paused=True))


async def test_wrong_route_is_detected_and_switched(shared_data: Path, pg_dsn: str) -> None:
    """Klines subscribed on the legacy route are acked but silent: alarm, switch to /market, candles flow."""
    emu = _emulator(shared_data, 12)
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=2, market_base=emu.ws_legacy_base))
    try:
        with capture_logs() as logs:
            await service.start()
            assert service.cluster is not None
            await service.cluster.wait_subscribed()
            emu.resume()
            await asyncio.wait_for(service.cluster.wait_until(emu.start_ms + 8 * 60_000), 60)
        metrics = service.cluster.metrics
        assert all(m.wrong_route_alarms >= 1 for m in metrics)
        assert all(is_market_route(c.base_url) for f in service.cluster.feeds for c in f.connections)
        assert any(e["event"] == "ws_silent_subscription" and e["log_level"] == "error" for e in logs)
        assert all(m.accepted > 0 for m in metrics)
    finally:
        await service.stop()
        await emu.stop()


async def _first_run(emu: Emulator, pg_dsn: str, minute: int) -> tuple[str, ...]:
    """Start the emulator and a first service on it, replay until ``minute``, stop the service; its symbols."""
    await emu.start()
    first = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        return await _replay_until(first, emu, minute)
    finally:
        await first.stop()


async def test_restart_resumes_from_postgres_and_fetches_only_the_gap(shared_data: Path, pg_dsn: str) -> None:
    """A stopped and restarted service warm-starts from PostgreSQL and backfills exactly the missed minutes."""
    minutes = 14
    emu = _emulator(shared_data, minutes)
    symbols = await _first_run(emu, pg_dsn, 3)
    emu.resume()
    await asyncio.wait_for(emu.wait_minutes(8), 30)
    emu.pause()
    stored = await stored_candles(pg_dsn)
    before = sum(len(v) for v in stored.values())
    assert all(len(stored[s]) >= 4 for s in symbols)
    klines_before = emu.stats["klines_requests"]

    second = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        await second.start()
        assert second.cluster is not None
        loaded = sum(len(f.store.ring(s)) for f in second.cluster.feeds for s in f.symbols)
        assert loaded == before
        assert second.trading is not None  # the correlation guard's ring starts with the stored closes
        for s in symbols:
            last = stored[s][-1]
            window = second.trading.returns.window(s, last.open_time)
            assert window is not None
            assert list(window[-len(stored[s]):]) == [c.close for c in stored[s]]
        await second.cluster.wait_subscribed()
        emu.resume()
        await asyncio.wait_for(emu.wait_minutes(minutes), 60)
        await asyncio.wait_for(second.cluster.wait_until(emu.start_ms + (minutes - 1) * 60_000), 60)
        await second.cluster.wait_persisted()
        metrics = second.cluster.metrics
        gaps = sum(m.gaps_detected for m in metrics)
        backfilled = sum(m.candles_backfilled for m in metrics)
        live = sum(m.accepted for m in metrics) - backfilled
        assert gaps == len(symbols)
        assert backfilled + live + before == minutes * len(symbols)
        assert emu.stats["klines_requests"] - klines_before == gaps  # one backfill request per gap, nothing more
    finally:
        await second.stop()
        await emu.stop()
    assert_exact(emu, await stored_candles(pg_dsn), symbols, minutes)


async def test_a_hole_left_in_postgres_is_fetched_at_the_next_start(shared_data: Path, pg_dsn: str) -> None:
    """Minutes 1–2 of two symbols are missing from PostgreSQL (a gap the feed gave up on: a REST outage longer than
    its hour of retries). The next start fetches them before its warm start — stored, and in the engine's ring in
    order — instead of reading over the hole at every start for three days."""
    emu = _emulator(shared_data, 6)
    symbols = await _first_run(emu, pg_dsn, 4)
    holed = symbols[:2]
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("DELETE FROM candles WHERE symbol = ANY($1::text[]) AND open_time IN ($2, $3)",
                           list(holed), emu.start_ms + MIN, emu.start_ms + 2 * MIN)
    finally:
        await conn.close()
    second = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        with capture_logs() as logs:
            await second.start()
        assert second.cluster is not None
        for s in holed:
            feed = next(f for f in second.cluster.feeds if s in f.symbols)
            times = feed.store.ring(s).arrays()[0].tolist()
            assert times == [emu.start_ms + k * MIN for k in range(5)], s
    finally:
        await second.stop()
        await emu.stop()
    [said] = [e for e in logs if e["event"] == "warm_holes"]
    assert (said["holes"], said["candles_repaired"]) == (2, 4)
    stored = await stored_candles(pg_dsn)
    assert all([c.open_time for c in stored[s]] == [emu.start_ms + k * MIN for k in range(5)] for s in holed)


async def test_a_fresh_database_fetches_each_symbols_history_before_its_first_live_candle(
        shared_data: Path, pg_dsn: str) -> None:
    """Nothing stored: each symbol's first live candle waits for the ``bootstrap_candles`` real bars before
    it (one REST request per symbol); they are stored and run through the engine first, so the first
    live minute's feature rows are already warm (ATR defined) instead of starting from one bar."""
    n, minutes = 120, 5
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    common = max(int(read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz").open_time[0]) for s in symbols)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=symbols, speed=120.0, updates_per_candle=1,
                                  history_minutes=600, max_minutes=minutes, start_paused=True))
    await emu.start()
    assert emu.start_ms == common + 600 * MIN, "the replay starts after 600 minutes of servable history"
    service = Service(settings_for(emu, pg_dsn, shards=1, bootstrap_candles=n))
    batches: list[FeatureBatch] = []
    try:
        await service.start()
        assert service.cluster is not None
        service.cluster.analyzers[0].subscribe(batches.append)
        await service.cluster.wait_subscribed()
        requests = emu.stats["klines_requests"]
        emu.resume()
        await asyncio.wait_for(emu.wait_minutes(minutes), 60)
        await asyncio.wait_for(service.cluster.wait_until(emu.start_ms + (minutes - 1) * MIN), 60)
        await service.cluster.wait_persisted()
        m = service.cluster.metrics[0]
        assert (m.gaps_detected, m.candles_backfilled, m.gaps_unfilled) == (len(symbols), n * len(symbols), 0)
        assert emu.stats["klines_requests"] - requests == len(symbols)
        first = batches[0]
        assert first.open_time == emu.start_ms and sorted(first.symbols) == sorted(symbols)
        assert np.isfinite(first.features[:, FEATURE_SCHEMA.names.index("atr_pct")]).all()
    finally:
        await service.stop()
        await emu.stop()
    stored = await stored_candles(pg_dsn)
    for s in symbols:
        history = [emu.market.candle(s, emu.start_ms - k * MIN) for k in range(n, 0, -1)]
        assert stored[s] == history + emu.candles(s), s


async def test_a_stop_during_the_bootstrap_cancels_its_fetches_before_the_session_closes(
        shared_data: Path, pg_dsn: str) -> None:
    """Stopped while each symbol's history fetch is still retrying (the exchange answers 503), the service
    cancels those fetches and waits for them before it closes its HTTP session: none is left running or
    dies later of the closed session (an unretrieved error per symbol, found in a demo stopped early)."""
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=symbols, speed=120.0, updates_per_candle=1,
                                  history_minutes=600, max_minutes=5, start_paused=True))
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=1, bootstrap_candles=120))
    fetching = asyncio.Event()
    real_backfill = service._backfill

    async def backfill(*args: Any) -> Any:  # the real fetch, observed: its start is the test's signal
        fetching.set()
        return await real_backfill(*args)

    service._backfill = backfill  # type: ignore[method-assign]
    stopped = False
    try:
        await service.start()
        assert service.cluster is not None
        await service.cluster.wait_subscribed()
        emu.faults.http_error(503, count=1_000_000)
        emu.resume()
        await asyncio.wait_for(fetching.wait(), 60)
        in_flight = service.cluster.feeds[0].backfills_in_flight
        assert in_flight
        with capture_logs() as logs:
            stopped = True
            await service.stop()
    finally:
        if not stopped:
            await service.stop()
        await emu.stop()
    assert all(t.cancelled() for t in in_flight)
    assert not service.cluster.feeds[0].backfills_in_flight
    assert [e["gaps"] for e in logs if e["event"] == "backfills_cancelled"] == [len(in_flight)]


async def test_stop_with_postgres_blocked_ends_in_budget_and_the_restart_backfills(shared_data: Path,
                                                                                   pg_dsn: str) -> None:
    """SIGTERM while the candles table is locked: the stop does not wait for PostgreSQL past its budget,
    says how many candles it could not write, and the next start backfills exactly those minutes."""
    minutes = 10
    emu = _emulator(shared_data, minutes)
    await emu.start()
    budget = {"shutdown_timeout_s": 4.0}  # the candle drain gets a fifth of it
    first = Service(settings_for(emu, pg_dsn, shards=2, cluster=budget))
    symbols = await _replay_until(first, emu, 2)
    assert first.cluster is not None
    await first.cluster.wait_persisted()
    async with candles_locked(pg_dsn):
        emu.resume()
        await asyncio.wait_for(first.cluster.wait_until(emu.start_ms + 5 * MIN), 60)
        emu.pause()
        with capture_logs() as logs:
            clean = await stop_within(first.stop(), 4.0, first.log)
    assert clean, [e for e in logs if e["event"] == "shutdown_incomplete"]
    unsaved = [e for e in logs if e["event"] == "candles_unsaved"]
    assert len(unsaved) == 1 and unsaved[0]["candles"] >= 3 * len(symbols), unsaved
    stored = await stored_candles(pg_dsn)
    assert all(len(stored[s]) == 3 for s in symbols), "minutes 0-2 were written before the lock"

    second = Service(settings_for(emu, pg_dsn, shards=2))
    try:
        await second.start()
        assert second.cluster is not None
        await second.cluster.wait_subscribed()
        emu.resume()
        await asyncio.wait_for(emu.wait_minutes(minutes), 60)
        await asyncio.wait_for(second.cluster.wait_until(emu.start_ms + (minutes - 1) * 60_000), 60)
        await second.cluster.wait_persisted()
        assert sum(m.gaps_detected for m in second.cluster.metrics) == len(symbols)
    finally:
        await second.stop()
        await emu.stop()
    assert_exact(emu, await stored_candles(pg_dsn), symbols, minutes)


async def test_proactive_recycle_before_the_24h_cut_loses_nothing(shared_data: Path, pg_dsn: str) -> None:
    """Connections recycled at their maximum age (1 s here) do it just after a close's finals, so the reconnect is
    done before the next close (a replayed minute is 4 s here): every candle arrives exactly once, the last one
    included (a candle a rotation misses is found only when the next one comes)."""
    minutes = 6
    emu = _emulator(shared_data, minutes, speed=15.0)
    await emu.start()
    service = Service(settings_for(emu, pg_dsn, shards=2, max_connection_age_s=1.0, heartbeat_timeout_s=10.0))
    try:
        with capture_logs() as logs:
            await service.start()
            assert service.cluster is not None and service.universe is not None
            await service.cluster.wait_subscribed()
            emu.resume()
            await asyncio.wait_for(emu.wait_minutes(minutes), 60)
            await asyncio.wait_for(service.cluster.wait_until(emu.start_ms + (minutes - 1) * 60_000), 60)
            await service.cluster.wait_persisted()
        recycles = [e for e in logs if e["event"] == "ws_reconnect" and e["reason"] == "max connection age"]
        assert len(recycles) >= 2 * 2
        assert_exact(emu, await stored_candles(pg_dsn), service.universe.symbols, minutes)
    finally:
        await service.stop()
        await emu.stop()
