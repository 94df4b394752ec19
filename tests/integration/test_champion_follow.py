"""Following the registry's champion (``shards.champion``) on a real PostgreSQL, with real LightGBM models.

Every process that scores asks the registry every minute which model is the champion. The champion's row carries
its metrics — the learner stores a held-out window there, about 1.6 MB — so the minute's question must read the
version alone: the queries the registry sends are watched through asyncpg's own query logger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest

from shards.champion import follow_champion, load_champion
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.model.predictor import MLPredictor
from smc_quant.model.trainer import TrainConfig, TrainedModel, train
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry

pytestmark = pytest.mark.integration
WAIT_S = 30.0
HOLDOUT = {"holdout": {"p": [0.5] * 4000, "y": [1] * 4000, "start": list(range(4000))}}
"""Metrics shaped like the learner's: a 4,000-row held-out window."""


class _Log:
    """A logger recording its lines; ``until(event, n)`` waits for the ``n``-th line of ``event``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def _add(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))
        self._changed.set()

    def warning(self, event: str, **fields: Any) -> None:
        self._add(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add(event, **fields)

    async def until(self, event: str, n: int) -> None:
        async def seen() -> None:
            while [e for e, _ in self.lines].count(event) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(seen(), WAIT_S)


class _Queries:
    """Every statement on the ``models`` table the pool's connections send (asyncpg's query logger; the pool's
    own reset on release left out)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, record: Any) -> None:
        if "models" in record.query:
            self.sent.append(record.query)

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self)


@pytest.fixture
async def watched(pg_dsn: str) -> AsyncIterator[tuple[ModelRegistry, _Queries]]:
    """A registry on a migrated database whose every query is recorded."""
    await apply_migrations(pg_dsn)
    queries = _Queries()
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2, init=queries.init)
    assert pool is not None
    try:
        yield ModelRegistry(pool), queries
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def booster() -> Any:
    """A small real LightGBM model (seeded rows: the same model every run)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, len(FEATURE_SCHEMA)))
    y = (x[:, 0] + 0.5 * rng.normal(size=600) > 0).astype(np.int64)
    return train(x, y, TrainConfig(num_rounds=10, min_data_in_leaf=20)).booster


async def _register(registry: ModelRegistry, booster: Any, schema: str = FEATURE_SCHEMA.version) -> int:
    record = await registry.register(TrainedModel(booster, schema), train_start=0, train_end=1, params={"seed": 7},
                                     metrics=HOLDOUT)
    return record.version


async def test_champion_version_names_the_champion_without_its_metrics(
        watched: tuple[ModelRegistry, _Queries], booster: Any) -> None:
    """``None`` with no champion; then the champion's version and feature schema through promote and rollback —
    and not one of these questions reads the metrics."""
    registry, queries = watched
    one, two = await _register(registry, booster), await _register(registry, booster)

    async def ask() -> tuple[int, str] | None:
        queries.sent.clear()
        answer = await registry.champion_version()
        assert len(queries.sent) == 1 and not any(c in queries.sent[0] for c in ("metrics", "params", "artifact"))
        return answer

    assert await ask() is None
    await registry.promote(one)
    assert await ask() == (one, FEATURE_SCHEMA.version)
    await registry.promote(two)
    assert await ask() == (two, FEATURE_SCHEMA.version)
    await registry.rollback()
    assert await ask() == (one, FEATURE_SCHEMA.version)


async def test_an_unchanged_champion_costs_one_light_query(watched: tuple[ModelRegistry, _Queries],
                                                           booster: Any) -> None:
    """The minute's check with the champion already loaded sends one query, which reads neither the metrics nor
    the artifact (it used to read and decode the whole row, held-out window included, ~32 ms a minute per
    process); a new champion is read in full once."""
    registry, queries = watched
    version = await _register(registry, booster)
    await registry.promote(version)
    predictor, log = MLPredictor(), _Log()
    queries.sent.clear()
    assert await load_champion(registry, predictor, log) and predictor.version == version
    assert any("artifact" in q for q in queries.sent)  # changed: the model itself is read
    queries.sent.clear()
    assert await load_champion(registry, predictor, log) and predictor.version == version
    assert len(queries.sent) == 1, queries.sent
    assert not any(column in queries.sent[0] for column in ("metrics", "params", "artifact")), queries.sent


async def test_a_champion_of_another_schema_is_refused_without_reading_its_model(
        watched: tuple[ModelRegistry, _Queries], booster: Any, pg_dsn: str) -> None:
    """A champion the engine cannot score with is refused every minute (logged, the loaded model stays), from its
    schema alone: its artifact is not downloaded each time only to be refused."""
    registry, queries = watched
    good = await _register(registry, booster)
    await registry.promote(good)
    predictor, log = MLPredictor(), _Log()
    assert await load_champion(registry, predictor, log) and predictor.version == good
    stale = await _register(registry, booster, "smc-features/0")
    conn = await asyncpg.connect(pg_dsn)
    try:  # promote refuses another schema: crowned by hand, as an old deployment left it
        await conn.execute("UPDATE models SET status = 'retired' WHERE status = 'champion'")
        await conn.execute("UPDATE models SET status = 'champion' WHERE version = $1", stale)
    finally:
        await conn.close()
    queries.sent.clear()
    log.lines.clear()
    assert not await load_champion(registry, predictor, log) and predictor.version == good
    assert [event for event, _ in log.lines] == ["model_refused"]
    assert not any("artifact" in q for q in queries.sent), queries.sent


async def test_the_follow_loop_switches_to_each_new_champion(watched: tuple[ModelRegistry, _Queries],
                                                             booster: Any) -> None:
    """``follow_champion`` (here every 10 ms) loads a promotion and an operator's rollback, once each."""
    registry, _ = watched
    one, two = await _register(registry, booster), await _register(registry, booster)
    predictor, log = MLPredictor(), _Log()
    task = asyncio.create_task(follow_champion(registry, predictor, log, every_s=0.01))
    try:
        await registry.promote(one)
        await log.until("model_loaded", 1)
        assert predictor.version == one
        await registry.promote(two)
        await log.until("model_loaded", 2)
        assert predictor.version == two
        await registry.rollback()
        await log.until("model_loaded", 3)
        assert predictor.version == one
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [fields["version"] for event, fields in log.lines if event == "model_loaded"] == [one, two, one]
