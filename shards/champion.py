"""Following the registry's champion in a running process (the service, a shard worker).

The learner promotes, and an operator can ``smc-quant promote`` or ``rollback`` from anywhere: each process that
scores checks the registry every ``CHECK_S`` and loads a champion that is not the one it scores with. The check
reads the champion's version and feature schema only (``ModelRegistry.champion_version``): the row's metrics hold
a held-out window, too much to read every minute in every process, and the model itself is read only when the
champion changed. A model the engine refuses (another feature schema: known before its artifact is read) or cannot
read is logged and the process keeps what it has.
"""

from __future__ import annotations

import asyncio
from typing import Any

from smc_quant.model.predictor import MLPredictor
from smc_quant.model.trainer import check_schema
from smc_quant.store.models import ModelRegistry

CHECK_S = 60.0


async def load_champion(registry: ModelRegistry, predictor: MLPredictor, log: Any) -> bool:
    """Load the registry's champion into ``predictor`` unless it is already the one loaded; ``False`` (logged
    ``model_refused``) when it could not be read or is refused."""
    try:
        champion = await registry.champion_version()
        if champion is not None and champion[0] != predictor.version:
            version, schema = champion
            check_schema(schema)  # refused before its artifact is downloaded, each minute it stays the champion
            predictor.load(await registry.load(version), version=version)
            log.warning("model_loaded", version=version, compiled=predictor.compiled)
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
