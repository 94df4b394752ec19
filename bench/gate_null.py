"""How often the promotion gate's chance test passes a model with no edge, and one with an edge.

For cuts every 12 hours from day 7 of the real 1m candles (``$SMC_DATA_DIR``, default ``../shared/data``):
train the ``broad`` LightGBM model on the 7 days of setups whose labels end before the cut, once on the
real labels and once on shuffled labels (the same features, no relation to the outcome), then score the
next 36 hours — the length of the learner's held-out window on a week of history. Each window is gated
as the learner gates it (the strategy's setups when there are 100 with both outcomes, else all held-out
rows; no champion, margin 0.01, z 1.645), with the SE of independent rows (Hanley–McNeil) and with the
cluster-robust SE over time blocks as long as a label (what the gate uses). Also printed: the strategy's
setups alone (windows with at least 20), and every row repeated 18 times in its minute — the demo, whose
323 symbols replay 18 real series. The windows overlap (36 h every 12 h), so the rates are rough.

Then the champion comparison, on the learner's gate rows with time blocks: how often a challenger
replaces a champion (a) when each is trained on one half of the week's hours (even / odd UTC hours) — as
good as each other, so a swap is churn —, (b) when the real-label challenger meets a champion trained on
the 7 days before the previous window (36 h older, what a live champion is), and (c) one trained on
shuffled labels (useless), under the margin alone (AUC > champion + 0.01, the chance test passed) and
under the paired test the gate applies. Takes about four minutes on one core.

    python bench/gate_null.py [--first-day 7] [--step-hours 12] [--window-hours 36]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smc_quant.datasets import data_dir
from smc_quant.labels import BarrierSpec
from smc_quant.model.cli_tasks import load_series
from smc_quant.model.dataset import build_dataset
from smc_quant.model.gate import decide, gate_rows, time_blocks
from smc_quant.model.metrics import auc
from smc_quant.model.trainer import TrainConfig, shuffled, train

HOUR_MS = 3_600_000
COPIES = 18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-day", type=int, default=7)
    parser.add_argument("--step-hours", type=int, default=12)
    parser.add_argument("--window-hours", type=int, default=36)
    args = parser.parse_args()
    started = time.perf_counter()
    series = load_series(data_dir(), None, None, lambda msg: print(msg, flush=True))
    print("building features and labels ...", flush=True)
    ds = build_dataset(series, BarrierSpec(), 5, "trend_1m", None, "broad")
    first, window = int(ds.start.min()) + args.first_day * 24 * HOUR_MS, args.window_hours * HOUR_MS
    cuts = range(first, int(ds.start.max()) - window, args.step_hours * HOUR_MS)
    # passes[(model, rows, test)] = list of bools, one per window
    passes: dict[tuple[str, str, str], list[bool]] = {}
    blocks_seen: list[int] = []
    # swaps[(champion, rule)] = list of bools, one per window: did the real-label challenger replace it
    swaps: dict[tuple[str, str], list[bool]] = {}
    print(f"{len(cuts)} cuts, {len(ds):,} labelled rows ({time.perf_counter() - started:.0f} s)", flush=True)
    for i, cut in enumerate(cuts):
        fit = np.flatnonzero((ds.end < cut) & (ds.start >= cut - 7 * 24 * HOUR_MS))
        hold = np.flatnonzero((ds.start >= cut) & (ds.start < cut + window))
        scored: dict[str, np.ndarray] = {}
        for kind in ("real labels", "shuffled labels"):
            y_fit = ds.win[fit] if kind == "real labels" else shuffled(ds.win[fit], seed=i)
            model = train(ds.x[fit], y_fit, TrainConfig())
            p_all = scored[kind] = model.predict(ds.x[hold])
            chosen, _ = gate_rows(ds.win[hold], ds.is_setup[hold])
            setups = np.flatnonzero(ds.is_setup[hold])
            cases = {"the learner's gate rows": chosen}
            if setups.shape[0] >= 20:
                cases["strategy setups only"] = setups
            for name, rows in cases.items():
                y, p, start, end = ds.win[hold][rows], p_all[rows], ds.start[hold][rows], ds.end[hold][rows]
                blocks = time_blocks(start, end)
                blocks_seen.append(int(np.unique(blocks).shape[0]))
                passes.setdefault((kind, name, "independent"), []).append(decide(y, p, None).promote)
                passes.setdefault((kind, name, "blocked"), []).append(decide(y, p, None, groups=blocks).promote)
                if name == "the learner's gate rows":  # the demo: every row 18 times in its minute
                    y18, p18 = np.repeat(y, COPIES), np.repeat(p, COPIES)
                    b18 = np.repeat(blocks, COPIES)
                    demo = "gate rows × 18 (demo)"
                    passes.setdefault((kind, demo, "independent"), []).append(decide(y18, p18, None).promote)
                    passes.setdefault((kind, demo, "blocked"), []).append(decide(y18, p18, None, groups=b18).promote)
        older = np.flatnonzero((ds.end < cut - window) & (ds.start >= cut - window - 7 * 24 * HOUR_MS))
        odd = (ds.start[fit] // HOUR_MS) % 2 == 1
        halves = [train(ds.x[rows], ds.win[rows], TrainConfig()) for rows in (fit[~odd], fit[odd])]
        chosen, _ = gate_rows(ds.win[hold], ds.is_setup[hold])
        x, y = ds.x[hold][chosen], ds.win[hold][chosen]
        blocks = time_blocks(ds.start[hold][chosen], ds.end[hold][chosen])
        real = scored["real labels"][chosen]
        duels = {"other half of the week": (halves[0].predict(x), halves[1].predict(x)),
                 "36 h older": (real, train(ds.x[older], ds.win[older], TrainConfig()).predict(x)),
                 "shuffled labels": (real, scored["shuffled labels"][chosen])}
        for name, (challenger, champion) in duels.items():
            alone = decide(y, challenger, None, groups=blocks).promote
            swaps.setdefault((name, "margin"), []).append(alone and auc(y, challenger) > auc(y, champion) + 0.01)
            swaps.setdefault((name, "paired"), []).append(decide(y, challenger, champion, groups=blocks).promote)
        if (i + 1) % 10 == 0 or i + 1 == len(cuts):
            print(f"  {i + 1}/{len(cuts)} cuts ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\ntime blocks per window: median {np.median(blocks_seen):.0f} (min {min(blocks_seen)})")
    print(f"\n{'model':<16} {'rows gated':<26} {'windows':>7} {'independent SE':>15} {'blocked SE':>11}")
    for kind in ("shuffled labels", "real labels"):
        for name in ("the learner's gate rows", "strategy setups only", "gate rows × 18 (demo)"):
            ind, blk = passes.get((kind, name, "independent"), []), passes.get((kind, name, "blocked"), [])
            if ind:
                print(f"{kind:<16} {name:<26} {len(ind):>7} {np.mean(ind):>14.0%} {np.mean(blk):>11.0%}")
    print("\n(share of windows where the chance test passed)")
    print(f"\n{'champion':<24} {'windows':>7} {'margin alone':>13} {'paired test':>12}")
    for name in ("other half of the week", "36 h older", "shuffled labels"):
        margin, paired = swaps[(name, "margin")], swaps[(name, "paired")]
        print(f"{name:<24} {len(margin):>7} {np.mean(margin):>12.0%} {np.mean(paired):>12.0%}")
    print(f"\n(share of windows where the challenger replaced the champion; "
          f"{time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
