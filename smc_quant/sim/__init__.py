"""The simulated Binance USDT-M futures account shared by the emulator, the paper broker and the backtest.

Pure (no clock, no I/O): see :class:`smc_quant.sim.account.SimAccount` and ``docs/sim.md``.
"""

from smc_quant.sim.account import SimAccount, SimConfig
from smc_quant.sim.rejections import SimRejected

__all__ = ["SimAccount", "SimConfig", "SimRejected"]
