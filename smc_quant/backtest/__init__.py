"""Backtests over history through the live decision objects (see docs/backtest.md)."""
