"""Operator alarms reach the chat, not only the logs: market data gone stale by the ``/health`` rule (and back), and
a process whose supervisor gave up (``process_failed``), told before it exits. The service, or the executor process,
against the Binance emulator over real sockets, PostgreSQL (Redis for the executor) and the real Notifier against a
local stand-in for Discord; the secrets of the webhook and of the exchange keys never show in a message or a log."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from shards.app import Service, run_until_signalled
from shards.executor_main import ExecutorProcess
from shards.worker import ShardWorker, run_process
from smc_quant.exchange.emulator import Emulator, EmulatorConfig
from smc_quant.notify import tell_before_exit
from smc_quant.ops.health import MarketWatch
from smc_quant.ops.metrics import FeedMetrics
from smc_quant.settings import NotifySettings, Settings
from smc_quant.store.keys import ClusterKeys
from smc_quant.store.migrations import apply_migrations
from tests.integration.cluster_kit import SECRET, settings_for
from tests.integration.test_notify import DISCORD_PATH, DISCORD_SECRET, FakeChat, _notifier, chat  # noqa: F401
from tests.integration.test_run_failure import StartedService
from tests.integration.test_scale_kit import process_settings

pytestmark = pytest.mark.integration
SECRETS = (SECRET, SECRET[::-1], DISCORD_SECRET)


def _with_chat(settings: Settings, base: str) -> Settings:
    """``settings`` with the Discord channel aimed at the stand-in (its webhook path carries the token)."""
    channel = NotifySettings(discord_webhook_url=SecretStr(f"{base}{DISCORD_PATH}"))
    return settings.model_copy(update={"notify": channel})


async def _texts_until(fake: FakeChat, done: str, after: int = 0) -> list[str]:
    """Every Discord text, up to and including the first one past the first ``after`` that starts with ``done``
    (waited for, bounded)."""
    n = after + 1
    while True:
        texts = [h.body["content"] for h in await fake.wait_hits("discord", n)]
        if texts[-1].startswith(done):
            return texts
        n += 1


class CountedService(Service):
    """The service, counting its market-data verdicts (every 0.1 s here): the test waits on them."""

    market_check_s = 0.1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beats = 0
        self.beaten = asyncio.Event()

    def check_market(self, now: float | None = None) -> bool:
        ok = super().check_market(now)
        self.beats += 1
        self.beaten.set()
        return ok

    async def beats_past(self, n: int) -> None:
        """Wait (at most 30 s) for the ``n``-th verdict."""
        async def wait() -> None:
            while self.beats < n:
                self.beaten.clear()
                await self.beaten.wait()
        await asyncio.wait_for(wait(), 30)

    async def fresh(self) -> None:
        """Wait (at most 30 s) for a verdict that every shard is fresh (any stale one told so)."""
        async def wait() -> None:
            while not self.check_market():
                await self.beats_past(self.beats + 1)
        await asyncio.wait_for(wait(), 30)


async def test_stale_market_data_is_told_once_and_its_recovery_too(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """One shard's socket falls silent: ``/health`` calls it stale, and the next check (15 s) tells the chat which shard
    and for how long — once, however many checks find it still stale (the next reminder is an hour away); its
    candles flow again: one message says so. Both used to reach the logs of nobody's uptime monitor only."""
    fake, base = chat
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=240.0, updates_per_candle=1,
                                  map_to_exchange_info=True, max_minutes=600, start_paused=True))
    await emu.start()
    settings = settings_for(emu, pg_dsn, shards=2, heartbeat_timeout_s=60.0)
    settings = settings.model_copy(update={"ops": settings.ops.model_copy(update={"freshness_window_s": 2.0})})
    service = CountedService(_with_chat(settings, base))
    try:
        with capture_logs() as logs:
            await service.start()
            assert service.cluster is not None and service.ops is not None
            await service.cluster.wait_subscribed()
            emu.resume()
            await service.cluster.wait_until(emu.start_ms + 60_000)
            await service.fresh()  # a slow start may have been stale for a moment: told, and told over
            service.trading.notifier.notify("-- the test begins --")
            begins = len(await _texts_until(fake, "-- the test begins --"))
            logs.clear()
            stalled = service.cluster.feeds[1]
            emu.faults.stall(True, streams=stalled.connections[0].streams)
            await _texts_until(fake, "MARKET DATA STALE", begins)
            assert service.ops.health()[1]["stale_shards"] == [1]  # what /health says, the chat said
            await service.beats_past(service.beats + 5)  # five more verdicts while it stays stale: not told again
            assert not service.check_market()
            emu.faults.stall(False, streams=stalled.connections[0].streams)
            told = await _texts_until(fake, "MARKET DATA OK again", begins)
    finally:
        await service.stop()
        await emu.stop()
    market = [t for t in told[begins:] if t.startswith("MARKET DATA")]
    assert len(market) == 2, told
    stale, fresh = market
    assert stale.startswith("MARKET DATA STALE · shard 1: 0 of ") and " symbols fresh, no candle for " in stale
    assert "shard 0" not in stale
    assert fresh.startswith("MARKET DATA OK again · every shard (2) has fresh candles · the outage began ")
    changes = [e for e in logs if e["event"] == "market_data_health_changed"]
    assert [(e["log_level"], e["stale_shards"], e["text"]) for e in changes] == [("error", [1], stale),
                                                                                 ("warning", [], fresh)]
    for secret in SECRETS:
        assert all(secret not in t for t in told) and secret not in repr(logs)


