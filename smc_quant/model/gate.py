"""The promotion gate: a challenger replaces the champion only when it is better out of sample.

Both models are scored on the same latest out-of-sample window (rows neither was trained on). The
challenger must beat the champion's AUC by ``margin`` and must itself be better than chance
(AUC > 0.5 + ``margin``); every decision carries its reason so the learner can log why it kept the
champion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smc_quant.model.metrics import auc

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether to promote, with both scores and a human-readable reason."""

    promote: bool
    challenger_auc: float
    champion_auc: float
    reason: str


def decide(y: I64, challenger_p: F64, champion_p: F64 | None, margin: float = 0.01) -> GateDecision:
    """Compare AUCs on the same window; with no champion the challenger only has to beat chance."""
    ch = auc(y, challenger_p)
    cur = auc(y, champion_p) if champion_p is not None else 0.5
    if not np.isfinite(ch):
        return GateDecision(False, ch, cur, "challenger AUC undefined on this window (one class only)")
    if ch <= 0.5 + margin:
        return GateDecision(False, ch, cur, f"challenger AUC {ch:.4f} is not above chance + {margin}")
    if ch <= cur + margin:
        return GateDecision(False, ch, cur, f"challenger AUC {ch:.4f} does not beat champion {cur:.4f} + {margin}")
    return GateDecision(True, ch, cur, f"challenger AUC {ch:.4f} beats champion {cur:.4f} + {margin}")


__all__ = ["GateDecision", "decide"]
