"""MLPredictor: schema check, the explicit no-model state, and probabilities identical to LightGBM's."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from shards.analysis import FeatureBatch
from smc_quant.datasets import KLINES_2023_1M, read_klines
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import build_dataset
from smc_quant.model.predictor import BLOCK, SMALL_BATCH, MLPredictor, NoModel, compile_trees, nan_blind_features
from smc_quant.model.scoring import BatchScorer, Scores
from smc_quant.model.trainer import FeatureSchemaMismatch, TrainConfig, TrainedModel, train, train_regressor
from smc_quant.strategy import ICTScalper

N = len(FEATURE_SCHEMA)


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N))
    x[rng.random(x.shape) < 0.25] = np.nan
    x[:, 2] = np.round(x[:, 2])  # many exact zeros
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 2]) + rng.normal(size=rows) > 0.7).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    """A small deterministic model trained on synthetic rows with NaNs and zeros."""
    x, y = _data(5000, 1)
    return train(x, y, TrainConfig(num_rounds=60, min_data_in_leaf=50))


def test_probabilities_equal_the_trained_model(model: TrainedModel) -> None:
    """The compiled kernel gives LightGBM's probabilities (within 1e-12) on rows with NaNs, zeros and tiny values."""
    x, _ = _data(3000, 2)
    x[:20] = 0.0
    x[20:40] = 1e-40
    x[40:60] = np.nan
    predictor = MLPredictor(model, version=3)
    assert predictor.ready and predictor.compiled and predictor.version == 3
    np.testing.assert_allclose(predictor.predict_batch(x), model.predict(x), rtol=0, atol=1e-12)
    for rows in (1, SMALL_BATCH - 1, SMALL_BATCH, BLOCK + 1):  # both kernels, and a batch over two blocks
        np.testing.assert_allclose(predictor.predict_batch(x[:rows]), model.predict(x[:rows]), rtol=0, atol=1e-12)


def test_no_model_is_not_trading(model: TrainedModel) -> None:
    """Without a model the predictor is not ready and refuses to predict; unloading returns to that state."""
    predictor = MLPredictor()
    assert not predictor.ready
    with pytest.raises(NoModel, match="not trading"):
        predictor.predict_batch(np.zeros((3, N)))
    predictor.load(model)
    assert predictor.predict_batch(np.zeros((3, N))).shape == (3,)
    predictor.unload()
    with pytest.raises(NoModel):
        predictor.predict_batch(np.zeros((1, N)))


def test_schema_mismatch_is_refused(model: TrainedModel) -> None:
    """A model stored with another feature-schema version is refused with a clear error, and wrong widths too."""
    stale = TrainedModel(model.booster, "smc-features/0")
    with pytest.raises(FeatureSchemaMismatch, match="retrain"):
        MLPredictor(stale)
    predictor = MLPredictor(model)
    with pytest.raises(ValueError, match="feature matrix"):
        predictor.predict_batch(np.zeros((2, N - 1)))


def test_a_model_whose_features_differ_under_the_same_schema_version_is_refused(model: TrainedModel) -> None:
    """Two features swapped (a change made without a new schema version): refused when read from the registry's
    text and when loaded, naming the first difference — never scored on the wrong columns."""
    names = list(FEATURE_SCHEMA.names)
    text = model.to_string()
    line = "feature_names=" + " ".join(names)
    assert line in text, "precondition: LightGBM stores the names it was trained on"
    swapped = " ".join([names[1], names[0], *names[2:]])
    text = text.replace(line, "feature_names=" + swapped)
    with pytest.raises(FeatureSchemaMismatch, match=f"0: {names[1]!r} vs {names[0]!r}"):
        TrainedModel.from_string(text, FEATURE_SCHEMA.version)
    with pytest.raises(FeatureSchemaMismatch, match="retrain"):
        MLPredictor(TrainedModel(lgb.Booster(model_str=text)))
    assert TrainedModel.from_string(model.to_string(), FEATURE_SCHEMA.version).feature_schema == FEATURE_SCHEMA.version


def test_unsupported_models_fall_back_to_lightgbm() -> None:
    """Model texts the kernel cannot evaluate exactly (multiclass, categorical, > 64 leaves, zero-as-missing)
    are left to LightGBM's own predict, and its predictions are still LightGBM's."""
    head = "tree\nversion=v4\nobjective=multiclass num_class:3\nnum_tree_per_iteration=3\n"
    assert compile_trees(head + "\nTree=0\nleaf_value=1\n") is None
    x, y = _data(3000, 4)
    wide = train(x, y, TrainConfig(num_rounds=3, num_leaves=80, min_data_in_leaf=5))
    assert max(t["num_leaves"] for t in wide.booster.dump_model()["tree_info"]) > 64
    predictor = MLPredictor(wide)
    assert not predictor.compiled
    np.testing.assert_array_equal(predictor.predict_batch(x[:50]), wide.predict(x[:50]))


def test_regression_model_is_compiled_exactly() -> None:
    """An L2 regressor (the expected-% model) is evaluated by the same kernel with the identity link."""
    x, y = _data(4000, 5)
    ret = np.nan_to_num(x[:, 0]) * 0.3 + y - 0.4
    model = train_regressor(x, ret, TrainConfig(num_rounds=40, min_data_in_leaf=30))
    trees = compile_trees(model.to_string())
    assert trees is not None and trees.sigmoid == 0.0
    rows, _ = _data(2000, 6)
    rows[:10] = 1e-40
    predictor = MLPredictor(model)
    assert predictor.compiled
    got = predictor.predict_batch(rows)
    np.testing.assert_allclose(got, model.predict(rows), rtol=0, atol=1e-12)
    assert got.std() > 0.05  # a real spread of predictions, not a constant


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.events.append((event, kw))

    error = warning


