"""A champion whose artifact no longer loads (corrupt, truncated, written by an incompatible LightGBM) cannot score
the window: the learner's round goes on as without a champion, so a challenger can replace it. It used to fail
every round (``learner_failed``) and nothing could ever take its place. Real LightGBM models on real candles, a
real PostgreSQL registry."""

from __future__ import annotations

import asyncpg
import pytest

from smc_quant.features import FEATURE_SCHEMA
from smc_quant.model.learner import Learner
from smc_quant.model.trainer import TrainedModel, UnusableModel, train
from smc_quant.store.models import ModelRegistry
from smc_quant.store.trading import TradingRepository
from tests.integration.test_learner import RealData, _loader, _Log, real, stores  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


async def test_a_champion_that_does_not_load_is_replaced(stores: tuple[ModelRegistry, TradingRepository],  # noqa: F811
                                                         real: RealData, pg_dsn: str) -> None:  # noqa: F811
    registry, repo = stores
    model = TrainedModel(train(real.history.x, real.history.win).booster, FEATURE_SCHEMA.version)
    broken = await registry.register(model, train_start=0, train_end=1, params={}, metrics={})
    await registry.promote(broken.version)
    conn = await asyncpg.connect(pg_dsn)
    try:  # the stored text cut short, as a failed write or a disk fault would leave it
        await conn.execute("UPDATE models SET artifact = substring(artifact from 1 for 200) WHERE version = $1",
                           broken.version)
    finally:
        await conn.close()
    with pytest.raises(UnusableModel, match="does not load"):
        await registry.load(broken.version)
    log = _Log()
    outcome = await Learner(repo, registry, _loader(real.history), log=log).learn_once()
    assert outcome.promoted and outcome.champion_version is None
    assert (await registry.champion()).version == outcome.version  # type: ignore[union-attr]
    unusable = [kw for event, kw in log.lines if event == "learner_champion_unusable"]
    assert unusable == [{"champion": broken.version, "error": unusable[0]["error"]}]
    assert "does not load" in unusable[0]["error"]