def test_a_lasting_outage_is_told_again_hourly_and_a_newly_stale_shard_at_once() -> None:
    """The watch's rhythm on the ``/health`` rule: a dead socket is told once, again after an hour if it lasts, a
    second shard going stale at once; a symbol silent for days that the rule spares (one in a shard of two or more)
    neither makes the shard stale nor stretches "how long"."""
    window, t0 = 90.0, 100_000.0

    def shard(n: int, *, last: float) -> FeedMetrics:
        """A shard of four symbols, the first silent for five days (a paused contract: spared by the rule)."""
        m = FeedMetrics(shard=n, symbols=tuple(f"S{n}{i}USDT" for i in range(4)))
        flowing(m, last)
        m.last_final_mono[m.symbols[0]] = t0 - 5 * 86_400.0
        return m

    def flowing(m: FeedMetrics, last: float) -> None:
        m.last_final_mono.update({s: last for s in m.symbols[1:]})

    watch = MarketWatch(window_s=window, fraction=0.99, started=t0 - 3600.0)
    quiet, dead = shard(0, last=t0 - 300.0), shard(1, last=t0 - 300.0)
    assert watch.update([quiet, dead], t0 - 300.0) is None  # both fresh
    flowing(quiet, t0)
    first = watch.update([quiet, dead], t0)
    assert first == ("MARKET DATA STALE · shard 1: 0 of 4 symbols fresh, no candle for 5.0 min · no signals from its "
                     "symbols until the candles flow again")
    told = []
    for dt in (15.0, 900.0, 3599.0):
        flowing(quiet, t0 + dt)
        told.append(watch.update([quiet, dead], t0 + dt))
    assert told == [None, None, None]
    flowing(quiet, t0 + 3600.0)
    again = watch.update([quiet, dead], t0 + 3600.0)
    assert again is not None and again.startswith("MARKET DATA STALE · shard 1: 0 of 4 symbols fresh, no candle for 65")
    flowing(quiet, t0 + 3500.0)  # the other shard falls silent too
    both = watch.update([quiet, dead], t0 + 3700.0)
    assert both is not None and both.startswith("MARKET DATA STALE · shard 0: 0 of 4 symbols fresh, no candle for 3.3 "
                                                "min · shard 1: ")
    assert both.endswith("no signals from their symbols until the candles flow again")
    for m in (quiet, dead):
        flowing(m, t0 + 3790.0)
    assert watch.update([quiet, dead], t0 + 3800.0) == ("MARKET DATA OK again · every shard (2) has fresh candles · "
                                                        "the outage began 68.3 min ago")
    assert watch.update([quiet, dead], t0 + 3810.0) is None


