"""``python -m smc_quant.exchange.emulator``: the same as ``smc-quant emulator``."""

import sys

from smc_quant.exchange.emulator.cli import run_emulator

sys.exit(run_emulator(sys.argv[1:]))
