"""Detector parameters: a frozen dataclass for callers and the float64 vector the kernels read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smc_quant.smc.bars import RING

P_SW_LEFT = 0
P_SW_RIGHT = 1
P_CLOSE_BREAK = 2
P_FVG_COLOUR = 3
P_FVG_MIN_ATR = 4
P_ATR_PERIOD = 5
P_LIQ_TOL_ATR = 6
P_N_TF = 7
P_BASE_MS = 8
P_SW_STRICT = 9
P_DO_STRUCTURE = 10
P_DO_ORDER_BLOCKS = 11
P_DO_FVG = 12
P_DO_LIQUIDITY = 13
P_SIZE = 14

TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "15m", "1h", "1d")


@dataclass(frozen=True, slots=True)
class SMCParams:
    """Parameters shared by every timeframe's detectors.

    ``swing_left``/``swing_right``: pivot lengths (strict on the left, non-strict on the right);
    a swing is known ``swing_right`` bars after its pivot. ``close_break``: BOS/CHoCH on the close
    (True) or on the wick. ``fvg_colour``: the middle candle must have the gap's colour (as the
    reference library). ``fvg_min_atr``: minimum gap size in ATRs (0 = any gap). ``atr_period``:
    Wilder ATR length. ``liq_tol_atr``: equal-high/low tolerance in ATRs. ``n_timeframes``: how
    many of ``TIMEFRAMES`` to run (1 = the base series only). ``base_ms``: the input interval.
    ``swing_strict_left``: a pivot must be strictly above the left bars (one pivot per run of equal
    highs); False flags every equal high, as the reference library's raw candidates do.
    ``structure``/``order_blocks``/``fvgs``/``liquidity``: switch detectors off (swings and ATR always
    run; order blocks need structure). A switched-off detector emits nothing and its features are NaN.
    """

    swing_left: int = 5
    swing_right: int = 5
    close_break: bool = True
    fvg_colour: bool = True
    fvg_min_atr: float = 0.0
    atr_period: int = 14
    liq_tol_atr: float = 0.1
    n_timeframes: int = 4
    base_ms: int = 60_000
    swing_strict_left: bool = True
    structure: bool = True
    order_blocks: bool = True
    fvgs: bool = True
    liquidity: bool = True

    def __post_init__(self) -> None:
        if self.swing_left < 1 or self.swing_right < 1:
            raise ValueError("swing lengths must be >= 1")
        if self.swing_left + self.swing_right + 1 > RING - 16:
            raise ValueError(f"swing_left + swing_right must be <= {RING - 17}")
        if self.atr_period < 1 or self.fvg_min_atr < 0 or self.liq_tol_atr < 0:
            raise ValueError("atr_period >= 1, fvg_min_atr >= 0 and liq_tol_atr >= 0 required")
        if not 1 <= self.n_timeframes <= len(TIMEFRAMES):
            raise ValueError(f"n_timeframes must be in 1..{len(TIMEFRAMES)}")

    def to_array(self) -> npt.NDArray[np.float64]:
        """The vector the kernels read, indexed by the ``P_*`` constants."""
        out = np.zeros(P_SIZE, dtype=np.float64)
        out[P_SW_LEFT] = self.swing_left
        out[P_SW_RIGHT] = self.swing_right
        out[P_CLOSE_BREAK] = float(self.close_break)
        out[P_FVG_COLOUR] = float(self.fvg_colour)
        out[P_FVG_MIN_ATR] = self.fvg_min_atr
        out[P_ATR_PERIOD] = self.atr_period
        out[P_LIQ_TOL_ATR] = self.liq_tol_atr
        out[P_N_TF] = self.n_timeframes
        out[P_BASE_MS] = self.base_ms
        out[P_SW_STRICT] = float(self.swing_strict_left)
        out[P_DO_STRUCTURE] = float(self.structure)
        out[P_DO_ORDER_BLOCKS] = float(self.structure and self.order_blocks)
        out[P_DO_FVG] = float(self.fvgs)
        out[P_DO_LIQUIDITY] = float(self.liquidity)
        return out
