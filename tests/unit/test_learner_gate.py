"""The learner's pure pieces: the latest held-out split (purged), the choice of gate rows, the stored window,
the experience rows as training rows, and the configuration checks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from smc_quant.domain.trading import ExperienceRow
from smc_quant.features import FEATURE_SCHEMA
from smc_quant.model import gate
from smc_quant.model.dataset import Dataset
from smc_quant.model.gate import (
    GateDecision,
    NotEnoughData,
    auc_se,
    clustered_auc_se,
    gate_rows,
    holdout_from_json,
    holdout_to_json,
    paired_auc_diff_se,
    split_latest,
    time_blocks,
)
from smc_quant.model.learner import LearnerConfig, experience_dataset
from smc_quant.model.metrics import auc

N = len(FEATURE_SCHEMA)


def decide(y: npt.NDArray[np.int64], challenger: npt.NDArray[np.float64], champion: npt.NDArray[np.float64] | None,
           **kw: float | npt.NDArray[np.int64] | None) -> GateDecision:
    """The gate's ranking tests alone: most tests here score rows with label-blind or noisy scores that are not
    probabilities (their levels are the point); the Brier condition has its own tests below."""
    return gate.decide(y, challenger, champion, brier_margin=None, **kw)  # type: ignore[arg-type]


def test_latest_split_holds_out_the_newest_rows_and_purges_overlapping_labels() -> None:
    """The held-out rows are the latest 20 % by signal time; no training label window reaches the cut."""
    start = np.arange(100, dtype=np.int64) * 10
    end = start + 35  # each label reads 3.5 rows ahead
    split = split_latest(start, end, fraction=0.2, min_rows=5)
    assert split.holdout.tolist() == list(range(80, 100)) and split.cut_ms == 800
    assert (end[split.train] < split.cut_ms).all()
    assert split.train.tolist() == list(range(0, 77))  # rows 77..79 end at or after the cut: purged
    assert split_latest(start, end, fraction=0.01, min_rows=30).holdout.shape[0] == 30
    with pytest.raises(NotEnoughData, match="too few"):  # a ValueError the learner's loop tells apart
        split_latest(start[:10], end[:10], fraction=0.5, min_rows=10)


def test_gate_scores_strategy_setups_when_there_are_enough_with_both_outcomes() -> None:
    """Enough strategy setups with both outcomes → only those; too few or one class → all held-out rows."""
    win = np.array([0, 1] * 100, dtype=np.int64)
    is_setup = np.zeros(200, dtype=np.bool_)
    is_setup[:120] = True
    rows, on = gate_rows(win, is_setup, min_setups=100)
    assert on == "strategy setups" and rows.tolist() == list(range(120))
    rows, on = gate_rows(win, is_setup, min_setups=121)
    assert on == "all held-out rows" and rows.shape[0] == 200
    one_class = np.where(is_setup, 1, win)
    assert gate_rows(one_class, is_setup, min_setups=100)[1] == "all held-out rows"


def test_the_gate_needs_a_significant_edge_not_just_a_margin() -> None:
    """On 100 gate rows (28 wins), label-blind scores clear ``0.5 + margin`` in ~40 % of windows; with the
    significance test (z = 1.645) in ≤ 6 %. The Hanley–McNeil SE matches the spread of those AUCs, and a
    real edge (AUC ≈ 0.7 on the same rows) is still promoted."""
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(28), np.zeros(72)].astype(np.int64)
    draws = [rng.random(100) for _ in range(3000)]
    aucs = np.array([auc(y, p) for p in draws])
    assert aucs.std() == pytest.approx(auc_se(0.5, 28, 72), rel=0.1)
    margin_only = np.mean([decide(y, p, None, margin=0.01, z=0.0).promote for p in draws])
    significant = np.mean([decide(y, p, None, margin=0.01).promote for p in draws])
    assert 0.35 < margin_only < 0.5 and significant <= 0.06
    edge = y * 0.8 + rng.random(100)  # wins score higher on average
    kept = decide(y, rng.random(100), None)
    assert decide(y, edge, None).promote and auc(y, edge) > 0.7
    assert not kept.promote and ("not significantly above chance" in kept.reason or "not above chance" in kept.reason)
    assert auc_se(0.6, 0, 10) == float("inf")


def test_clustered_se_of_independent_rows_matches_the_spread_of_the_auc() -> None:
    """With every row its own group the cluster-robust SE is DeLong's: it matches the spread of label-blind
    AUCs, like Hanley–McNeil's; grouping the rows in arbitrary blocks of independent rows keeps it there."""
    rng = np.random.default_rng(11)
    y = (rng.random(400) < 0.3).astype(np.int64)
    draws = [rng.random(400) for _ in range(1500)]
    spread = float(np.std([auc(y, p) for p in draws]))
    own = np.mean([clustered_auc_se(y, p, np.arange(400))[0] for p in draws[:200]])
    blocks = np.mean([clustered_auc_se(y, p, np.arange(400) // 10)[0] for p in draws[:200]])
    assert own == pytest.approx(spread, rel=0.08) and blocks == pytest.approx(spread, rel=0.1)
    assert own == pytest.approx(auc_se(0.5, int(y.sum()), 400 - int(y.sum())), rel=0.08)
    assert clustered_auc_se(y, draws[0], np.zeros(400, dtype=np.int64)) == (float("inf"), 1)
    assert clustered_auc_se(np.zeros(10, dtype=np.int64), draws[0][:10], np.arange(10))[0] == float("inf")


def test_rows_repeated_within_a_minute_do_not_pass_as_evidence() -> None:
    """The demo's case: 18 symbols repeat each real row. Label-blind scores on 60 distinct rows, each
    repeated 18 times in its minute: the independent-rows test promotes most of them, the blocked test
    about as often as its level says; and a real edge on the same rows is still promoted."""
    rng = np.random.default_rng(5)
    base_y = np.r_[np.ones(24), np.zeros(36)].astype(np.int64)
    y = np.repeat(base_y, 18)
    minute = np.repeat(np.arange(60, dtype=np.int64) * 60_000, 18)
    blocks = time_blocks(minute, minute)  # one-minute labels: one block per minute
    assert np.unique(blocks).shape[0] == 60
    draws = [np.repeat(rng.random(60), 18) + 1e-3 * rng.random(60 * 18) for _ in range(1000)]
    naive = np.mean([decide(y, p, None).promote for p in draws])
    blocked = np.mean([decide(y, p, None, groups=blocks).promote for p in draws])
    assert naive > 0.25 and blocked <= 0.07
    edge = np.repeat(base_y * 1.2 + rng.random(60), 18)
    assert decide(y, edge, None, groups=blocks).promote and auc(y, edge) > 0.75
    fooled = next(p for p in draws if decide(y, p, None).promote)
    refused = decide(y, fooled, None, groups=blocks)
    assert not refused.promote and "on 1080 rows (432 wins) in 60 time blocks" in refused.reason


def test_paired_se_matches_the_spread_of_the_difference_of_two_correlated_models() -> None:
    """Two models that read the same signal with their own noise, on the same 300 rows: the paired SE of
    their AUC difference matches its spread over 2,000 draws, and is under half the SE of comparing two
    independent AUCs (√2 × Hanley–McNeil), which would make a real improvement hard to see."""
    rng = np.random.default_rng(13)
    y = (rng.random(300) < 0.35).astype(np.int64)
    signal = y * 0.35 + rng.random(300)
    pairs = [(signal + 0.4 * rng.random(300), signal + 0.4 * rng.random(300)) for _ in range(2000)]
    diffs, ses = zip(*((d, se) for d, se, _ in (paired_auc_diff_se(y, a, b) for a, b in pairs)), strict=True)
    assert float(np.std(diffs)) == pytest.approx(float(np.mean(ses)), rel=0.08)
    wins = int(y.sum())
    unpaired = np.sqrt(2.0) * auc_se(auc(y, pairs[0][0]), wins, 300 - wins)
    assert float(np.mean(ses)) < 0.6 * unpaired
    same = paired_auc_diff_se(y, pairs[0][0], pairs[0][0])
    assert same[:2] == (0.0, 0.0) and same[2] == 300
    one_class = paired_auc_diff_se(np.ones(300, dtype=np.int64), *pairs[0])
    assert np.isnan(one_class[0]) and one_class[1] == float("inf")


def test_a_challenger_no_better_than_the_champion_does_not_replace_it() -> None:
    """Challenger and champion equally good (the same signal, their own noise): the margin alone swaps the
    champion in 25 % of windows — churn with nothing gained — the paired test in 4.9 %. A challenger
    that is really better (AUC ≈ 0.83 against ≈ 0.77) is still promoted in 99 % of windows. On 60 rows
    repeated 18 times in their minute, the blocked paired test still holds the level."""
    rng = np.random.default_rng(13)
    y = (rng.random(300) < 0.35).astype(np.int64)
    signal = y * 0.35 + rng.random(300)
    pairs = [(signal + 0.4 * rng.random(300), signal + 0.4 * rng.random(300)) for _ in range(2000)]
    margin_only = np.mean([decide(y, a, b, z=0.0).promote for a, b in pairs])
    paired = np.mean([decide(y, a, b).promote for a, b in pairs])
    assert 0.18 < margin_only < 0.35 and paired <= 0.06
    better = signal + y * 0.1  # the same reading with more edge
    challengers = [(better + 0.4 * rng.random(300), signal + 0.4 * rng.random(300)) for _ in range(300)]
    assert np.mean([auc(y, a) - auc(y, b) for a, b in challengers]) > 0.05
    assert np.mean([decide(y, a, b).promote for a, b in challengers]) > 0.95
    promoted = decide(y, *challengers[0])
    assert promoted.promote and "significantly: difference − 1.645·SE = " in promoted.reason
    churn = next((a, b) for a, b in pairs if decide(y, a, b, z=0.0).promote and auc(y, a) - auc(y, b) < 0.02)
    kept = decide(y, *churn)
    assert not kept.promote and "but not significantly" in kept.reason and "(paired) on 300 rows" in kept.reason
    assert decide(y, *churn, paired_z=0.0).promote  # the paired test alone turned off: the margin decides
    assert not decide(y, *churn, z=0.0, paired_z=1.645).promote

    base_y, base = y[:60], signal[:60]
    minute = np.repeat(np.arange(60, dtype=np.int64) * 60_000, 18)
    blocks = time_blocks(minute, minute)

    def repeated() -> npt.NDArray[np.float64]:
        return np.repeat(base + 0.4 * rng.random(60), 18) + 1e-3 * rng.random(1080)

    y18 = np.repeat(base_y, 18)
    draws = [(repeated(), repeated()) for _ in range(1000)]
    naive = np.mean([decide(y18, a, b).promote for a, b in draws])
    blocked = np.mean([decide(y18, a, b, groups=blocks).promote for a, b in draws])
    assert naive > 0.25 and blocked <= 0.06


def test_time_blocks_are_as_long_as_the_longest_label() -> None:
    """Blocks of (longest label window + its last minute) from the epoch; at least a minute; empty → empty."""
    m = 60_000
    start = np.array([0, 119, 120, 121, 241, 300], dtype=np.int64) * m
    end = start + 119 * m  # 2-hour labels: 120 minutes each
    assert time_blocks(start, end).tolist() == [0, 0, 1, 1, 2, 2]
    assert time_blocks(start, start).tolist() == (start // m).tolist()
    empty = time_blocks(start[:0], start[:0])
    assert empty.shape == (0,) and empty.dtype == np.int64


def test_a_long_held_out_window_keeps_its_time_blocks_through_json() -> None:
    """40,000 rows over 33 hours (300+ symbols' setups): the stored rows spread over the whole window, so a later
    re-gate has its 17 two-hour blocks; the latest 4,000 rows (kept until 2026-12-07) held two."""
    m = 60_000
    n = 40_000
    start = (np.arange(n, dtype=np.int64) * (33 * 60 * m)) // n
    end = start + 119 * m
    x = np.zeros((n, 3))
    stored = holdout_from_json(orjson.loads(orjson.dumps(holdout_to_json(x, np.arange(n) % 2, np.ones(n, np.bool_),
                                                                      start, end))))
    assert len(stored.win) == 4000 and stored.start[0] == start[0] and stored.start[-1] == start[-1]
    assert np.all(np.diff(stored.start) > 0)
    assert np.unique(time_blocks(stored.start, stored.end)).shape[0] == 17


def test_one_long_label_does_not_set_the_block_length() -> None:
    """A day of 2-hour labels every 10 minutes and one trade closed 20 hours after its signal (a restart): still
    12 blocks of 2 hours, not 2 of 20 — the gate's SE stays the day's, the decision unchanged."""
    m = 60_000
    start = np.arange(0, 24 * 60, 10, dtype=np.int64) * m
    end = start + 119 * m
    long_end = end.copy()
    long_end[5] = start[5] + 20 * 60 * m
    assert time_blocks(start, long_end).tolist() == time_blocks(start, end).tolist() == (start // (120 * m)).tolist()
    assert np.unique(time_blocks(start, long_end)).shape[0] == 12


def test_stored_window_round_trips_through_json_with_nans() -> None:
    """The window survives JSON (NaN features as null) and keeps ``max_rows`` spread over it; junk is refused."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, N))
    x[3, 4] = np.nan
    win = rng.integers(0, 2, 30).astype(np.int64)
    is_setup = rng.random(30) < 0.5
    start = np.arange(30, dtype=np.int64)
    end = start + 7
    stored = orjson.loads(orjson.dumps(holdout_to_json(x, win, is_setup, start, end, max_rows=20)))
    x2, win2, setup2, start2, end2 = holdout_from_json(stored)
    keep = [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24, 26, 27, 29]  # first to last, evenly
    np.testing.assert_array_equal(x2, x[keep])  # the NaN of row 3 kept as NaN
    assert np.isnan(x2).sum() == 1 and win2.tolist() == win[keep].tolist()
    assert setup2.tolist() == is_setup[keep].tolist() and start2.tolist() == keep
    assert end2.tolist() == [k + 7 for k in keep]
    full = orjson.loads(orjson.dumps(holdout_to_json(x, win, is_setup, start, end)))
    assert np.isnan(holdout_from_json(full).x[3, 4])
    del full["end"]  # a window stored before label ends were kept: its ends read as its starts
    assert holdout_from_json(full).end.tolist() == start.tolist()
    with pytest.raises(ValueError, match="malformed"):
        holdout_from_json({"x": [[1.0]], "win": [1, 0], "is_setup": [True], "start": [0]})
    with pytest.raises(ValueError, match="malformed"):
        holdout_from_json({"win": []})


def _row(net: float, schema: str = FEATURE_SCHEMA.version, width: int = N, side: str = "LONG") -> ExperienceRow:
    return ExperienceRow("BTCUSDT", side, tuple(float(i) for i in range(width)), schema, net, 1_000, 61_000)  # type: ignore[arg-type]


def test_experience_rows_become_weighted_setup_rows() -> None:
    """win = net % > 0, ret = net %, start/end = signal/close time, short side → −1; bad rows refused."""
    rows = [_row(0.3), _row(-0.2, side="SHORT"), _row(0.0), _row(1.0, schema="smc-features/0"), _row(1.0, width=N - 1),
            _row(float("inf"))]
    ds, refused = experience_dataset(rows, FEATURE_SCHEMA.version, weight=2.5)
    assert refused == 3 and len(ds) == 3
    assert ds.win.tolist() == [1, 0, 0] and ds.ret_pct.tolist() == [0.3, -0.2, 0.0] and ds.side.tolist() == [1, -1, 1]
    assert ds.start.tolist() == [1_000] * 3 and ds.end.tolist() == [61_000] * 3 and ds.weight.tolist() == [2.5] * 3
    assert ds.x.shape == (3, N) and ds.symbols == ("BTCUSDT",) and ds.is_setup.all()
    empty, refused = experience_dataset([], FEATURE_SCHEMA.version)
    assert (len(empty), refused, empty.x.shape) == (0, 0, (0, N))
    merged = Dataset.concat([ds, ds.take(np.array([0], dtype=np.int64))])
    assert len(merged) == 4 and (np.diff(merged.start) >= 0).all()


def test_learner_config_refuses_nonsense() -> None:
    """Zero trade counts, non-positive intervals, out-of-range fractions or weights are refused."""
    for bad in ({"retrain_every": 0}, {"retrain_interval_s": 0.0}, {"holdout_fraction": 1.0}, {"min_holdout": 1},
                {"margin": 0.5}, {"experience_weight": float("nan")}, {"z": -1.0}, {"paired_z": 10.0}):
        with pytest.raises(ValueError, match=r"must|need"):
            LearnerConfig(**bad)


def test_learner_config_takes_both_significance_levels_from_the_settings() -> None:
    """``SMC_LEARNER__PROMOTE_Z`` and ``SMC_LEARNER__PROMOTE_PAIRED_Z`` reach the loop separately."""
    from smc_quant.settings import LearnerSettings

    config = LearnerConfig.of(LearnerSettings(promote_z=2.0, promote_paired_z=0.0))
    assert (config.z, config.paired_z) == (2.0, 0.0)


def test_a_better_ranking_with_probabilities_pushed_past_the_threshold_is_not_promoted() -> None:
    """AUC only ranks; the strategy trades where P ≥ 0.55. A challenger that ranks better than the champion (it
    clears every AUC test) but whose probabilities sit 0.3 higher would trade most setups: worse calibrated
    (Brier, beyond the 0.005 margin), it is kept out. The same ranking, calibrated or shifted by only 0.03, is
    promoted; with no champion, the reference is the constant forecast at the training rows' win rate."""
    rng = np.random.default_rng(21)
    y = (rng.random(2000) < 0.3).astype(np.int64)
    logit = lambda edge: 1 / (1 + np.exp(-(-0.85 + edge * (y - 0.3) + rng.normal(0, 1, 2000))))  # noqa: E731
    champion, calibrated = logit(1.0), logit(2.0)
    shifted = np.clip(calibrated + 0.3, 0, 1)
    ranked = gate.decide(y, shifted, champion, brier_margin=None)
    assert ranked.promote and auc(y, shifted) > auc(y, champion) + 0.05
    assert float(np.mean(shifted >= 0.55)) > 3 * float(np.mean(champion >= 0.55))
    refused = gate.decide(y, shifted, champion)
    assert not refused.promote and "worse calibrated" in refused.reason
    assert refused.challenger_brier is not None and refused.reference_brier is not None
    assert refused.challenger_brier > refused.reference_brier
    promoted = gate.decide(y, calibrated, champion)
    assert promoted.promote and "Brier" in promoted.reason
    first = gate.decide(y, calibrated, None, base_rate=0.3)
    assert first.promote and "of the training base rate 0.300" in first.reason
    assert not gate.decide(y, shifted, None, base_rate=0.3).promote
    assert gate.decide(y, shifted, None).promote  # no training rate given: no reference without a champion
    slightly = np.clip(calibrated + 0.03, 0, 1)  # within the margin: a shift of 0.03 adds ~0.001
    assert gate.decide(y, slightly, champion).promote
