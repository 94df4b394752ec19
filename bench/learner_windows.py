"""How much history the learner's model needs before it ranks the strategy's setups.

For cuts every 3 days from day 7 to day 43 of the real 1m candles (``$SMC_DATA_DIR``, default
``../shared/data``): train the ``broad`` LightGBM model on every setup whose label ends before the cut,
score the strategy's setups of the next 3 days, print their AUC, count and the highest P(win) (the
signal gate is 0.55), and the AUC pooled over all windows. Takes about a minute on one core.

    python bench/learner_windows.py [--first-day 7] [--step 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smc_quant.datasets import data_dir
from smc_quant.labels import BarrierSpec
from smc_quant.model.cli_tasks import load_series
from smc_quant.model.dataset import build_dataset
from smc_quant.model.metrics import auc
from smc_quant.model.trainer import TrainConfig, train

DAY_MS = 86_400_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-day", type=int, default=7)
    parser.add_argument("--step", type=int, default=3, help="days between cuts, and the length of each test window")
    args = parser.parse_args()
    started = time.perf_counter()
    series = load_series(data_dir(), None, None, lambda msg: print(msg, flush=True))
    print("building features and labels ...", flush=True)
    ds = build_dataset(series, BarrierSpec(), 5, "trend_1m", None, "broad")
    t0, t1 = int(ds.start.min()), int(ds.start.max())
    pooled_p, pooled_y = [], []
    print(f"{'day':>4} {'train rows':>10} {'setups':>6} {'wins':>5} {'AUC':>6} {'max P':>6}")
    for day in range(args.first_day, (t1 - t0) // DAY_MS, args.step):
        cut = t0 + day * DAY_MS
        fit = np.flatnonzero(ds.end < cut)
        test = np.flatnonzero((ds.start >= cut) & (ds.start < cut + args.step * DAY_MS) & ds.is_setup)
        y = ds.win[test]
        if len(test) < 10 or y.min() == y.max():
            continue
        p = train(ds.x[fit], ds.win[fit], TrainConfig()).predict(ds.x[test])
        pooled_p.append(p)
        pooled_y.append(y)
        row = f"{day:>4} {len(fit):>10,} {len(test):>6} {int(y.sum()):>5} {auc(y, p):>6.3f} {p.max():>6.3f}"
        print(row, flush=True)
    p, y = np.concatenate(pooled_p), np.concatenate(pooled_y)
    print(f"pooled AUC on {len(y):,} setups: {auc(y, p):.3f} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
