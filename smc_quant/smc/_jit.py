"""The numba decorators every kernel uses (both ``njit(cache=True)``, typed for mypy).

``jit`` marks a helper that is inlined into its caller at numba-IR level: calls that pass the state
arrays then cost nothing (no call frame, no reference counting). ``kernel`` marks a function
compiled on its own and called normally (releasing the GIL): the per-bar step and the loops
that drive it, so batch runs of different symbols can share threads. ``hot_kernel`` is a kernel
that allocates nothing and so can run without reference counting.

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


def hot_kernel(fn: F) -> F:
    """Like :func:`kernel`, without numba's reference counting: for loops over the state that
    allocate nothing. Numba cannot always prune the incref/decref pairs of arrays passed into inlined
    helpers with branches, and those atomic operations cost more than the detectors themselves."""
    options: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy", "_nrt": False}
    return cast(F, njit(**options)(fn))
