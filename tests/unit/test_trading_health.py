"""The trading part of ``/health``: impaired exactly past its two limits, a halt reported but healthy."""

from __future__ import annotations

import pytest

from smc_quant.ops.health import RECONCILE_MISSES, STREAM_GRACE_S, HealthWatch, TradingState, trading_health

START = 1_000.0
INTERVAL = 180.0


def state(**kw: object) -> TradingState:
    base: dict[str, object] = {"halted": None, "positions": 2, "last_reconciled": START,
                               "reconcile_interval_s": INTERVAL, "stream_down_since": None}
    return TradingState(**{**base, **kw})  # type: ignore[arg-type]


def test_healthy_body() -> None:
    ok, body = trading_health(state(), now=START + 10, started=START - 5)
    assert ok
    assert body == {"status": "ok", "problems": [], "halted": None, "positions": 2, "user_stream_down_s": 0.0,
                    "seconds_since_reconcile": 10.0, "signal_bus_down_s": 0.0, "database_down_s": 0.0}


@pytest.mark.parametrize(("down_for", "impaired"), [(STREAM_GRACE_S, False), (STREAM_GRACE_S + 0.001, True)])
def test_postgresql_out_of_reach_past_the_grace_is_impaired(down_for: float, impaired: bool) -> None:
    """No database: no entry goes out (its journal row cannot be written) — /health said ok all the same."""
    ok, body = trading_health(state(store_down_since=START, last_reconciled=START + down_for), now=START + down_for,
                              started=START)
    assert ok is not impaired and body["problems"] == (["database_down"] if impaired else [])
    assert body["database_down_s"] == round(down_for, 3)
    if impaired:
        text = HealthWatch().update(body)
        assert text is not None and "PostgreSQL out of reach for 60 s: no new entries" in text


@pytest.mark.parametrize(("down_for", "impaired"), [(STREAM_GRACE_S, False), (STREAM_GRACE_S + 0.001, True)])
def test_the_multi_process_executor_without_redis_past_the_grace_is_impaired(down_for: float, impaired: bool) -> None:
    """No Redis: no signal and no mark reaches the executor process — /health said ok all the same."""
    ok, body = trading_health(state(bus_down_since=START, last_reconciled=START + down_for), now=START + down_for,
                              started=START)
    assert ok is not impaired and body["problems"] == (["signal_bus_down"] if impaired else [])
    if impaired:
        text = HealthWatch().update(body)
        assert text is not None and "Redis out of reach for 60 s: no signals, no marks" in text


@pytest.mark.parametrize(("down_for", "impaired"), [(0.5, False), (STREAM_GRACE_S, False),
                                                    (STREAM_GRACE_S + 0.001, True), (3600.0, True)])
def test_user_stream_down_past_the_grace(down_for: float, impaired: bool) -> None:
    ok, body = trading_health(state(stream_down_since=START, last_reconciled=START + down_for),
                              now=START + down_for, started=START)
    assert ok is not impaired
    assert body["problems"] == (["user_stream_down"] if impaired else [])
    assert body["user_stream_down_s"] == round(down_for, 3)


@pytest.mark.parametrize(("age", "impaired"), [(INTERVAL, False), (RECONCILE_MISSES * INTERVAL, False),
                                               (RECONCILE_MISSES * INTERVAL + 0.01, True)])
def test_reconciliation_missing_for_two_and_a_half_intervals(age: float, impaired: bool) -> None:
    ok, body = trading_health(state(), now=START + age, started=START)
    assert ok is not impaired and body["status"] == ("impaired" if impaired else "ok")
    assert body["problems"] == (["reconcile_failing"] if impaired else [])


def test_before_the_first_reconciliation_the_clock_runs_from_the_start() -> None:
    late = RECONCILE_MISSES * INTERVAL + 1
    assert trading_health(state(last_reconciled=None), now=START + late - 2, started=START)[0]
    ok, body = trading_health(state(last_reconciled=None), now=START + late, started=START)
    assert not ok and body["problems"] == ["reconcile_failing"]


def test_both_problems_named_and_a_halt_is_not_a_problem() -> None:
    ok, body = trading_health(state(stream_down_since=START, halted="max drawdown"), now=START + 10_000,
                              started=START)
    assert not ok and body["problems"] == ["user_stream_down", "reconcile_failing"]
    ok, body = trading_health(state(halted="operator: news"), now=START + 1, started=START)
    assert ok and body["halted"] == "operator: news"


def test_the_watch_speaks_on_changes_only() -> None:
    """Impaired → one message naming the problem with its figure; the same again → nothing; a second problem →
    a new message with both; healthy → one recovery message; healthy again → nothing."""
    watch = HealthWatch()
    assert watch.update(trading_health(state(), now=START + 1, started=START)[1]) is None
    down = state(stream_down_since=START, last_reconciled=START + 100)
    text = watch.update(trading_health(down, now=START + 100, started=START)[1])
    assert text == ("TRADING IMPAIRED · user-data stream down 100 s: fills, exchange-side exits and funding go "
                    "unseen")
    assert watch.update(trading_health(down, now=START + 130, started=START)[1]) is None
    both = watch.update(trading_health(down, now=START + 700, started=START)[1])
    assert both is not None and both.startswith("TRADING IMPAIRED · user-data stream down 700 s")
    assert both.endswith("no reconciliation for 10.0 min: the exchange or PostgreSQL is out of reach, a missing "
                         "stop would not be put back")
    healthy = trading_health(state(last_reconciled=START + 700), now=START + 701, started=START)[1]
    assert watch.update(healthy) == ("TRADING OK again · the user-data stream is connected and reconciliation "
                                     "succeeds")
    assert watch.update(healthy) is None and watch.problems == ()


@pytest.mark.parametrize(("offset_ms", "impaired"), [(0, False), (-1000, False), (1000, False), (1001, True),
                                                     (-90_000, True)])
def test_a_host_clock_off_the_exchanges_is_impaired(offset_ms: int, impaired: bool) -> None:
    """Signing corrects for the offset, so nothing failed; but the signal age, the funding window and the UTC day
    run on the host's clock: 90 s behind the exchange skipped no stale signal and let entries pay funding."""
    ok, body = trading_health(state(clock_offset_ms=offset_ms), now=START + 10, started=START)
    assert ok is not impaired and body["clock_offset_ms"] == offset_ms
    assert body["problems"] == (["clock_skew"] if impaired else [])
    if impaired:
        text = HealthWatch().update(body)
        assert text is not None and f"{offset_ms / 1000:+.1f} s off the exchange's" in text


def test_no_clock_offset_known_is_not_judged() -> None:
    ok, body = trading_health(state(clock_offset_ms=None), now=START + 10, started=START)
    assert ok and "clock_offset_ms" not in body
