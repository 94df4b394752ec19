"""The promotion gate: a challenger replaces the champion only when it is better out of sample.

Both models are scored on the same latest out-of-sample window (rows neither was trained on). The
challenger must itself be better than chance: AUC > 0.5 + ``margin``, and, with ``z > 0``, significantly
so — its lower bound ``AUC − q·SE > 0.5``. It must beat the champion's AUC by ``margin`` and, with
``paired_z > 0``, significantly so on these rows: ``(AUC − AUC_champion) − q·SE_diff > 0``, with the paired SE
of the difference (:func:`paired_auc_diff_se`; both models score the same rows, so their errors are
correlated and the difference is known far better than either AUC). Without that test a challenger no
better than the champion replaces it whenever chance gives it the margin — a quarter of the windows in
the unit test — and every swap changes the live model for nothing.

The rows of a window are not independent: every symbol's row of one minute sees the same market, and
the label windows of rows less than a horizon apart overlap (a 2-hour label read every 5 minutes). An
SE that treats them as independent is too small, and a model that only tracks the market's state
passes the test far more often than ``z`` says (on the demo, whose symbols repeat 18 real series, each
row counts 18 times). So the SE is the cluster-robust one of Obuchowski (1997), with the rows grouped
into blocks of time as long as the label windows (95th percentile, :func:`time_blocks`): rows that share a block
may depend on each other in any way, rows of different blocks are treated as independent. With the
midrank structural components — for a win ``i``, ``V10ᵢ`` = the share of losses it outscores (ties ½);
for a loss ``j``, ``V01ⱼ`` = the share of wins that outscore it — and per block ``k`` the sums
``s10ₖ = Σ_{wins in k}(V10ᵢ − A)``, ``s01ₖ = Σ_{losses in k}(V01ⱼ − A)``, on ``K`` blocks, ``n1`` wins,
``n0`` losses::

    SE² = K/(K − 1) · (Σ s10ₖ² / n1² + Σ s01ₖ² / n0² + 2 Σ s10ₖ·s01ₖ / (n1·n0))

With few blocks that SE is itself uncertain, so ``z`` (a normal quantile, 1.645: one-sided 95 %) is
turned into the Student-t quantile of the same level on ``K − 1`` degrees of freedom. The SE is never
taken below the Hanley–McNeil SE of independent rows::

    Q1 = A / (2 − A),  Q2 = 2A² / (1 + A)
    SE² = (A(1 − A) + (n1 − 1)(Q1 − A²) + (n0 − 1)(Q2 − A²)) / (n1 · n0)

Measured on the 18 real series (``bench/gate_null.py``, 72 windows of 36 h, each after 7 days of
training): models trained on shuffled labels — real features, no edge — passed the independent-rows test
in 21 % of windows and the blocked one in 7 %; models trained on the real labels passed in 94 % / 85 %.
With every row repeated 18 times (the demo) the no-edge models passed in 29 % / 7 %.
The champion comparison, same bench: two models each trained on one half of the week's hours (as good as
each other) — the margin alone swapped them in 15 % of windows, the paired test in none; a champion 36 h
older was replaced in 26 % / 11 %, one trained on shuffled labels in 85 % / 81 %.
A challenger that clears all of this must also not be clearly worse calibrated: its Brier score on the window
may exceed the champion's (with no champion: that of the constant forecast at the training rows' win rate, when
the caller gives it — the window's own rate is hindsight no model has) by at most ``brier_margin`` (0.005). AUC
only ranks; the strategy trades where the probability itself clears ``min_confidence``, so a challenger that
ranks better but whose probabilities sit higher would trade many more setups than either model deserves. A
systematic shift of δ adds about δ² to the Brier score, so 0.005 refuses a shift beyond ~0.07. The margin is
there because Brier also rewards a useless model that hugs the base rate: a model trained on shuffled labels
scored 0.1052 on real setups where the real model (AUC 0.61 against 0.45) scored 0.1058. On the 18 real series
(12 learner-like rounds of 7 days) every challenger the AUC tests promoted also had the lower Brier score (the
first one also below its training base rate's), so the check changed no decision there.
Every decision carries its reason so the learner can log why it kept the champion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, stdtrit

from smc_quant.domain.candles import MINUTE_MS
from smc_quant.model.metrics import auc, brier, midranks

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether to promote, with both scores and a human-readable reason."""

    promote: bool
    challenger_auc: float
    champion_auc: float
    reason: str
    challenger_brier: float | None = None
    """The challenger's Brier score on the window (``None``: not reached, an AUC test refused it first)."""
    reference_brier: float | None = None
    """The champion's, or with none the base-rate forecast's, on the same rows."""


