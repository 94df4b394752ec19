"""A Binance USDT-M exchange emulator replaying real candles over the real wire protocol.

``Emulator(EmulatorConfig(data_dir=...))`` serves REST (``/fapi/v1/...``) and WebSocket streams
(``/market``, ``/public``, legacy ``/stream`` and ``/ws``) on one loopback port; see ``docs/emulator.md``.
"""

from smc_quant.exchange.emulator.config import EmulatorConfig
from smc_quant.exchange.emulator.faults import Faults
from smc_quant.exchange.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "Faults"]
