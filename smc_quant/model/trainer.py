"""LightGBM P(win) classifier: deterministic training, walk-forward evaluation, bias checks.

Determinism: fixed ``seed`` (which seeds bagging, feature fraction and data sampling),
``deterministic=True``, ``force_row_wise=True`` and ``num_threads=1``: the same rows give the same
model string on every run. :func:`train` and :func:`walk_forward_report` are synchronous and CPU-bound;
callers on the event loop run them with ``asyncio.to_thread`` or in a process pool. A worker thread cannot be
cancelled, so :func:`train` and :func:`train_regressor` take an optional ``abort`` flag (a ``threading.Event``):
once it is set, training raises :class:`TrainingAborted` before its next boosting iteration (the learner sets it
when its round is cancelled, so a stopping service does not wait for the whole training).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from smc_quant.errors import OperationalError
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.model.dataset import Dataset
from smc_quant.model.metrics import auc, evaluate
from smc_quant.model.walkforward import walk_forward

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class UnusableModel(OperationalError):
    """A stored model cannot score the engine's rows: another schema or other features, or an artifact that does
    not load (corrupt, truncated, written by an incompatible LightGBM)."""


class FeatureSchemaMismatch(UnusableModel):
    """A stored model was trained on another feature schema than the running engine computes."""


class TrainingAborted(Exception):
    """Training stopped because its ``abort`` flag was set (no model: the caller gave up on it)."""


class _AbortCheck:
    """A LightGBM callback run before each boosting iteration: raises :class:`TrainingAborted` once ``abort`` is
    set (LightGBM lets a callback's exception end ``lgb.train``). It only reads the flag, so an unset one leaves the
    model exactly as without it."""

    before_iteration = True

    def __init__(self, abort: threading.Event) -> None:
        self.abort = abort

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if self.abort.is_set():
            raise TrainingAborted(f"training aborted before iteration {env.iteration + 1} of {env.end_iteration}")


def _callbacks(abort: threading.Event | None) -> list[Any] | None:
    return None if abort is None else [_AbortCheck(abort)]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """LightGBM hyper-parameters and the trading threshold; ``lgb_params`` is what LightGBM sees."""

    num_rounds: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    seed: int = 7
    threshold: float = 0.55

    def lgb_params(self, objective: str = "binary") -> dict[str, Any]:
        """LightGBM's parameters; ``objective`` is ``binary`` (P(win)) or ``regression`` (expected %)."""
        return {
            "objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": 1, "lambda_l2": self.lambda_l2,
            "seed": self.seed, "deterministic": True, "force_row_wise": True, "num_threads": 1,
            "verbosity": -1,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """A booster with the feature schema it was trained on."""

    booster: lgb.Booster
    feature_schema: str = FEATURE_SCHEMA.version

    def predict(self, x: F64) -> F64:
        """P(win) of each row — the expected net % for a regressor (single-threaded, so reproducible)."""
        raw = self.booster.predict(np.ascontiguousarray(x, dtype=np.float64), num_threads=1)
        return np.asarray(raw, dtype=np.float64)

    def to_string(self) -> str:
        """The artifact stored in the registry (LightGBM's text model format)."""
        text: str = self.booster.model_to_string()
        return text

    @classmethod
    def from_string(cls, text: str, feature_schema: str) -> TrainedModel:
        """Load an artifact; ``FeatureSchemaMismatch`` unless it matches the running schema, ``UnusableModel`` when
        it does not load."""
        check_schema(feature_schema)
        try:
            booster = lgb.Booster(model_str=text)
        except (lgb.basic.LightGBMError, ValueError) as exc:
            raise UnusableModel(f"the model artifact does not load: {exc}"[:300]) from exc
        check_features(booster)
        return cls(booster, feature_schema)

    def importance(self) -> dict[str, float]:
        """Share of the total split gain per feature (sums to 1; all 0 for a tree-less model)."""
        gain = np.asarray(self.booster.feature_importance(importance_type="gain"), dtype=np.float64)
        total = gain.sum()
        shares = gain / total if total > 0 else gain
        return dict(zip(FEATURE_SCHEMA.names, (float(s) for s in shares), strict=True))


def check_schema(feature_schema: str) -> None:
    """Raise ``FeatureSchemaMismatch`` when ``feature_schema`` is not the engine's current one."""
    if feature_schema != FEATURE_SCHEMA.version:
        raise FeatureSchemaMismatch(
            f"model was trained on feature schema {feature_schema!r} but the engine computes "
            f"{FEATURE_SCHEMA.version!r}; retrain the model (refusing to predict with mismatched features)"
        )


def check_features(booster: lgb.Booster) -> None:
    """Raise ``FeatureSchemaMismatch`` unless ``booster`` was trained on the engine's feature names, in the
    engine's order: a change of the features without a new schema version would otherwise score the wrong
    columns without a word."""
    names, engine = list(booster.feature_name()), list(FEATURE_SCHEMA.names)
    if names != engine:
        moved = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(names, engine, strict=False)) if a != b]
        raise FeatureSchemaMismatch(
            f"model was trained on {len(names)} features, the engine computes {len(engine)} "
            f"({', '.join(moved[:3]) or 'a different count'}) under the same schema version "
            f"{FEATURE_SCHEMA.version!r}; retrain the model (refusing to predict with mismatched features)")


