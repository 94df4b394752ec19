"""Causal Smart-Money-Concept detectors: pure code, no I/O.

One small module per detector (``swings``, ``structure``, ``fvg``, ``order_blocks``, ``liquidity``,
``atr``), the shared per-bar state machine (``kernel``), multi-timeframe aggregation
(``timeframes``), the entry points (``engine``) and stand-alone per-detector batch kernels that
take swings as input (``standalone``). Every detection is an event carrying the bar it
formed on and the bar it became known at; see ``docs/smc.md``.
"""

from smc_quant.smc.engine import EngineBank, SymbolEngine, detect
from smc_quant.smc.params import TIMEFRAMES, SMCParams

__all__ = ["TIMEFRAMES", "EngineBank", "SMCParams", "SymbolEngine", "detect"]