def test_a_shard_still_fetching_its_history_is_not_an_outage() -> None:
    """At a start (or a slot taken over) a third of a shard's symbols can be stale while their history is fetched:
    every demo start told an outage and its recovery. A shard never fresh since it was first judged is told only
    after ``warmup_s``; one whose feed is down, at once."""
    window, t0 = 2.0, 1_000.0
    m = FeedMetrics(shard=0, symbols=("AUSDT", "BUSDT", "CUSDT"))
    m.joined_mono.update({s: t0 for s in m.symbols})
    m.last_final_mono["AUSDT"] = t0 + 14.0  # one symbol's candles flow, two are still being fetched
    watch = MarketWatch(window_s=window, fraction=0.99, started=t0, warmup_s=300.0)
    assert [watch.update([m], t0 + dt) for dt in (15.0, 150.0, 314.0)] == [None, None, None]
    late = watch.update([m], t0 + 315.0)
    assert late is not None and late.startswith("MARKET DATA STALE · shard 0: 0 of 3 symbols fresh")
    down = FeedMetrics(shard=1, symbols=("DUSDT",))
    down.down = "task shard-1 crashed 6 times in 300s"
    crashed = MarketWatch(window_s=window, fraction=0.99, started=t0).update([down], t0 + 1.0)
    assert crashed == ("MARKET DATA STALE · shard 1: feed down (task shard-1 crashed 6 times in 300s) · no signals "
                       "from its symbols until the candles flow again")


def _told_before_exit(fake: FakeChat, logs: list[Any], role: str, reason: str) -> None:
    """The chat already holds the process's ``process_failed`` alarm (no waiting: it went out before the exit),
    its log line says so, and no secret is in either."""
    texts = [h.body["content"] for h in fake.of("discord")]
    assert (f"ERROR process_failed: {role} · {reason} · exit 1: the orchestrator restarts it, warm from "
            "PostgreSQL") in texts, texts
    [failed] = [e for e in logs if e["event"] == "process_failed"]
    assert failed["notified"] is True
    for secret in SECRETS:
        assert all(secret not in t for t in texts) and secret not in repr(logs)


async def test_a_failed_run_tells_the_chat_before_it_exits(
        shared_data: Path, pg_dsn: str, chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """A shard's feed crash-loops past its supervisor's restarts: `smc-quant run` exits 1 for its orchestrator — and
    the chat has the reason by then (sent and waited for before the stop closes the HTTP session)."""
    fake, base = chat
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=60.0, updates_per_candle=1, map_to_exchange_info=True,
                                  max_minutes=5, start_paused=True))
    await emu.start()
    settings = settings_for(emu, pg_dsn, shards=1, workers=1, cluster={"max_task_restarts": 1})
    service = StartedService(_with_chat(settings, base))
    stop = asyncio.Event()
    run: asyncio.Task[bool] | None = None
    try:
        with capture_logs() as logs:
            run = asyncio.create_task(run_until_signalled(service, stop))
            await asyncio.wait([run, asyncio.ensure_future(service.started.wait())],
                               return_when=asyncio.FIRST_COMPLETED, timeout=120)
            assert service.started.is_set() and service.cluster is not None, run.done() and run.exception()
            for _ in range(2):  # a crash, a restart, a crash
                service.cluster.feeds[0].queue.put_nowait((0, None))  # type: ignore[arg-type]
            clean = await asyncio.wait_for(asyncio.shield(run), 60)
        assert clean is False
        _told_before_exit(fake, logs, "run", "task shard-0 crashed 2 times in 300s")
    finally:
        stop.set()
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        await emu.stop()


class BrokenExecutor(ExecutorProcess):
    """An executor process whose heartbeat report raises (a bug in any supervised task): the fault injected."""

    def report(self) -> dict[str, Any]:
        raise RuntimeError("report broke")


async def test_a_failed_executor_process_tells_the_chat_before_it_exits(
        shared_data: Path, pg_dsn: str, tmp_path: Path, rds: aioredis.Redis,
        chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """Scaled mode: the executor's supervisor gives up; ``run_process`` returns 1 with the alarm already delivered
    through the executor's notifier."""
    fake, base = chat
    await apply_migrations(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, symbols=("BTCUSDT", "ETHUSDT"), speed=0, start_paused=True))
    await emu.start()
    keys = ClusterKeys(f"t{uuid.uuid4().hex[:10]}")
    settings = _with_chat(process_settings(emu, pg_dsn, tmp_path, keys.prefix,
                                           cluster={"max_task_restarts": 1, "heartbeat_s": 0.01}), base)
    try:
        with capture_logs() as logs:
            code = await asyncio.wait_for(run_process(BrokenExecutor(settings), asyncio.Event()), 120)
        assert code == 1
        _told_before_exit(fake, logs, "executor", "task heartbeat crashed 2 times in 300s")
    finally:
        await rds.delete(keys.signals, keys.marks)
        await emu.stop()