def train(x: F64, y: I64, config: TrainConfig | None = None, weight: F64 | None = None, *,
          abort: threading.Event | None = None) -> TrainedModel:
    """Fit the classifier on feature rows ``x`` and 0/1 labels ``y`` (blocking; run it off the loop).

    ``weight`` (optional, one per row) scales each row's loss — the learner weights experience rows. ``abort``
    (optional): once set (from any thread), :class:`TrainingAborted` is raised before the next boosting
    iteration."""
    config = config or TrainConfig()
    data = lgb.Dataset(np.ascontiguousarray(x, dtype=np.float64), label=np.asarray(y, dtype=np.float64),
                       weight=None if weight is None else np.asarray(weight, dtype=np.float64),
                       feature_name=list(FEATURE_SCHEMA.names), free_raw_data=True)
    booster = lgb.train(config.lgb_params(), data, num_boost_round=config.num_rounds, callbacks=_callbacks(abort))
    return TrainedModel(booster)


def train_regressor(x: F64, ret_pct: F64, config: TrainConfig | None = None,
                    weight: F64 | None = None, *, abort: threading.Event | None = None) -> TrainedModel:
    """Fit the expected-% model: L2 regression of the net % return ``ret_pct`` on ``x`` (blocking).

    Same hyper-parameters, determinism and ``abort`` flag as :func:`train`; ``predict`` then returns the expected
    net % return of a setup (identity link)."""
    config = config or TrainConfig()
    data = lgb.Dataset(np.ascontiguousarray(x, dtype=np.float64), label=np.asarray(ret_pct, dtype=np.float64),
                       weight=None if weight is None else np.asarray(weight, dtype=np.float64),
                       feature_name=list(FEATURE_SCHEMA.names), free_raw_data=True)
    booster = lgb.train(config.lgb_params("regression"), data, num_boost_round=config.num_rounds,
                        callbacks=_callbacks(abort))
    return TrainedModel(booster)


def shuffled(y: I64, seed: int) -> I64:
    """``y`` in a seeded random order: same class balance, no relation to the features."""
    out: I64 = np.random.default_rng(seed).permutation(y)
    return out


@dataclass(frozen=True, slots=True)
class WalkForwardReport:
    """Per-fold and pooled out-of-sample metrics, the shuffled-label baseline and feature importance.

    ``shuffled_auc`` is the mean of the per-fold AUCs of models trained on shuffled labels. It is not
    pooled: pooled over folds, a label-blind model still ranks by each fold's base rate (it predicts
    its training base rate), which reads as a spurious AUC above 0.5 when base rates drift.
    ``pooled["fold_auc_mean"]`` is the comparable figure of the real model."""

    folds: list[dict[str, float]]
    pooled: dict[str, float]
    shuffled_auc: float
    importance: dict[str, float]
    oos_p: F64 = field(repr=False)
    oos_rows: I64 = field(repr=False)


def walk_forward_report(ds: Dataset, n_folds: int = 4, embargo_ms: int = 0, config: TrainConfig | None = None,
                        shuffle_seed: int = 99) -> WalkForwardReport:
    """Train on each fold's purged past, predict its test block; also the same with shuffled labels.

    ``ValueError`` when a fold has no training rows left (its past is all purged: too few, too bunched rows)."""
    config = config or TrainConfig()
    folds = walk_forward(ds.start, ds.end, n_folds, embargo_ms=embargo_ms)
    rows, real, per_fold = [], [], []
    for k, fold in enumerate(folds, 1):
        if fold.train.shape[0] == 0:
            raise ValueError(f"fold {k} of {n_folds} has no training rows left after purging the labels that "
                             "reach into its test block")
        y_test = ds.win[fold.test]
        p = train(ds.x[fold.train], ds.win[fold.train], config).predict(ds.x[fold.test])
        q = train(ds.x[fold.train], shuffled(ds.win[fold.train], shuffle_seed), config).predict(ds.x[fold.test])
        per_fold.append({**evaluate(y_test, ds.ret_pct[fold.test], p, config.threshold),
                         "shuffled_auc": auc(y_test, q), "train_rows": float(fold.train.shape[0]),
                         "test_start": float(fold.test_start)})
        rows.append(fold.test)
        real.append(p)
    oos, p_all = np.concatenate(rows), np.concatenate(real)
    pooled = evaluate(ds.win[oos], ds.ret_pct[oos], p_all, config.threshold)
    pooled["fold_auc_mean"] = float(np.mean([f["auc"] for f in per_fold]))
    shuffled_auc = float(np.mean([f["shuffled_auc"] for f in per_fold]))
    importance = train(ds.x, ds.win, config).importance()
    return WalkForwardReport(per_fold, pooled, shuffled_auc, importance, p_all, oos)


__all__ = ["FeatureSchemaMismatch", "TrainConfig", "TrainedModel", "TrainingAborted", "UnusableModel",
           "WalkForwardReport", "check_schema", "shuffled", "train", "train_regressor", "walk_forward_report"]
