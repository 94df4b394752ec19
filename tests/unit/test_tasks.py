"""``cancel_and_wait``/``wait_cancelled``: a stopped task's cancellation is absorbed, the stopping caller's is not.
``within``: a bounded wait that raises in time and never swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from smc_quant.tasks import cancel_and_wait, within


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


async def test_a_cancellation_that_lands_as_the_bounded_work_answers_ends_the_task() -> None:
    """A loop's bounded read answers, and the stop cancels the loop in the same turn of the event loop, before the
    loop resumes. ``asyncio.wait_for`` (Python 3.11) returned the answer and dropped the cancellation: the loop ran
    on, and the stop that had cancelled it once waited for it forever."""
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def one_round() -> str:
        return await within(answer, 10)

    task = asyncio.get_running_loop().create_task(one_round())
    await asyncio.sleep(0)  # it waits for the answer
    answer.set_result("read")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_bounded_work_that_overruns_raises_in_time_and_is_cancelled() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hung() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await within(hung(), 0.01)
    assert started.is_set() and cancelled.is_set()
    assert await within(asyncio.sleep(0, "answered"), 10) == "answered"


async def test_a_task_that_fails_its_cleanup_does_not_leave_the_others_unawaited() -> None:
    """The first of three tasks fails as it is cancelled (a flush that raises). Its error used to end the wait there:
    the tasks after it, whose cleanup takes a few turns of the loop, were never awaited (their cleanup cut by the
    process's exit). Every task is awaited, then the failure is raised."""

    async def failing() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("flush failed") from None

    async def closing() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            for _ in range(5):  # a socket's close handshake: a few turns of the loop
                await asyncio.sleep(0)
            raise

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(failing()), loop.create_task(closing()), loop.create_task(closing())]
    await asyncio.sleep(0)  # every task at its wait
    with pytest.raises(RuntimeError, match="flush failed"):
        await cancel_and_wait(tasks)
    assert tasks[1].cancelled() and tasks[2].cancelled()
