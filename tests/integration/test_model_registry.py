"""Train on real candles, keep models in PostgreSQL, and promote only a challenger that is better."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.errors import OperationalError
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import Dataset, build_dataset
from smc_quant.model.gate import decide
from smc_quant.model.trainer import (
    FeatureSchemaMismatch,
    TrainConfig,
    TrainedModel,
    shuffled,
    train,
    walk_forward_report,
)
from smc_quant.model.walkforward import Fold, walk_forward
from smc_quant.store.candles import CandleRepository
from smc_quant.store.db import create_pool
from smc_quant.store.migrations import apply_migrations
from smc_quant.store.models import ModelRegistry
from smc_quant.store.retention import Housekeeper

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
CONFIG = TrainConfig()


@pytest.fixture(scope="module")
def dataset(shared_data: Path) -> Dataset:
    """Labelled setups (every 5th bar) of 20,000 real 1m candles of three symbols."""
    series = [read_klines(shared_data / KLINES_2023_1M / f"{s}.csv.gz").slice(0, 20_000) for s in SYMBOLS]
    return build_dataset(series, BarrierSpec(), every=5)


@pytest.fixture(scope="module")
def last_fold(dataset: Dataset) -> Fold:
    """The latest out-of-sample window of a 4-fold purged walk-forward split."""
    return walk_forward(dataset.start, dataset.end, 4, embargo_ms=120 * 60_000)[-1]


@pytest.fixture
async def registry(pg_dsn: str) -> AsyncIterator[ModelRegistry]:
    """A registry on a freshly migrated database."""
    assert "0003_models.sql" in await apply_migrations(pg_dsn)
    pool = await create_pool(pg_dsn)
    try:
        yield ModelRegistry(pool)
    finally:
        await pool.close()


async def _register(registry: ModelRegistry, model: TrainedModel, ds: Dataset, fold: Fold) -> int:
    rows = fold.train
    record = await registry.register(model, train_start=int(ds.start[rows].min()), train_end=int(ds.end[rows].max()),
                                     params=CONFIG.to_json(), metrics={"auc": 0.6, "profit_factor": float("inf")})
    return record.version


async def test_trained_model_reloads_from_postgres_with_identical_probabilities(
        registry: ModelRegistry, dataset: Dataset, last_fold: Fold) -> None:
    """A model trained off the event loop, registered and promoted, reloads and predicts bit-identical P(win)."""
    x, y = dataset.x[last_fold.train], dataset.win[last_fold.train]
    model = await asyncio.to_thread(train, x, y, CONFIG)
    assert await registry.load_champion() is None
    version = await _register(registry, model, dataset, last_fold)
    await registry.promote(version)
    loaded = await registry.load_champion()
    assert loaded is not None and loaded.feature_schema == FEATURE_SCHEMA.version
    test_x = dataset.x[last_fold.test]
    np.testing.assert_array_equal(loaded.predict(test_x), model.predict(test_x))
    record = await registry.champion()
    assert record is not None and record.version == version
    assert record.params["seed"] == CONFIG.seed and record.metrics == {"auc": 0.6, "profit_factor": None}
    assert record.train_start < record.train_end < last_fold.test_start


def test_training_is_deterministic(dataset: Dataset, last_fold: Fold) -> None:
    """Two trainings on the same rows with the same seed produce the same model text."""
    x, y = dataset.x[last_fold.train], dataset.win[last_fold.train]
    assert train(x, y, CONFIG).to_string() == train(x, y, CONFIG).to_string()


def test_gate_rejects_a_challenger_trained_on_shuffled_labels(dataset: Dataset, last_fold: Fold) -> None:
    """On the latest out-of-sample window the shuffled-label model scores ≈ 0.5 AUC and the gate keeps the real one."""
    x, y = dataset.x[last_fold.train], dataset.win[last_fold.train]
    real = train(x, y, CONFIG).predict(dataset.x[last_fold.test])
    fake = train(x, shuffled(y, seed=11), CONFIG).predict(dataset.x[last_fold.test])
    y_test = dataset.win[last_fold.test]
    kept = decide(y_test, challenger_p=fake, champion_p=real, margin=0.01)
    assert not kept.promote
    assert kept.reason.startswith("challenger AUC")
    assert abs(kept.challenger_auc - 0.5) < 0.06
    assert kept.champion_auc > 0.6
    assert decide(y_test, challenger_p=real, champion_p=fake, margin=0.01).promote
    assert decide(y_test, challenger_p=real, champion_p=None).promote


def test_walk_forward_report_beats_its_shuffled_baseline(dataset: Dataset) -> None:
    """Pooled out-of-sample AUC clears the shuffled-label baseline, which sits at ≈ 0.5; importance sums to 1."""
    report = walk_forward_report(dataset, n_folds=4, embargo_ms=120 * 60_000, config=CONFIG)
    assert len(report.folds) == 4
    assert abs(report.shuffled_auc - 0.5) < 0.06
    assert report.pooled["fold_auc_mean"] > report.shuffled_auc + 0.05
    assert all(abs(f["shuffled_auc"] - 0.5) < 0.08 for f in report.folds)
    assert 0 < report.pooled["base_rate"] < 1
    assert sum(report.importance.values()) == pytest.approx(1.0)
    assert set(report.importance) == set(FEATURE_SCHEMA.names)


async def test_promote_keeps_one_champion_and_rollback_walks_back(
        registry: ModelRegistry, dataset: Dataset, last_fold: Fold) -> None:
    """Promotions retire the old champion in one step; rollbacks reinstate earlier champions in reverse order."""
    model = train(dataset.x[last_fold.train][:2000], dataset.win[last_fold.train][:2000], CONFIG)
    a, b, c = [await _register(registry, model, dataset, last_fold) for _ in range(3)]
    with pytest.raises(OperationalError, match="no champion"):
        await registry.rollback()
    for version in (a, b, c):
        await registry.promote(version)
        statuses = {r.version: r.status for r in await registry.list()}
        assert list(statuses.values()).count("champion") == 1 and statuses[version] == "champion"
    assert {r.version: r.status for r in await registry.list()} == {a: "retired", b: "retired", c: "champion"}
    assert (await registry.rollback()).version == b
    assert (await registry.rollback()).version == a
    with pytest.raises(OperationalError, match="no earlier champion"):
        await registry.rollback()
    champion = await registry.champion()
    assert champion is not None and champion.version == a
    with pytest.raises(OperationalError, match="no model version"):
        await registry.promote(999)
    await asyncio.gather(registry.promote(b), registry.promote(c))
    assert [r.status for r in await registry.list()].count("champion") == 1


async def test_prune_deletes_old_candidates_and_keeps_the_rollback_chain(
        registry: ModelRegistry, dataset: Dataset, last_fold: Fold) -> None:
    """Only never-promoted candidates older than the newest ``keep`` are deleted; the champion and the retired
    champion (what a rollback needs) stay, and a second pass deletes nothing."""
    model = train(dataset.x[last_fold.train][:2000], dataset.win[last_fold.train][:2000], CONFIG)
    v = [await _register(registry, model, dataset, last_fold) for _ in range(7)]
    await registry.promote(v[1])
    await registry.promote(v[3])  # v1 retired: the rollback target
    # candidates never promoted: v0 v2 v4 v5 v6; the newest three stay
    assert await registry.prune(3) == 2
    assert [r.version for r in await registry.list()] == [v[1], v[3], v[4], v[5], v[6]]
    assert await registry.prune(3) == 0
    assert await registry.prune(10) == 0
    assert (await registry.rollback()).version == v[1]
    with pytest.raises(ValueError, match="keep_candidates"):
        await registry.prune(0)

async def test_prune_retired_keeps_the_newest_promotions(
        registry: ModelRegistry, dataset: Dataset, last_fold: Fold) -> None:
    """Retired champions beyond the newest ``keep`` promotions are deleted (the learner promotes for months);
    the champion, the candidates and the kept rollback chain stay, and rollback walks what is left."""
    model = train(dataset.x[last_fold.train][:2000], dataset.win[last_fold.train][:2000], CONFIG)
    v = [await _register(registry, model, dataset, last_fold) for _ in range(6)]
    for version in v[:5]:
        await registry.promote(version)  # v0..v3 retired, v4 champion; v5 a candidate
    assert await registry.prune_retired(2) == 2  # v0 and v1: older than the newest two retired (v2, v3)
    assert [r.version for r in await registry.list()] == v[2:]
    assert await registry.prune_retired(2) == 0
    assert (await registry.rollback()).version == v[3]  # v3 champion again; v4 retired (rolled back)
    assert await registry.prune_retired(1) == 1  # retired: v2 and v4, and v4 was promoted later
    assert [r.version for r in await registry.list()] == [v[3], v[4], v[5]]
    with pytest.raises(ValueError, match="keep"):
        await registry.prune_retired(0)


async def test_the_housekeeper_prunes_candidates_and_retired_champions(
        registry: ModelRegistry, dataset: Dataset, last_fold: Fold, pg_dsn: str) -> None:
    """The hourly pass applies both limits (``SMC_LEARNER__KEEP_CANDIDATES``, ``…__KEEP_RETIRED``) and counts."""
    model = train(dataset.x[last_fold.train][:2000], dataset.win[last_fold.train][:2000], CONFIG)
    v = [await _register(registry, model, dataset, last_fold) for _ in range(6)]
    for version in v[:3]:
        await registry.promote(version)  # v0, v1 retired; v2 champion; v3..v5 candidates
    pool = await create_pool(pg_dsn)
    try:
        keeper = Housekeeper(CandleRepository(pool), registry, lambda: 0, retention_days=0, keep_candidates=2,
                             keep_retired=1)
        assert await keeper.run_once() == (0, 2)  # candidate v3 and retired v0
    finally:
        await pool.close()
    assert [r.version for r in await registry.list()] == [v[1], v[2], v[4], v[5]]
    assert keeper.stats.models_deleted == 2


async def test_a_model_of_another_feature_schema_is_refused(
        registry: ModelRegistry, dataset: Dataset, last_fold: Fold, pg_dsn: str) -> None:
    """Loading or promoting a model stored with a different feature-schema version raises a clear error."""
    model = train(dataset.x[last_fold.train][:2000], dataset.win[last_fold.train][:2000], CONFIG)
    version = await _register(registry, model, dataset, last_fold)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE models SET feature_schema = 'smc-features/0' WHERE version = $1", version)
    finally:
        await conn.close()
    with pytest.raises(FeatureSchemaMismatch, match=r"smc-features/0.*retrain"):
        await registry.load(version)
    with pytest.raises(FeatureSchemaMismatch):
        await registry.promote(version)
    with pytest.raises(FeatureSchemaMismatch):
        TrainedModel.from_string(model.to_string(), "smc-features/0")
