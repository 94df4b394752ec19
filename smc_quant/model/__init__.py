"""The learning side: datasets of labelled setups, walk-forward splits, LightGBM training and metrics.

Pure except for LightGBM itself: nothing here does I/O (the registry is
:mod:`smc_quant.store.models`). Training is a plain synchronous function; callers on the event loop
run it in a thread or process (``asyncio.to_thread``).
"""
