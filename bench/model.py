"""Benchmark of the P(win) model on real features; prints figures, never pass/fail.

    python bench/model.py              # 18 symbols of ../shared/data (SMC_DATA_DIR)
    python bench/model.py --symbols 6  # fewer symbols (faster dataset build)

Rows are the labelled setups (every bar) of the real 2023 1m series; the 1M-row training set repeats
them (in time order per copy) where the data has fewer rows. Predict latency is measured per call on
real feature rows of the final model, for the exact QuickScorer kernels of :class:`MLPredictor` and for LightGBM's
own ``Booster.predict(num_threads=1)``. Targets (issue 4): 300-row p99 ≤ 1 ms, 1M-row training ≤ 60 s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import numpy as np

from smc_quant.datasets import kline_files, read_klines
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import build_dataset
from smc_quant.model.predictor import MLPredictor
from smc_quant.model.trainer import TrainConfig, train


def say(msg: str) -> None:
    print(msg, flush=True)


def latency(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """p50 and p99 in ms of ``calls`` timed calls (after 50 warm-up calls)."""
    for _ in range(50):
        fn()
    times = np.empty(calls)
    for k in range(calls):
        t = time.perf_counter()
        fn()
        times[k] = time.perf_counter() - t
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=18, help="how many symbols of the 2023 set to use")
    parser.add_argument("--calls", type=int, default=5000, help="timed predict calls per case")
    args = parser.parse_args()
    files = kline_files()[: args.symbols]
    series = []
    for k, path in enumerate(files, 1):
        series.append(read_klines(path))
        say(f"  read {k}/{len(files)} {series[-1].symbol} ({len(series[-1]):,} candles)")
    t = time.perf_counter()
    ds = build_dataset(series, BarrierSpec(), every=1)
    say(f"dataset: {len(ds):,} labelled setups from {sum(len(s) for s in series):,} candles "
        f"in {time.perf_counter() - t:.1f} s")
    config = TrainConfig()
    for n in (100_000, 1_000_000):
        reps = -(-n // len(ds))
        x = np.concatenate([ds.x] * reps)[:n]
        y = np.concatenate([ds.win] * reps)[:n]
        say(f"training on {n:,} rows ({config.num_rounds} rounds, one thread) ...")
        t = time.perf_counter()
        model = train(x, y, config)
        say(f"  train {n:>9,} rows: {time.perf_counter() - t:6.1f} s")
    predictor = MLPredictor(model)
    rng = np.random.default_rng(5)
    live = ds.x[rng.choice(len(ds), size=(args.calls, 300))]  # real rows, a different minute per call
    booster = model.booster
    exact = np.abs(predictor.predict_batch(ds.x[:100_000]) - model.predict(ds.x[:100_000])).max()
    say(f"kernel vs LightGBM on 100,000 real rows: max |diff| = {exact:.3g} (kernel: {predictor.compiled})")
    for rows in (1, 300):
        it = iter(range(10**9))

        def kern(rows: int = rows, it: Iterator[int] = it) -> object:
            return predictor.predict_batch(live[next(it) % args.calls, :rows])

        def lgbm(rows: int = rows, it: Iterator[int] = it) -> object:
            return booster.predict(np.ascontiguousarray(live[next(it) % args.calls, :rows]), num_threads=1)

        for name, fn in (("MLPredictor (QuickScorer)", kern), ("LightGBM predict, 1 thread", lgbm)):
            p50, p99 = latency(fn, args.calls)
            say(f"  predict {rows:>3} rows  {name:<28} p50 {p50:.3f} ms  p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
