"""Backtest throughput: candles per second through the full pipeline over all 18 symbols × ~45 days of real 1m data.

Pipeline timed end to end (after the numba kernels are compiled): read the CSV files → ``FeatureEngineer.batch``
per symbol → ``find_setups`` → per minute: the model scores the setup rows (``MLPredictor.predict_batch``), the
same ``ICTScalper.on_batch`` emits signals, the real Executor → RiskManager → SmartOrderManager → PaperBroker
(SimAccount) trade them, bars of open positions are fed through the OHLC path. The model is a real LightGBM
model trained (untimed) on the first 10 days of BTCUSDT and ETHUSDT. The unfiltered baseline (every setup
passes) is timed too: it sends far more orders.

    python bench/backtest.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from smc_quant.backtest.data import load_folder
from smc_quant.backtest.engine import BacktestConfig, prepare, run_backtest
from smc_quant.backtest.market import market_rules
from smc_quant.datasets import data_dir
from smc_quant.features import warm_up
from smc_quant.labels import BarrierSpec
from smc_quant.model.dataset import build_dataset
from smc_quant.model.predictor import MLPredictor
from smc_quant.model.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(data_dir()))
    args = parser.parse_args()
    root = Path(args.data)
    warm_up()
    klines = load_folder(root, ["BTCUSDT", "ETHUSDT"])
    ds = build_dataset([s.slice(0, 10 * 1440) for s in klines.values()], BarrierSpec(), 5, "trend_1m", None, "broad")
    predictor = MLPredictor(train(ds.x, ds.win), version=1)
    for mode in ("model", "unfiltered"):
        started = time.perf_counter()
        series = load_folder(root)
        loaded = time.perf_counter()
        filters, brackets, _ = market_rules(series, root)
        prepared = prepare(series)
        cfg = BacktestConfig(mode=mode)
        result = asyncio.run(run_backtest(prepared, filters, brackets, cfg, scorer=predictor.predict_batch,
                                          model_version=lambda: 1))
        total = time.perf_counter() - started
        n = prepared.candles
        print(f"{mode:10} {len(series)} symbols, {n} candles: {n / total:,.0f} candles/s end to end "
              f"({total:.2f}s: read {loaded - started:.2f}s, features+setups {prepared.seconds:.2f}s, "
              f"minute loop {result.seconds:.2f}s = {n / result.seconds:,.0f} candles/s); "
              f"{len(result.signals)} signals, {len(result.trades)} trades, {len(result.orders)} orders")


if __name__ == "__main__":
    main()
