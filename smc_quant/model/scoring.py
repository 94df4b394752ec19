"""``BatchScorer``: the feature-batch sink that scores every minute's rows with the champion model.

It is called synchronously by each shard's ``MinuteAnalyzer`` with a batch (``shard``, ``symbols``,
``open_times``, ``features``, ``schema_version``), keeps the latest scores per shard and counts what it
did. With no model loaded it scores nothing ("no model, not trading", logged once), counts the batch
as unscored and hands it on with ``p_win=None`` (the strategy counts its setups; no signal can come of
it). It never raises into the analyzer: a failing prediction is logged and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from smc_quant.features import FEATURE_SCHEMA
from smc_quant.model.predictor import MLPredictor

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Batch(Protocol):
    """What the scorer reads of a ``shards.analysis.FeatureBatch``."""

    @property
    def shard(self) -> int: ...
    @property
    def symbols(self) -> tuple[str, ...]: ...
    @property
    def open_times(self) -> I64: ...
    @property
    def features(self) -> F64: ...
    @property
    def schema_version(self) -> str: ...
    @property
    def break_times(self) -> F64 | None: ...


@dataclass(frozen=True, slots=True)
class Scores:
    """P(win) of each symbol of one batch, after the candle that opened at ``open_times``."""

    symbols: tuple[str, ...]
    open_times: I64
    p_win: F64 | None
    """``None``: no model yet (listeners still see the batch, e.g. to count the strategy's setups)."""


class BatchScorer:
    """Scores feature batches with one shared :class:`MLPredictor` and keeps counters for /metrics."""

    def __init__(self, predictor: MLPredictor, logger: Any) -> None:
        self.predictor = predictor
        self._log = logger
        self.latest: dict[int, Scores] = {}
        self.batches_scored = 0
        self.batches_unscored = 0
        self.rows_scored = 0
        self.errors = 0
        self.last_predict_s = 0.0
        self.max_predict_s = 0.0
        self._told_no_model = False
        self._listeners: list[Callable[[Batch, Scores], None]] = []

    def subscribe(self, listener: Callable[[Batch, Scores], None]) -> None:
        """Call ``listener(batch, scores)`` after every batch of the current schema: scored, or with
        ``scores.p_win = None`` while there is no model (the strategy attaches here)."""
        self._listeners.append(listener)

    def __call__(self, batch: Batch) -> None:
        if not self.predictor.ready or batch.schema_version != FEATURE_SCHEMA.version:
            self.batches_unscored += 1
            if not self._told_no_model:
                self._told_no_model = True
                self._log.warning("model_not_trading", reason="no model, not trading"
                                  if not self.predictor.ready else f"batch schema {batch.schema_version}")
            if batch.schema_version == FEATURE_SCHEMA.version:  # no model: the listeners still count setups
                self._notify(batch, Scores(batch.symbols, batch.open_times, None))
            return
        started = time.perf_counter()
        try:
            p = self.predictor.predict_batch(batch.features)
        except Exception as exc:  # never break the analyzer's flush
            self.errors += 1
            self.batches_unscored += 1
            self._log.error("model_predict_failed", error=f"{type(exc).__name__}: {exc}", shard=batch.shard)
            return
        elapsed = time.perf_counter() - started
        scores = Scores(batch.symbols, batch.open_times, p)
        self.latest[batch.shard] = scores
        self.batches_scored += 1
        self.rows_scored += len(batch.symbols)
        self.last_predict_s = elapsed
        self.max_predict_s = max(self.max_predict_s, elapsed)
        self._notify(batch, scores)

    def _notify(self, batch: Batch, scores: Scores) -> None:
        for listener in self._listeners:
            try:
                listener(batch, scores)
            except Exception as exc:  # a failing listener never breaks scoring or the analyzer
                self.errors += 1
                self._log.error("scores_listener_failed", error=f"{type(exc).__name__}: {exc}")

    def metrics(self) -> dict[str, float]:
        """Counters for the ops endpoint (``model_*``)."""
        return {"model_ready": float(self.predictor.ready),
                "model_version": float(self.predictor.version or 0),
                "model_batches_scored": float(self.batches_scored),
                "model_batches_unscored": float(self.batches_unscored),
                "model_rows_scored": float(self.rows_scored),
                "model_predict_errors": float(self.errors),
                "model_predict_last_seconds": self.last_predict_s,
                "model_predict_max_seconds": self.max_predict_s}


__all__ = ["Batch", "BatchScorer", "Scores"]
