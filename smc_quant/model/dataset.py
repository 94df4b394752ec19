"""Training rows from real candles: features at signal time plus triple-barrier labels, in time order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smc_quant.domain.series import KlineSeries
from smc_quant.features import FeatureEngineer
from smc_quant.labels import BarrierSpec, label_setups

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Dataset:
    """Labelled setups of many symbols, sorted by signal time.

    ``start`` is the open time (ms) of the signal candle, ``end`` the open time of the last candle the
    label reads (for purging); ``symbol`` indexes ``symbols``."""

    x: F64
    win: I64
    ret_pct: F64
    side: I64
    start: I64
    end: I64
    symbol: I64
    symbols: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.win.shape[0])

    def take(self, rows: I64) -> Dataset:
        """The listed rows as a new dataset (order as given)."""
        return Dataset(self.x[rows], self.win[rows], self.ret_pct[rows], self.side[rows], self.start[rows],
                       self.end[rows], self.symbol[rows], self.symbols)


def build_dataset(series: Sequence[KlineSeries], spec: BarrierSpec | None = None, every: int = 1,
                  side_feature: str = "trend_1m", fe: FeatureEngineer | None = None) -> Dataset:
    """Features (``FeatureEngineer.batch``) and labels (:func:`label_setups`) of every series, merged."""
    fe = fe or FeatureEngineer()
    parts = []
    for code, s in enumerate(series):
        x, _ = fe.batch(s)
        lab = label_setups(s, x, spec, every, side_feature)
        sym = np.full(len(lab), code, dtype=np.int64)
        parts.append((x[lab.index], lab.win, lab.ret_pct, lab.side, s.open_time[lab.index],
                      s.open_time[lab.end], sym))
    cols = [np.concatenate([p[k] for p in parts]) for k in range(7)]
    order = np.lexsort((cols[6], cols[4]))
    x, win, ret, side, start, end, sym = (c[order] for c in cols)
    return Dataset(x, win, ret, side, start, end, sym, tuple(s.symbol for s in series))


__all__ = ["Dataset", "build_dataset"]
