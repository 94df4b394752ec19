"""Reconnect delays as an injectable generator: exponential with full jitter, capped."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

BackoffFactory = Callable[[], Iterator[float]]


def exponential_backoff(
    initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Yield ``initial``, then delays growing by ``factor`` up to ``maximum``, each jittered to [d/2, d]."""
    rand = rng or random.Random()
    delay = initial
    while True:
        yield delay / 2 + rand.random() * delay / 2
        delay = min(maximum, delay * factor)
