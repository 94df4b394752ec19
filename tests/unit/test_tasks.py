"""``cancel_and_wait``/``wait_cancelled``: a stopped task's cancellation is absorbed, the stopping caller's is not."""

from __future__ import annotations

import asyncio

import pytest

from smc_quant.tasks import cancel_and_wait


def _slow_to_stop(release: asyncio.Event) -> asyncio.Task[None]:
    """A task whose cleanup, once cancelled, waits for ``release`` (a flush, a socket close)."""

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise

    return asyncio.get_running_loop().create_task(run())


async def test_the_stopped_tasks_cancellation_is_absorbed() -> None:
    release = asyncio.Event()
    task = _slow_to_stop(release)
    await asyncio.sleep(0)  # let it reach its wait
    release.set()
    await cancel_and_wait([task])  # returns normally
    assert task.cancelled()


async def test_a_bound_on_the_stop_is_enforced() -> None:
    """``wait_for(stop(), budget)`` around a task that does not finish its cleanup: the bound raises in time.
    ``suppress(CancelledError)`` around the await absorbed the bound's cancellation as if it were the task's, and
    the stop went on (the reviewer saw a 0.3 s bound return normally after 2.3 s)."""
    task = _slow_to_stop(asyncio.Event())  # never released
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(cancel_and_wait([task]), 0.05)
    assert task.done()  # cancelled again by the bound, its cleanup cut
