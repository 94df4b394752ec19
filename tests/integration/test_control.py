"""The operator's hand on trading, end to end on PostgreSQL: ``smc-quant halt`` / ``halt --flatten`` / ``resume``
reach a running paper TradingStack through NOTIFY, hold across a restart, and survive the loss of the listening
connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
import pytest

from shards.cli import main
from shards.trading import TradingStack
from smc_quant.datasets import LEVERAGE_TIERS, load_exchange_info, load_klines
from smc_quant.domain.candles import MINUTE_MS
from smc_quant.domain.trading import Signal
from smc_quant.exchange.exchange_info import SymbolFilters, parse_exchange_info
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.settings import Settings, load_settings
from smc_quant.store.control import CHANNEL, ControlRepository, ControlState
from tests.builders import candle_at

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT")
WAIT_S = 20.0


async def test_requests_append_and_the_newest_is_the_state(pool: asyncpg.Pool) -> None:
    """halt → halted; flatten → halted with a flatten pending until done; resume → trading; each insert is
    announced on smc_control with its id; an unknown action is refused; a long reason is cut to 500."""
    repo = ControlRepository(pool)
    assert await repo.state() == ControlState() and not ControlState().halted
    heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        heard.put_nowait(str(args[3]))

    conn = await pool.acquire()
    await conn.add_listener(CHANNEL, on_notify)
    try:
        halt = await repo.request("halt", "exchange maintenance", "ops@host")
        assert await asyncio.wait_for(heard.get(), WAIT_S) == str(halt.event_id)
        flat = await repo.request("flatten", "x" * 600)
        assert await asyncio.wait_for(heard.get(), WAIT_S) == str(flat.event_id)
    finally:
        await conn.remove_listener(CHANNEL, on_notify)
        await pool.release(conn)
    assert (halt.halted, halt.flatten_pending, halt.reason, halt.requested_by) == (
        True, False, "exchange maintenance", "ops@host")
    assert flat.halted and flat.flatten_pending and len(flat.reason) == 500
    assert "waiting for the executor" in flat.describe()
    assert await repo.flatten_done(flat.event_id) and not await repo.flatten_done(flat.event_id)
    assert not await repo.flatten_done(halt.event_id)  # not a flatten
    done = await repo.state()
    assert done.halted and not done.flatten_pending and "every position was closed" in done.describe()
    resumed = await repo.request("resume")
    assert not resumed.halted and resumed.event_id == flat.event_id + 1
    with pytest.raises(ValueError, match="unknown control action 'pause'"):
        await repo.request("pause")  # type: ignore[arg-type]
    assert await pool.fetchval("SELECT count(*) FROM control_events") == 3


@pytest.fixture(scope="module")
def filters(shared_data: Path) -> dict[str, SymbolFilters | None]:
    info = parse_exchange_info(load_exchange_info(shared_data))
    return {s.symbol: s.filters for s in info.symbols if s.symbol in SYMBOLS}


def paper_stack(settings: Settings, session: aiohttp.ClientSession, pool: asyncpg.Pool, shared_data: Path,
                filters: dict[str, SymbolFilters | None]) -> TradingStack:
    return TradingStack(settings, filters=filters, session=session, pool=pool, governor=None,
                        brackets_file=shared_data / LEVERAGE_TIERS)


class Paper:
    """A paper TradingStack on real candles: minute ``i`` is the same UTC minute for every symbol, counted from the
    first minute they all have (the signals' age is measured on the newest close the stack has seen)."""

    def __init__(self, stack: TradingStack, shared_data: Path) -> None:
        self.stack = stack
        self.series = load_klines()
        self.data = shared_data
        self.start = max(int(self.series[s].open_time[0]) for s in SYMBOLS)

    def _index(self, symbol: str, i: int) -> int:
        times = self.series[symbol].open_time
        k = int(np.searchsorted(times, self.start + i * MINUTE_MS))
        assert times[k] == self.start + i * MINUTE_MS
        return k

    def price(self, symbol: str, i: int = 0) -> Decimal:
        candle = candle_at(self.series[symbol], self._index(symbol, i))
        self.stack.on_candle(candle, [])
        return Decimal(repr(candle.close))

    async def signal(self, symbol: str, i: int = 0) -> str:
        """Submit a long on ``symbol`` at minute ``i`` and wait until the executor has handled it."""
        price = self.price(symbol, i)
        open_time = self.start + i * MINUTE_MS
        signal = Signal(f"{symbol}:LONG:{open_time}", symbol, "LONG", open_time, price, 0.75, 2.0, 3.0, "control-test",
                        features=tuple(0.0 for _ in FEATURE_SCHEMA.names), schema_version=FEATURE_SCHEMA.version,
                        created_ms=self.stack.clock())
        assert self.stack.executor.submit(signal)
        await self.stack.executor.idle()
        return signal.signal_id


@pytest.fixture
async def paper(pool: asyncpg.Pool, shared_data: Path, tmp_path: Path,
                filters: dict[str, SymbolFilters | None]) -> AsyncIterator[Paper]:
    settings = load_settings(state_dir=tmp_path, mode="paper", trading={"funding_stream": False})
    async with aiohttp.ClientSession() as session:
        stack = paper_stack(settings, session, pool, shared_data, filters)
        try:
            yield Paper(stack, shared_data)
        finally:
            await stack.stop()


async def test_halt_flatten_and_resume_reach_the_running_executor(paper: Paper, pool: asyncpg.Pool) -> None:
    """A running paper stack with a BTCUSDT long: `halt --flatten` closes it at market (trade `manual`, the
    request marked done) and every later signal is skipped `halted` (stored with its reason); `resume` lets the
    next one open. The executor learns of each request from the notification."""
    stack, repo = paper.stack, ControlRepository(pool)
    await stack.start()
    assert stack.control is not None and stack.executor.halted is None
    await paper.signal("BTCUSDT")
    assert set(stack.executor.book) == {"BTCUSDT"}
    assert 0.9 < stack.metrics()["executor_open_risk_pct"] <= 1.0  # sized to risk 1 % of equity at its stop

    flat = await repo.request("flatten", "risk review", "ops@host")
    applied = await asyncio.wait_for(stack.control.applied(flat.event_id), WAIT_S)
    assert applied.done and stack.executor.halted == "risk review"
    await stack.executor.idle()
    assert not stack.executor.book and stack.paper is not None and not stack.paper.account.positions()
    assert await pool.fetchval("SELECT exit_reason FROM trades WHERE symbol = 'BTCUSDT'") == "manual"
    assert (await repo.state()).done

    refused = await paper.signal("ETHUSDT")
    assert not stack.executor.book
    row = await pool.fetchrow("SELECT decision, decision_reason, decision_detail FROM signals WHERE signal_id = $1",
                              refused)
    assert (row["decision"], row["decision_reason"]) == ("skip", "halted") and "risk review" in row["decision_detail"]
    metrics = stack.metrics()
    assert (metrics["executor_halted"], metrics["executor_skipped_halted"], metrics["executor_flattened"]) == (1, 1, 1)
    assert metrics["executor_open_risk_pct"] == 0
    assert metrics["control_notifications"] >= 1

    resumed = await repo.request("resume", "reviewed")
    await asyncio.wait_for(stack.control.applied(resumed.event_id), WAIT_S)
    assert stack.executor.halted is None and stack.metrics()["executor_halted"] == 0
    await paper.signal("ETHUSDT", 1)
    assert set(stack.executor.book) == {"ETHUSDT"}


async def test_a_halt_requested_while_down_holds_from_the_start_and_a_flatten_is_carried_out(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path, filters: dict[str, SymbolFilters | None]) -> None:
    """Stopped with a BTCUSDT long; `halt --flatten` while down: the next start is halted before its first signal
    and closes the restored position."""
    settings = load_settings(state_dir=tmp_path, mode="paper", trading={"funding_stream": False})
    async with aiohttp.ClientSession() as session:
        def stack_of() -> TradingStack:
            return paper_stack(settings, session, pool, shared_data, filters)

        first = Paper(stack_of(), shared_data)
        await first.stack.start()
        await first.signal("BTCUSDT")
        assert set(first.stack.executor.book) == {"BTCUSDT"}
        await first.stack.stop()

        flat = await ControlRepository(pool).request("flatten", "weekend")
        again = Paper(stack_of(), shared_data)
        again.price("BTCUSDT")  # the paper account's price for the restored position
        try:
            await again.stack.start()
            assert again.stack.executor.halted == "weekend"  # before any signal could be taken
            assert again.stack.control is not None
            await asyncio.wait_for(again.stack.control.applied(flat.event_id), WAIT_S)
            await again.stack.executor.idle()
            assert not again.stack.executor.book
            assert await pool.fetchval("SELECT exit_reason FROM trades WHERE symbol = 'BTCUSDT'") == "manual"
        finally:
            await again.stack.stop()


async def test_the_watcher_replaces_a_lost_connection_and_still_applies_requests(paper: Paper,
                                                                                 pool: asyncpg.Pool) -> None:
    """The listening connection is terminated by the server: the loss is counted, a new connection listens, and
    a halt requested afterwards reaches the executor through it."""
    stack = paper.stack
    assert stack.control is not None
    stack.control.poll_s = 0.05
    await stack.start()
    await asyncio.wait_for(stack.control.listening.wait(), WAIT_S)
    first = stack.control.listener_pid
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", first)
    await asyncio.wait_for(stack.control.wait_for(lambda: stack.control.stats["listens"] == 2), WAIT_S)
    assert stack.control.stats["errors"] >= 1 and stack.control.listener_pid != first
    halt = await ControlRepository(pool).request("halt", "after the loss")
    await asyncio.wait_for(stack.control.applied(halt.event_id), WAIT_S)
    assert stack.executor.halted == "after the loss"


def test_the_commands_halt_flatten_resume_and_status(pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`smc-quant halt`, `halt --flatten`, `resume` and `status` on the configured database, with who asked."""
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setattr("shards.cli.configure_logging", lambda *_a, **_k: None)
    assert main(["status"]) == 0
    masked = pg_dsn  # no password in the test server's DSN
    assert capsys.readouterr().out.splitlines() == [
        f"database: {masked} · no executor running on it: a request applies when one starts",
        "trading as configured (no halt has ever been requested)", "open positions: 0", "closed trades: 0"]
    assert main(["halt", "--reason", "CPI print"]) == 0
    out = capsys.readouterr().out.split("\n", 1)[1]
    assert out.startswith("trading halted: no new entries (#1 by ") and "CPI print" in out
    assert main(["halt", "--flatten"]) == 0
    assert "every position is to be closed (waiting for the executor)" in capsys.readouterr().out
    assert main(["resume", "--reason", "done"]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1].startswith("trading resumed (#3 by ")

    async def actions() -> list[str]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return [r["action"] for r in await conn.fetch("SELECT action FROM control_events ORDER BY id")]
        finally:
            await conn.close()

    assert asyncio.run(actions()) == ["halt", "flatten", "resume"]


async def test_a_flatten_whose_close_fails_is_tried_again_until_flat(shared_data: Path, pg_dsn: str) -> None:
    """Signed trading against the emulator: the exchange answers 503 to every attempt of the first close (8),
    so the flatten fails (alarm, position kept and protected again) and is not marked done; the next try, after
    poll_s, closes it at the exchange and the request is done."""
    from shards.control import ControlWatcher
    from tests.integration.trading_kit import trading_rig

    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor()
        assert ex.submit(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=2.0, target_pct=3.0))
        await ex.idle()
        assert "BTCUSDT" in ex.book
        watcher = ControlWatcher(rig.pool, ex, poll_s=0.05)
        watcher.start()
        try:
            rig.emulator.faults.order_reject_503(8)
            flat = await ControlRepository(rig.pool).request("flatten", "incident")
            await asyncio.wait_for(watcher.wait_for(lambda: watcher.stats["flatten_failures"] == 1), WAIT_S)
            assert not (await ControlRepository(rig.pool).state()).done and ex.stats.alarms == 1
            await asyncio.wait_for(watcher.applied(flat.event_id), WAIT_S)
            await ex.idle()
            assert not ex.book and not [p for p in rig.account.positions() if p.symbol == "BTCUSDT"]
            assert watcher.stats["flatten_failures"] == 1 and ex.stats.flattened == 1
            # the failed exit had cancelled the stop and target: both were placed again at once (2 at the entry)
            assert ex.manager.stats["protection_placed"] == 4
            assert await rig.pool.fetchval("SELECT exit_reason FROM trades WHERE symbol = 'BTCUSDT'") == "manual"
        finally:
            await watcher.stop()


async def test_the_max_drawdown_halts_and_flattens_until_the_operator_resumes(
        pool: asyncpg.Pool, shared_data: Path, tmp_path: Path, filters: dict[str, SymbolFilters | None]) -> None:
    """With a limit of 0.0001 %, the slippage of one paper entry is a drawdown: the exit check records a flatten
    as `smc-quant (max drawdown)`, the watcher closes the position and the stack stays halted, across a restart
    too; `resume` accepts that loss (the drawdown is measured from there) and the next signal opens."""
    from smc_quant.store.control import DRAWDOWN_BY

    settings = load_settings(state_dir=tmp_path, mode="paper",
                             trading={"funding_stream": False, "max_drawdown_pct": 0.0001})
    async with aiohttp.ClientSession() as session:
        def stack_of() -> TradingStack:
            return paper_stack(settings, session, pool, shared_data, filters)

        first = Paper(stack_of(), shared_data)
        await first.stack.start()
        ex, control = first.stack.executor, first.stack.control
        assert control is not None
        await first.signal("BTCUSDT")
        assert set(ex.book) == {"BTCUSDT"} and ex.drawdown() > 0  # bought 1 bp above the mark
        await ex.check_exits()
        state = await ControlRepository(pool).state()
        assert (state.action, state.requested_by) == ("flatten", DRAWDOWN_BY) and "max drawdown" in state.reason
        await asyncio.wait_for(control.applied(state.event_id), WAIT_S)
        await ex.idle()
        assert not ex.book and ex.halted == state.reason
        assert await pool.fetchval("SELECT exit_reason FROM trades") == "manual"
        assert ex.drawdown_guard.pnl < 0 and ex.drawdown_guard.pnl_peak == 0 and ex.drawdown() > 0
        await first.stack.stop()

        again = Paper(stack_of(), shared_data)
        await again.stack.start()
        try:
            ex, control = again.stack.executor, again.stack.control
            assert control is not None and ex.halted == state.reason  # still halted after the restart
            assert ex.drawdown_guard.pnl < 0 and ex.drawdown() > 0  # the same loss, read back from the trades
            await ex.check_exits()  # halted and flat: nothing more to do, no second request
            assert (await ControlRepository(pool).state()).event_id == state.event_id
            resumed = await ControlRepository(pool).request("resume", "loss accepted", "ops@host")
            await asyncio.wait_for(control.applied(resumed.event_id), WAIT_S)
            guard = ex.drawdown_guard
            assert ex.halted is None and (guard.pnl, guard.pnl_peak, ex.drawdown()) == (0, 0, 0)
            await ex.check_exits()
            assert (await ControlRepository(pool).state()).event_id == resumed.event_id  # no second trip
            await again.signal("ETHUSDT")
            assert set(ex.book) == {"ETHUSDT"}
        finally:
            await again.stack.stop()


async def test_without_a_database_the_executor_halts_and_flattens_itself(shared_data: Path, pg_dsn: str) -> None:
    """Signed trading against the emulator, no control store wired: at the max drawdown the executor halts itself
    and closes every position at the exchange — also when an operator's halt had left it open; later signals
    are skipped `halted`."""
    from tests.integration.trading_kit import trading_rig

    async with trading_rig(shared_data, pg_dsn) as rig:
        ex = await rig.executor(max_drawdown_pct=Decimal("0.0001"), exit_check_interval_s=3600.0)
        assert ex.submit(rig.signal("BTCUSDT", "LONG", confidence=0.75, stop_pct=2.0, target_pct=3.0))
        await ex.idle()
        assert "BTCUSDT" in ex.book
        ex.halt("CPI print")  # an operator's halt leaves the position open: it can still lose
        ex.drawdown_guard.restore(Decimal(0), ex.wallet)  # trades once made as much as the wallet holds: 50 % down
        assert ex.drawdown() >= 49
        assert await ex.check_drawdown()
        await ex.idle()
        assert ex.halted is not None and ex.halted.startswith("max drawdown") and not ex.book
        assert not [p for p in rig.account.positions() if p.symbol == "BTCUSDT"]
        assert not await ex.check_drawdown()  # once
        assert ex.submit(rig.signal("ETHUSDT", "LONG", confidence=0.75, stop_pct=2.0, target_pct=3.0))
        await ex.idle()
        assert "ETHUSDT" not in ex.book and ex.stats.skip_reasons.get("halted") == 1


def test_a_command_without_a_database_url_never_creates_a_database_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`smc-quant halt` on a host without DATABASE_URL (the service runs elsewhere) used to start a new embedded
    PostgreSQL, write the halt there and confirm it — while the service kept trading. It is refused now."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SMC_STATE_DIR", str(tmp_path))
    monkeypatch.setattr("shards.cli.configure_logging", lambda *_a, **_k: None)
    for command in (["halt", "--flatten"], ["resume"], ["status"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "no trading database here: DATABASE_URL is unset" in err and str(tmp_path / "pg") in err
    assert not (tmp_path / "pg").exists()


async def test_status_names_the_executor_that_holds_the_database(pool: asyncpg.Pool, pg_dsn: str) -> None:
    """The operator sees whether a running executor will read the request (the executor lock's holder)."""
    from smc_quant.store.trading import TradingRepository

    repo, other = TradingRepository(pool), TradingRepository(pool)
    assert await other.executor_holder() is None
    await repo.claim_executor()
    try:
        holder = await other.executor_holder()
        assert holder is not None and holder != await pool.fetchval("SELECT pg_backend_pid()")
    finally:
        await repo.release_executor()
    assert await other.executor_holder() is None
