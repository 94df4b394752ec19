"""The two numba decorators every kernel uses (both ``njit(cache=True)``, typed for mypy).

``jit`` marks a helper that is inlined into its caller at numba-IR level: calls that pass the state
arrays then cost nothing (no call frame, no reference counting). ``kernel`` marks a function
compiled on its own and called normally (releasing the GIL): the per-bar step and the loops
that drive it, so batch runs of different symbols can share threads.

Caveat of numba's on-disk cache: a cached kernel is invalidated only when *its own* file changes.
After editing a helper, touch the modules that define the calling kernels (or delete
``__pycache__``) so they are recompiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])


def jit(fn: F) -> F:
    """Compile ``fn`` with numba, inlined into every numba caller."""
    return cast(F, njit(cache=True, inline="always", error_model="numpy")(fn))


def kernel(fn: F) -> F:
    """Compile ``fn`` with numba as a stand-alone function (entry points and the per-bar step)."""
    return cast(F, njit(cache=True, nogil=True, error_model="numpy")(fn))
