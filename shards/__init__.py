"""The running service: CLI, cluster manager, shard feeds and their supervision.

Imports :mod:`smc_quant`; the library never imports this package.
"""
