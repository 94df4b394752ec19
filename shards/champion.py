"""Following the registry's champion in a running process (the service, a shard worker).

The learner promotes, and an operator can ``smc-quant promote`` or ``rollback`` from anywhere: each process that
scores checks the registry every ``CHECK_S`` and loads a champion that is not the one it scores with. A model
the engine refuses (another feature schema) or cannot read is logged and the process keeps what it has.
"""

from __future__ import annotations

import asyncio
from typing import Any

from smc_quant.model.predictor import MLPredictor
from smc_quant.store.models import ModelRegistry

CHECK_S = 60.0


async def load_champion(registry: ModelRegistry, predictor: MLPredictor, log: Any) -> bool:
    """Load the registry's champion into ``predictor`` unless it is already the one loaded; ``False`` (logged
    ``model_refused``) when it could not be read or is refused."""
    try:
        record = await registry.champion()
        if record is not None and record.version != predictor.version:
            predictor.load(await registry.load(record.version), version=record.version)
            log.warning("model_loaded", version=record.version, compiled=predictor.compiled)
    except Exception as exc:  # a refused or unreadable model: keep the data plane, and what is loaded
        log.error("model_refused", error=f"{type(exc).__name__}: {exc}", note="the model loaded stays")
        return False
    return True


async def follow_champion(registry: ModelRegistry, predictor: MLPredictor, log: Any,
                          every_s: float = CHECK_S) -> None:
    """Forever: :func:`load_champion` every ``every_s``."""
    while True:
        await asyncio.sleep(every_s)
        await load_champion(registry, predictor, log)


__all__ = ["CHECK_S", "follow_champion", "load_champion"]
