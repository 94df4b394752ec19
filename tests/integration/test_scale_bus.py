"""The signal bus over the real Redis: exact round trip, consumer group ack, reclaim of a dead consumer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from shards.bus import BadSignal, MarksReader, SignalConsumer, SignalPublisher, decode_signal, encode_signal
from smc_quant.domain.trading import Signal
from smc_quant.store.keys import ClusterKeys

pytestmark = pytest.mark.integration


def _signal(i: int, price: str = "27123.45000001") -> Signal:
    return Signal(f"sig-{i}", "BTCUSDT", "LONG" if i % 2 else "SHORT", 1_700_000_000_000 + i * 60_000,
                  Decimal(price), 0.73, 0.8, 1.6, f"sweep>choch>fvg@{i}", (0.1, -2.5, 3e-9, 1e12),
                  0.42, 7, "v3", 1_700_000_000_500 + i)


def test_signal_round_trip_is_exact() -> None:
    for sig in (_signal(1), _signal(2, "0.000001234"), _signal(3, "1E+3")):
        back = decode_signal(encode_signal(sig))
        assert back == sig
        assert str(back.price) == str(sig.price)


def test_bad_entries_are_refused_cleanly() -> None:
    for raw in (b"", b"{", b"[1,2]", encode_signal(_signal(1)).replace(b'"27123.45000001"', b'"abc"'),
                encode_signal(_signal(1)).replace(b'"27123.45000001"', b'"-1"')):
        with pytest.raises(BadSignal):
            decode_signal(raw)


async def test_publish_consume_ack_and_reclaim(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """Unacked entries of a consumer that died are claimed by the next one; acked ones never come back."""
    pub = SignalPublisher(rds, keys.signals, marks_stream=keys.marks)
    marks = MarksReader(rds, keys.marks)
    assert await marks.read(block_ms=1) == []  # an empty stream: positions the reader at its start
    pub.start()
    for i in range(10):
        pub.publish(_signal(i))
    pub.publish_marks(1_700_000_000_000, ["BTCUSDT", "ETHUSDT"], [27000.5, 1800.25],
                      [(1_700_000_000_000, 26990.0, 27010.0, 26980.5), None])
    assert await pub.drain(5)
    await pub.stop()
    assert pub.stats.published == 10
    assert await marks.read(block_ms=100) == [(1_700_000_000_000, ["BTCUSDT", "ETHUSDT"], [27000.5, 1800.25],
                                                [(1_700_000_000_000, 26990.0, 27010.0, 26980.5), None])]
    dead = SignalConsumer(rds, keys.signals, keys.signals_group, "exec-dead", claim_idle_ms=0)
    await dead.ensure_group()
    await dead.ensure_group()  # idempotent
    got = await dead.read(count=4, block_ms=100)
    assert [s.signal_id for _, s in got if s] == [f"sig-{i}" for i in range(4)]
    await dead.ack([got[0][0]])  # handled one, then "crashed" with three delivered and unacked
    alive = SignalConsumer(rds, keys.signals, keys.signals_group, "exec-new", claim_idle_ms=0)
    seen: list[str] = []
    while batch := await alive.read(count=100, block_ms=50):
        seen += [s.signal_id for _, s in batch if s]
        await alive.ack([i for i, _ in batch])
    assert sorted(seen) == sorted(f"sig-{i}" for i in range(1, 10))
    assert alive.stats.claimed == 3
    pending = await rds.xpending(keys.signals, keys.signals_group)
    assert pending["pending"] == 0


async def test_every_slots_marks_of_a_minute_are_written(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """A worker running 8 slots publishes 8 marks entries at one minute close, in one loop turn: all 8 reach the
    stream (a buffer of 4 dropped half of them unseen: the executor's paper account missed those shards' bars, a
    stop inside them never filled). Minutes more than 3 behind the newest are dropped, counted."""
    pub = SignalPublisher(rds, keys.signals, marks_stream=keys.marks)
    marks = MarksReader(rds, keys.marks)
    assert await marks.read(block_ms=1) == []
    minute = 1_700_000_000_000
    for slot in range(8):
        pub.publish_marks(minute, [f"S{slot}USDT"], [1.0 + slot])
    pub.start()
    assert await pub.drain(5)
    assert sorted(m[1][0] for m in await marks.read(block_ms=100)) == [f"S{slot}USDT" for slot in range(8)]
    assert (pub.stats.marks_published, pub.stats.marks_dropped) == (8, 0)
    await pub.stop()

    down: aioredis.Redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    held = SignalPublisher(down, keys.signals, marks_stream=keys.marks)
    for k in range(6):  # Redis down: 6 minutes of 2 slots each; the newest 4 minutes (3 behind + its own) stay
        for slot in range(2):
            held.publish_marks(minute + k * 60_000, [f"S{slot}USDT"], [1.0])
    assert held.stats.marks_dropped == 4 and len(held._marks) == 8
    await down.aclose()


async def test_buffer_is_bounded_while_redis_is_down(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """With Redis unreachable the publisher keeps the newest N signals, counts the overflow, then delivers."""
    down: aioredis.Redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    pub = SignalPublisher(down, keys.signals, buffer_max=5, retry_s=0.01)
    pub.start()
    for i in range(8):
        pub.publish(_signal(i))
    assert not await pub.drain(0.3)
    assert pub.buffered == 5 and pub.stats.overflow == 3 and pub.stats.redis_errors >= 1
    await pub.stop()
    await down.aclose()
    pub.redis = rds  # Redis is back
    pub.start()
    pub.publish(_signal(8))  # the buffer is full: the oldest (sig-3) goes
    assert await pub.drain(5)
    assert pub.stats.overflow == 4
    await pub.stop()
    entries: Any = await rds.xrange(keys.signals)
    assert [decode_signal(f[b"s"]).signal_id for _, f in entries] == [f"sig-{i}" for i in range(4, 9)]


async def test_a_signal_published_while_a_write_is_in_flight_is_never_lost(rds: aioredis.Redis,
                                                                          keys: ClusterKeys) -> None:
    """The buffer is full (3) when a write of those 3 leaves; while it is in flight a 4th is published, and the
    overflow drops the oldest — already on its way. After the write, the 4th is still buffered and written next:
    all four reach the stream, and none twice (it used to pop three by count after the write: the 4th vanished,
    never sent, and the overflow was counted against the wrong signal)."""
    import asyncio

    pub = SignalPublisher(rds, keys.signals, buffer_max=3)
    for i in range(3):
        pub.publish(_signal(i))
    asyncio.get_running_loop().call_soon(pub.publish, _signal(99))  # runs at the write's first wait
    await pub._flush()
    entries = await rds.xrange(keys.signals)
    assert [decode_signal(fields[b"s"]).signal_id for _, fields in entries] == ["sig-0", "sig-1", "sig-2", "sig-99"]
    assert pub.buffered == 0 and pub.stats.overflow == 1 and pub.stats.published == 4


async def test_rest_weight_budget_is_shared_across_processes(rds: aioredis.Redis, keys: ClusterKeys) -> None:
    """Two governors (two processes) on one Redis counter: the second waits for the next minute."""
    from smc_quant.exchange.governor import SharedWeightBudget, WeightGovernor

    now = [1_700_000_000_000 - 1_700_000_000_000 % 60_000 + 1_000]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += int(s * 1000)

    def gov() -> WeightGovernor:
        return WeightGovernor(100, 0.0, clock=lambda: now[0], sleep=sleep,
                              shared=SharedWeightBudget(rds, keys.rest_weight))
    a, b = gov(), gov()
    minute = now[0] // 60_000
    try:
        await a.acquire(60)
        assert slept == []
        await b.acquire(60)  # locally b has used nothing, but the cluster has 60 of 100
        assert slept == [59.0] and b.shared_waits == 1
        assert await rds.get(keys.rest_weight(minute)) == b"60"  # the refused reservation was given back
        assert await rds.get(keys.rest_weight(minute + 1)) == b"60"
        assert 0 < await rds.ttl(keys.rest_weight(minute + 1)) <= 120
    finally:
        await rds.delete(keys.rest_weight(minute), keys.rest_weight(minute + 1))
    down = WeightGovernor(100, 0.0, clock=lambda: now[0], sleep=sleep,
                          shared=SharedWeightBudget(aioredis.from_url("redis://127.0.0.1:1/0"), keys.rest_weight))
    await down.acquire(10)  # Redis unreachable: local accounting alone
    assert down.shared is not None and down.shared.errors == 1 and down.used_weight == 10
    await down.shared.redis.aclose()
