"""The learning side: datasets of labelled setups, walk-forward splits, LightGBM training and metrics.

Labels, splits, metrics, training, the gate and the predictor do no I/O (the registry is
:mod:`smc_quant.store.models`); ``cli_tasks`` and ``report`` are the edge that reads candle files,
talks to the registry and writes reports for the CLI. Training is a plain synchronous function;
callers on the event loop run it in a thread or process (``asyncio.to_thread``).
"""
