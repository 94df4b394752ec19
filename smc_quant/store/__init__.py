"""Persistence adapters: the asyncpg pool, the migrations runner, repositories and Redis key names.

SQL lives in the repository module of its table; Redis key names live in :mod:`smc_quant.store.keys`.
Nothing outside this package writes SQL.
"""
