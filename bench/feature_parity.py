"""How much a feature row depends on the history behind it: why the learner labels only rows with the live
warm-up's worth of candles before them (``learner.min_history_candles``, ``build_dataset(min_history=…)``).

SMC state is path-dependent: the 1h trend needs 1h swings and a break of them, a sweep needs a pool of
equal swings, an unmitigated zone can be days old. For cuts into each real 1m series (``$SMC_DATA_DIR``,
default ``../shared/data``), the engine is started fresh at the cut and its rows of one day after H candles
are compared with the rows of the run from the series' first candle (≥ 10 days of history there). Printed
per H: the share of rows whose features differ at all, differ in which ones are NaN, and per feature.
The live engine warms up on 3 days (4,320 candles), so a training row computed with less history than
that carries values live rows do not have. Takes about a minute.

    python bench/feature_parity.py [--histories 360 1440 2880 4320 7200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smc_quant.datasets import data_dir
from smc_quant.features import FEATURE_SCHEMA, FeatureEngineer
from smc_quant.model.cli_tasks import load_series

DAY = 1440


def _differ(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values differ, NaN-ness differs) per cell; equal NaNs and values within 1e-9 are the same."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= 1e-9 * np.maximum(1.0, np.abs(a))
    return ~((nan_a & nan_b) | close), nan_a != nan_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, nargs="+", default=[360, 1440, 2880, 4320, 7200])
    parser.add_argument("--first-cut-days", type=int, default=10, help="history of the long run at the first cut")
    parser.add_argument("--cut-every-days", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    series = load_series(data_dir(), None, None, lambda msg: print(msg, flush=True))
    fe, names = FeatureEngineer(), FEATURE_SCHEMA.names
    width = len(names)
    rows = {h: 0 for h in args.histories}
    cells = {h: np.zeros(width) for h in args.histories}
    nans = {h: np.zeros(width) for h in args.histories}
    any_row = {h: 0 for h in args.histories}
    any_nan_row = {h: 0 for h in args.histories}
    for k, s in enumerate(series, 1):
        full, _ = fe.batch(s)
        longest = max(args.histories) + DAY
        cuts = range(args.first_cut_days * DAY, len(s) - longest, args.cut_every_days * DAY)
        for cut in cuts:
            short, _ = fe.batch(s.slice(cut, len(s)))
            for h in args.histories:
                diff, nan_diff = _differ(full[cut + h:cut + h + DAY], short[h:h + DAY])
                rows[h] += diff.shape[0]
                cells[h] += diff.sum(axis=0)
                nans[h] += nan_diff.sum(axis=0)
                any_row[h] += int(diff.any(axis=1).sum())
                any_nan_row[h] += int(nan_diff.any(axis=1).sum())
        print(f"[{k}/{len(series)}] {s.symbol}: {len(cuts)} cuts ({time.perf_counter() - started:.0f} s)", flush=True)
    print()
    print(f"{'history H':>10} {'rows':>7} {'any feature differs':>20} {'NaN-ness differs':>17}  per feature "
          "(% of rows differing / of which NaN-ness)")
    for h in args.histories:
        n = max(rows[h], 1)
        per = "  ".join(f"{name} {100 * cells[h][i] / n:.1f}/{100 * nans[h][i] / n:.1f}"
                        for i, name in enumerate(names) if cells[h][i])
        print(f"{h:>10,} {rows[h]:>7,} {100 * any_row[h] / n:>19.1f}% {100 * any_nan_row[h] / n:>16.1f}%  "
              f"{per or '-'}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
