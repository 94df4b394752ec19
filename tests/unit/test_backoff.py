"""Reconnect backoff: exponential, jittered within [d/2, d], capped, deterministic under a seed."""

from __future__ import annotations

import itertools
import random

from shards.backoff import exponential_backoff


def test_backoff_grows_jittered_and_capped() -> None:
    """Delays double up to the cap and each lies in the upper half of its nominal value."""
    delays = list(itertools.islice(exponential_backoff(0.5, 8.0, rng=random.Random(7)), 10))
    nominal = [0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8]
    assert all(n / 2 <= d <= n for d, n in zip(delays, nominal, strict=True))
    assert len(set(delays)) == len(delays)
    again = list(itertools.islice(exponential_backoff(0.5, 8.0, rng=random.Random(7)), 10))
    assert again == delays