def _batch(shard: int, rows: int) -> FeatureBatch:
    x, _ = _data(rows, 3)
    return FeatureBatch(shard, 0, tuple(f"S{i}" for i in range(rows)), np.zeros(rows, dtype=np.int64), x,
                        np.zeros((0, 0)), 0.0)


def test_scorer_counts_unscored_batches_without_a_model_and_scores_with_one(model: TrainedModel) -> None:
    """The analyzer sink logs "no model, not trading" once, then scores every batch once a model is loaded."""
    log, predictor = _Log(), MLPredictor()
    scorer = BatchScorer(predictor, log)
    seen: list[Scores] = []
    scorer.subscribe(lambda _batch, scores: seen.append(scores))
    scorer(_batch(0, 5))
    scorer(_batch(1, 5))
    assert scorer.metrics()["model_batches_unscored"] == 2 and scorer.metrics()["model_ready"] == 0
    assert [s.p_win for s in seen] == [None, None]  # handed on unscored: the strategy still counts setups
    assert scorer.latest == {}
    assert [kw["reason"] for _, kw in log.events] == ["no model, not trading"]
    predictor.load(model, version=7)
    batch = _batch(1, 300)
    scorer(batch)
    m = scorer.metrics()
    assert m["model_batches_scored"] == 1 and m["model_rows_scored"] == 300 and m["model_version"] == 7
    assert 0 < m["model_predict_last_seconds"] <= m["model_predict_max_seconds"]
    np.testing.assert_array_equal(scorer.latest[1].p_win, predictor.predict_batch(batch.features))
    assert seen[-1] is scorer.latest[1] and len(seen) == 3
    other = _batch(0, 5)
    scorer(replace(other, schema_version="smc-features/0"))  # another schema: not scored, not handed on
    assert len(seen) == 3 and scorer.metrics()["model_batches_unscored"] == 3


def test_a_nan_where_the_model_never_saw_one_is_not_scored_as_zero(shared_data: Path) -> None:
    """A model trained on real candles ("broad" setups of BTCUSDT and ETHUSDT) never saw NaN in most features, so
    LightGBM would score a NaN there as 0 (a 1m trend of 0, "a CHoCH just now"...). Fresh-engine rows of real
    SOLUSDT with such a NaN come back unscored (NaN), counted per feature, and the strategy counts them as
    rejected; every other row is LightGBM's own probability."""
    series = [read_klines(shared_data / KLINES_2023_1M / f"{sym}.csv.gz").slice(0, 20_000)
              for sym in ("BTCUSDT", "ETHUSDT")]
    ds = build_dataset(series, BarrierSpec(), every=5, source="broad")
    model = train(ds.x, ds.win, TrainConfig(num_rounds=40, min_data_in_leaf=50))
    predictor = MLPredictor(model)
    blind = [FEATURE_SCHEMA.names.index(name) for name in predictor.nan_blind]
    assert blind and not np.isnan(ds.x[:, blind]).any()
    assert (nan_blind_features(model.to_string()) == np.isin(np.arange(N), blind)).all()
    s = read_klines(shared_data / KLINES_2023_1M / "SOLUSDT.csv.gz").slice(40_000, 43_000)
    x = FeatureEngineer().batch(s)[0]  # a fresh engine: trends, breaks and windows still unknown at first
    bad = np.isnan(x[:, blind]).any(axis=1)
    assert 0 < bad.sum() < len(x)
    zeroed = x[bad].copy()
    zeroed[:, blind] = np.nan_to_num(zeroed[:, blind], nan=0.0)
    np.testing.assert_array_equal(model.predict(x[bad]), model.predict(zeroed))  # LightGBM's rule: NaN is 0 there
    for rows in (slice(None), slice(0, SMALL_BATCH - 1)):  # both kernels
        predictor.unscored.clear()
        p = predictor.predict_batch(x[rows])
        assert np.isnan(p[bad[rows]]).all()
        np.testing.assert_allclose(p[~bad[rows]], model.predict(x[rows][~bad[rows]]), rtol=0, atol=1e-12)
        assert sum(predictor.unscored.values()) == bad[rows].sum()
        assert all(reason.removeprefix("nan_") in predictor.nan_blind for reason in predictor.unscored)
    scalper = ICTScalper()
    row = np.full((1, N), np.nan)  # a textbook long whose bars_since_choch is unknown
    names = FEATURE_SCHEMA.names
    row[0, [names.index(n) for n in ("trend_1m", "trend_15m", "trend_1h")]] = 1.0
    row[0, [names.index(n) for n in ("bars_since_bos", "bars_since_sweep_low", "bull_fvg_dist_atr", "atr_pct")]] = (
        2.0, 6.0, 0.0, 0.2)
    assert scalper.on_batch(["SOLUSDT"], np.array([600_000]), row, predictor.predict_batch(row),
                            close_prices=[Decimal(20)], now_ms=660_000) == []
    assert scalper.stats.rejected == {"unscored": 1}