def auc_se(a: float, wins: int, losses: int) -> float:
    """Hanley–McNeil standard error of an AUC ``a`` measured on ``wins`` positives and ``losses`` negatives."""
    if wins < 1 or losses < 1:
        return math.inf
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (wins - 1) * (q1 - a * a) + (losses - 1) * (q2 - a * a)) / (wins * losses)
    return math.sqrt(max(var, 0.0))




BLOCK_QUANTILE = 0.95
"""The label window that sets the block length: this quantile of the rows' windows, not the longest."""


def time_blocks(start: I64, end: I64) -> I64:
    """The block of time of each row: ``start // L`` with ``L`` the label window of these rows at
    ``BLOCK_QUANTILE`` (``end − start`` plus its last minute, at least one minute), so rows whose labels can
    overlap mostly share a block and rows of different blocks do not overlap beyond the neighbouring block — except
    the longest 5 % of windows, which may reach further: the SE treats those few dependencies as absent.

    Not the longest window: one trade closed at a restart 20 hours after its signal, or a label stretched over a
    gap in the candles, made the blocks 20 hours long — two blocks in a held-out day, an SE too wide for any
    challenger to pass and a false "champion has no edge" — until that row left the window."""
    if start.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    span = int(np.quantile(end - start, BLOCK_QUANTILE, method="higher"))
    length = max(MINUTE_MS, span + MINUTE_MS)
    blocks: I64 = (start // length).astype(np.int64)
    return blocks


def _components(y: I64, p: F64) -> tuple[F64, F64]:
    """The midrank structural components of the AUC of ``p``: ``V10`` of each win, ``V01`` of each loss."""
    pos = y == 1
    wins = int(np.count_nonzero(pos))
    losses = int(y.shape[0]) - wins
    p = np.asarray(p, dtype=np.float64)
    r = midranks(p)
    v10 = (r[pos] - midranks(p[pos])) / losses
    v01 = 1.0 - (r[~pos] - midranks(p[~pos])) / wins
    return v10, v01


def _clustered_se(y: I64, v10: F64, v01: F64, groups: I64) -> tuple[float, int]:
    """The module docstring's SE from components ``v10`` (wins) and ``v01`` (losses) whose mean is the
    estimate; with the number of groups. ``inf`` with one class or fewer than two groups."""
    pos = y == 1
    wins = int(np.count_nonzero(pos))
    losses = int(y.shape[0]) - wins
    ids, which = np.unique(groups, return_inverse=True)
    k = int(ids.shape[0])
    if wins < 1 or losses < 1 or k < 2:
        return math.inf, k
    a = float(v10.mean())
    s10 = np.bincount(which[pos], weights=v10 - a, minlength=k)
    s01 = np.bincount(which[~pos], weights=v01 - a, minlength=k)
    var = k / (k - 1) * (float(s10 @ s10) / wins**2 + float(s01 @ s01) / losses**2
                         + 2.0 * float(s10 @ s01) / (wins * losses))
    return math.sqrt(max(var, 0.0)), k


def _both_classes(y: I64) -> bool:
    wins = int(np.count_nonzero(y == 1))
    return 0 < wins < int(y.shape[0])


def clustered_auc_se(y: I64, p: F64, groups: I64) -> tuple[float, int]:
    """Obuchowski's cluster-robust SE of the AUC of scores ``p`` for 0/1 labels ``y``, with rows of the same
    ``groups`` value free to depend on each other (module docstring); with the number of groups.
    ``inf`` with one class or fewer than two groups."""
    if not _both_classes(y):
        return math.inf, int(np.unique(groups).shape[0])
    v10, v01 = _components(y, p)
    return _clustered_se(y, v10, v01, groups)


def paired_auc_diff_se(y: I64, p_a: F64, p_b: F64, groups: I64 | None = None) -> tuple[float, float, int]:
    """``AUC(p_a) − AUC(p_b)`` on the same rows, with the SE of that difference and the number of groups.

    Both models score the same rows, so their errors are correlated and the SE of the difference is far
    smaller than ``√(SE_a² + SE_b²)`` when they largely agree. The components of the difference are the
    differences of the components (``V10ᵢ(a) − V10ᵢ(b)``, ``V01ⱼ(a) − V01ⱼ(b)``: the AUC is linear in them),
    put through the module docstring's cluster-robust formula; without ``groups`` every row is its own
    group (DeLong, DeLong & Clarke-Pearson 1988, up to the factor ``n/(n − 1)``). ``(nan, inf, k)`` with
    one class or fewer than two groups."""
    groups = np.arange(y.shape[0], dtype=np.int64) if groups is None else groups
    if not _both_classes(y):
        return math.nan, math.inf, int(np.unique(groups).shape[0])
    a10, a01 = _components(y, p_a)
    b10, b01 = _components(y, p_b)
    se, k = _clustered_se(y, a10 - b10, a01 - b01, groups)
    return float(a10.mean() - b10.mean()), se, k


@dataclass(frozen=True, slots=True)
class ChanceTest:
    """Whether a model's AUC on a window is above ``0.5 + margin`` and, with ``z > 0``, significantly above
    chance; with the reason (always set) and what it was measured on."""

    passed: bool
    auc: float
    reason: str


def chance_test(y: I64, p: F64, margin: float = 0.01, z: float = 1.645, groups: I64 | None = None,
                name: str = "challenger") -> ChanceTest:
    """The gate's floor for scores ``p``: AUC > 0.5 + ``margin`` and ``AUC − q·SE > 0.5`` (module docstring;
    ``groups`` makes the SE cluster-robust and ``q`` a Student-t quantile). ``name`` starts the reason."""
    a = auc(y, p)
    if not np.isfinite(a):
        return ChanceTest(False, a, f"{name} AUC undefined on this window (one class only)")
    if a <= 0.5 + margin:
        return ChanceTest(False, a, f"{name} AUC {a:.4f} is not above chance + {margin}")
    wins = int(np.count_nonzero(y))
    se = auc_se(a, wins, int(y.shape[0]) - wins)
    quantile, on = z, f"{y.shape[0]} rows ({wins} wins)"
    if groups is not None and z > 0:
        blocked, k = clustered_auc_se(y, p, groups)
        se = max(se, blocked)
        quantile = float(stdtrit(k - 1, ndtr(z))) if k >= 2 else math.inf
        on += f" in {k} time blocks"
    low = a - quantile * se
    if z > 0 and not low > 0.5:
        return ChanceTest(False, a, f"{name} AUC {a:.4f} is not significantly above chance: "
                                    f"AUC − {quantile:.3f}·SE = {low:.4f} on {on}")
    if z > 0:
        return ChanceTest(True, a, f"{name} AUC {a:.4f} is significantly above chance: "
                                   f"AUC − {quantile:.3f}·SE = {low:.4f} on {on}")
    return ChanceTest(True, a, f"{name} AUC {a:.4f} is above chance + {margin}")


def decide(y: I64, challenger_p: F64, champion_p: F64 | None, margin: float = 0.01,
           z: float = 1.645, groups: I64 | None = None, paired_z: float | None = None, *,
           brier_margin: float | None = 0.005, base_rate: float | None = None) -> GateDecision:
    """Compare AUCs on the same window; with no champion the challenger only has to beat chance. ``z`` is the
    significance of the chance test (:func:`chance_test`), ``paired_z`` that of the gain over the champion
    (``None``: ``z``; 0 turns a test off, leaving the margin). ``groups`` (e.g. :func:`time_blocks`) makes
    both tests cluster-robust; without it the rows are taken as independent (see the module docstring).
    Last, the Brier condition within ``brier_margin`` (``None``: off, the ranking alone, for scores that are not
    probabilities); with no champion it compares with the constant forecast at ``base_rate`` (the training rows'
    win rate; ``None``: no Brier condition without a champion)."""
    floor = chance_test(y, challenger_p, margin, z, groups)
    ch = floor.auc
    cur = auc(y, champion_p) if champion_p is not None else 0.5
    if not floor.passed:
        return GateDecision(False, ch, cur, floor.reason)
    if ch <= cur + margin:
        return GateDecision(False, ch, cur, f"challenger AUC {ch:.4f} does not beat champion {cur:.4f} + {margin}")
    pz = z if paired_z is None else paired_z
    if champion_p is not None and pz > 0:
        diff, d_se, _ = paired_auc_diff_se(y, challenger_p, champion_p)
        quantile, on = pz, f"{y.shape[0]} rows ({int(np.count_nonzero(y))} wins)"
        if groups is not None:
            blocked, k = paired_auc_diff_se(y, challenger_p, champion_p, groups)[1:]
            d_se = max(d_se, blocked)
            quantile = float(stdtrit(k - 1, ndtr(pz))) if k >= 2 else math.inf
            on += f" in {k} time blocks"
        d_low = diff - quantile * d_se
        if not d_low > 0:
            return GateDecision(False, ch, cur, f"challenger AUC {ch:.4f} beats champion {cur:.4f} + {margin} but "
                                                f"not significantly: difference − {quantile:.3f}·SE = {d_low:.4f} "
                                                f"(paired) on {on}")
        return _calibrated(y, challenger_p, champion_p, ch, cur,
                           f"challenger AUC {ch:.4f} beats champion {cur:.4f} + {margin}, significantly: "
                           f"difference − {quantile:.3f}·SE = {d_low:.4f} (paired)",
                           brier_margin, base_rate)
    return _calibrated(y, challenger_p, champion_p, ch, cur,
                       f"challenger AUC {ch:.4f} beats champion {cur:.4f} + {margin}",
                       brier_margin, base_rate)


def _calibrated(y: I64, challenger_p: F64, champion_p: F64 | None, ch: float, cur: float, ranked: str,
                brier_margin: float | None, base_rate: float | None) -> GateDecision:
    """The last condition: a challenger that ranks better must not be worse calibrated than the champion (or, with
    none, than the constant forecast at ``base_rate``) by more than ``brier_margin`` (``None``: no check) — Brier
    score, lower is better."""
    if brier_margin is None or (champion_p is None and base_rate is None):
        return GateDecision(True, ch, cur, ranked)
    b_ch = brier(y, challenger_p)
    name, ref = ((f"the training base rate {base_rate:.3f}", brier(y, np.full(y.shape[0], base_rate)))
                 if champion_p is None else ("the champion", brier(y, champion_p)))
    if not b_ch <= ref + brier_margin:
        return GateDecision(False, ch, cur, f"{ranked}, but its probabilities are worse calibrated: Brier {b_ch:.4f} "
                                            f"against {ref:.4f} of {name} + {brier_margin}", b_ch, ref)
    return GateDecision(True, ch, cur, f"{ranked}; Brier {b_ch:.4f} against {ref:.4f} of {name}", b_ch, ref)


# --- the latest out-of-sample window: split, choice of gate rows, and its stored form -------------------------


@dataclass(frozen=True, slots=True)
class LatestSplit:
    """Rows of a time-sorted dataset: ``train`` (labels end before ``cut_ms``) and ``holdout`` (signal at or
    after ``cut_ms``: the latest slice, never seen by a model trained on ``train``)."""

    train: I64
    holdout: I64
    cut_ms: int


class NotEnoughData(ValueError):
    """Too few labelled rows to hold some out and train on the rest (a fresh database, a short history)."""


def split_latest(start: I64, end: I64, fraction: float = 0.2, min_rows: int = 50) -> LatestSplit:
    """Hold out the latest ``max(min_rows, ceil(fraction · n))`` rows by signal time (ties kept together).

    Purge: a training row must have its whole label window before the cut (``end < cut_ms``), so no
    training label overlaps the held-out window."""
    n = int(start.shape[0])
    if not 0 < fraction < 1:
        raise ValueError("fraction must be in (0, 1)")
    k = min(n, max(min_rows, math.ceil(fraction * n)))
    if n == 0 or k == n:
        raise NotEnoughData(f"{n} rows are too few to hold out {k} and train on the rest")
    cut = int(np.sort(start)[n - k])
    return LatestSplit(np.flatnonzero(end < cut).astype(np.int64), np.flatnonzero(start >= cut).astype(np.int64),
                       cut)


def gate_rows(win: I64, is_setup: npt.NDArray[np.bool_], min_setups: int = 100) -> tuple[I64, str]:
    """Which held-out rows the gate scores: the strategy's setups when there are ``min_setups`` of them with
    both outcomes (the rows the live model is asked about), else every held-out row; with the name used."""
    setups = np.flatnonzero(is_setup).astype(np.int64)
    if setups.shape[0] >= min_setups and 0 < int(win[setups].sum()) < setups.shape[0]:
        return setups, "strategy setups"
    return np.arange(win.shape[0], dtype=np.int64), "all held-out rows"


class StoredHoldout(NamedTuple):
    """A held-out window as kept in the registry: features, labels, setup marks, signal and label-end times."""

    x: F64
    win: I64
    is_setup: npt.NDArray[np.bool_]
    start: I64
    end: I64


def holdout_to_json(x: F64, win: I64, is_setup: npt.NDArray[np.bool_], start: I64, end: I64,
                    max_rows: int = 4000) -> dict[str, Any]:
    """The held-out window as registry metrics (NaN features become null), so ``smc-quant promote`` can gate a
    candidate later without the candles. Beyond ``max_rows`` rows, ``max_rows`` spread evenly over the window:
    with 300+ symbols its latest 4,000 rows — kept until 2026-12-07 — covered about 80 minutes, one or two time
    blocks, and a later re-gate refused every model the learner had passed on the whole window."""
    n = win.shape[0]
    keep = (np.unique(np.linspace(0, n - 1, max_rows).round().astype(np.int64)) if n > max_rows
            else np.arange(n, dtype=np.int64))
    return {"x": x[keep].tolist(), "win": win[keep].tolist(), "is_setup": is_setup[keep].tolist(),
            "start": start[keep].tolist(), "end": end[keep].tolist()}


def holdout_from_json(data: Mapping[str, Any]) -> StoredHoldout:
    """Inverse of :func:`holdout_to_json` (null → NaN); ``ValueError`` on a malformed payload. A window stored
    before label ends were kept reads ``end = start`` (its time blocks are then single minutes)."""
    try:
        x = np.array([[np.nan if v is None else float(v) for v in row] for row in data["x"]], dtype=np.float64)
        win = np.asarray(data["win"], dtype=np.int64)
        is_setup = np.asarray(data["is_setup"], dtype=np.bool_)
        start = np.asarray(data["start"], dtype=np.int64)
        end = np.asarray(data["end"], dtype=np.int64) if "end" in data else start.copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed stored holdout window: {exc}") from exc
    n = win.shape[0]
    if any(a.shape[0] != n for a in (x, is_setup, start, end)) or (n and x.ndim != 2):
        raise ValueError("malformed stored holdout window: column lengths differ")
    return StoredHoldout(x.reshape(n, -1) if n else x.reshape(0, 0), win, is_setup, start, end)


__all__ = ["ChanceTest", "GateDecision", "LatestSplit", "NotEnoughData", "StoredHoldout", "auc_se", "chance_test",
           "clustered_auc_se", "decide", "gate_rows", "holdout_from_json", "holdout_to_json", "paired_auc_diff_se",
           "split_latest", "time_blocks"]
