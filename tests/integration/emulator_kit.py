"""A factory of emulators on 127.0.0.1:0 for the emulator's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from smc_quant.exchange.emulator import Emulator, EmulatorConfig

Factory = Callable[..., AbstractAsyncContextManager[Emulator]]


def emulator_factory(data_dir: Path, **defaults: Any) -> Factory:
    """Started emulators at full speed (``speed=0``) with ``defaults``; each call may override them."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Emulator]:
        options: dict[str, Any] = {"speed": 0, **defaults, **overrides}
        async with Emulator(EmulatorConfig(data_dir=data_dir, **options)) as em:
            yield em

    return make