async def test_the_last_alarm_never_holds_up_the_exit(chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """A chat service that accepts the request and never answers: the exiting process waits for its alarm only as
    long as it was told, then goes on with its stop (the alarm left queued for the notifier's close)."""
    fake, base = chat
    fake.hang = True
    notifier = _notifier(base, telegram_token=None, telegram_chat_id=None)
    await notifier.start()
    try:
        assert await tell_before_exit(notifier, "ERROR process_failed: run · test", timeout_s=0.2) is False
        assert [h.body["content"] for h in await fake.wait_hits("discord", 1)] == ["ERROR process_failed: run · test"]
        assert await tell_before_exit(None, "nobody to tell") is None
    finally:
        fake.release.set()
        await notifier.close()
    assert notifier.stats["discord"].sent == 1


class WatchedWorker(ShardWorker):
    """A shard worker judging its slots' market data every 0.1 s (15 s in production)."""

    market_check_s = 0.1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.judged = asyncio.Event()

    def check_market(self, now: float | None = None) -> bool:
        ok = super().check_market(now)
        self.judged.set()
        return ok

    async def fresh(self) -> None:
        """Wait (at most 30 s) for the watch's verdict that every slot is fresh."""
        async def wait() -> None:
            while True:
                self.judged.clear()
                await self.judged.wait()
                if self.market_watch is not None and self.market_watch.verdicts and all(
                        v.healthy for v in self.market_watch.verdicts):
                    return
        await asyncio.wait_for(wait(), 30)


class BrokenWorker(ShardWorker):
    """A shard worker whose heartbeat report raises: the fault injected."""

    def report(self) -> dict[str, Any]:
        raise RuntimeError("report broke")


def _worker_settings(emu: Emulator, pg_dsn: str, tmp_path: Path, prefix: str, base: str, **cluster: Any) -> Settings:
    return _with_chat(process_settings(emu, pg_dsn, tmp_path, prefix, shard_count=1, ops={"freshness_window_s": 2.0},
                                       feed={"heartbeat_timeout_s": 60.0, "bootstrap_candles": 0}, cluster=cluster),
                      base)


async def test_a_shard_worker_tells_its_stale_slot_and_its_failure(
        shared_data: Path, pg_dsn: str, tmp_path: Path, rds: aioredis.Redis,
        chat: tuple[FakeChat, str]) -> None:  # noqa: F811
    """Scaled mode: a shard worker has its own channels (``SMC_NOTIFY__*``; it used to have none). Its slot's socket
    falls silent: the chat is told which shard, then that it is fresh again; a worker whose supervisor gives up
    tells the chat before ``run_process`` returns 1."""
    fake, base = chat
    await apply_migrations(pg_dsn)
    emu = Emulator(EmulatorConfig(data_dir=shared_data, speed=240.0, updates_per_candle=1,
                                  map_to_exchange_info=True, max_minutes=600, start_paused=True))
    await emu.start()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    worker = WatchedWorker(_worker_settings(emu, pg_dsn, tmp_path, prefix, base), owner="w-a")
    try:
        await worker.start()
        await worker.converge()
        slot = worker.slots[0]
        await slot.wait_subscribed()
        emu.resume()
        await slot.wait_until(emu.start_ms + 60_000)
        await worker.fresh()  # a shard is told stale once it has been fresh (or after its warm-up)
        assert worker.notifier is not None
        worker.notifier.notify("-- the test begins --")
        begins = len(await _texts_until(fake, "-- the test begins --"))
        streams = slot.feeds[0].connections[0].streams
        emu.faults.stall(True, streams=streams)
        await _texts_until(fake, "MARKET DATA STALE", begins)
        emu.faults.stall(False, streams=streams)
        told = await _texts_until(fake, "MARKET DATA OK again", begins)
    finally:
        await worker.stop()
    market = [t for t in told[begins:] if t.startswith("MARKET DATA")]
    assert market[0].startswith("MARKET DATA STALE · shard 0: ") and len(market) == 2, told

    broken = BrokenWorker(_worker_settings(emu, pg_dsn, tmp_path, f"{prefix}b", base, max_task_restarts=1,
                                           heartbeat_s=0.01))
    try:
        with capture_logs() as logs:
            code = await asyncio.wait_for(run_process(broken, asyncio.Event()), 120)
    finally:
        await emu.stop()
    assert code == 1
    _told_before_exit(fake, logs, "shard", "task heartbeat crashed 2 times in 300s")
