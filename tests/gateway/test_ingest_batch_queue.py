"""The batch writer's queue: a first report wakes the writer, which then waits up to batch_ms for a full
batch; a full batch is taken at once, at most batch_max, oldest first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.pipeline.ingest_writer import BatchQueue


def _item(n: int) -> Any:
    return (n, None, None)  # the queue never looks inside an item


async def test_a_full_batch_is_taken_at_once_oldest_first_at_most_batch_max() -> None:
    queue = BatchQueue(3)
    for n in range(7):
        queue.put_nowait(_item(n))
    started = time.monotonic()
    assert [i[0] for i in await queue.take(30.0)] == [0, 1, 2]
    assert [i[0] for i in await queue.take(30.0)] == [3, 4, 5]
    assert time.monotonic() - started < 5  # never waited for the 30 s
    assert len(queue) == 1 and not queue.empty()


async def test_a_short_batch_waits_for_batch_ms_then_goes() -> None:
    queue = BatchQueue(100)
    queue.put_nowait(_item(1))
    started = time.monotonic()
    taken = await queue.take(0.2)
    assert [i[0] for i in taken] == [1] and time.monotonic() - started >= 0.19 and queue.empty()


async def test_the_writer_waits_for_a_first_report_and_a_filling_batch_wakes_it() -> None:
    queue = BatchQueue(3)
    took = asyncio.ensure_future(queue.take(30.0))
    await asyncio.sleep(0.05)
    assert not took.done()  # nothing queued: waiting
    queue.put_nowait(_item(1))
    await asyncio.sleep(0.05)
    assert not took.done()  # one of three: waiting for the batch to fill (up to 30 s)
    queue.put_nowait(_item(2))
    queue.put_nowait(_item(3))
    assert [i[0] for i in await asyncio.wait_for(took, 5)] == [1, 2, 3]


async def test_a_cancelled_take_leaves_the_queue_as_it_was() -> None:
    queue = BatchQueue(5)
    queue.put_nowait(_item(1))
    took = asyncio.ensure_future(queue.take(30.0))
    await asyncio.sleep(0.05)
    took.cancel()
    await asyncio.gather(took, return_exceptions=True)
    assert took.cancelled() and len(queue) == 1  # the stop cancels the writer: nothing taken and lost


async def test_in_a_hurry_what_is_queued_goes_at_once_and_waits_again_after() -> None:
    queue = BatchQueue(100)
    queue.put_nowait(_item(1))
    took = asyncio.ensure_future(queue.take(30.0))
    await asyncio.sleep(0.05)
    assert not took.done()  # one of a hundred: waiting for the batch
    queue.hurry(True)  # the backlog reached its cap: no more come until a commit settles some
    assert [i[0] for i in await asyncio.wait_for(took, 5)] == [1]
    queue.put_nowait(_item(2))
    assert [i[0] for i in await asyncio.wait_for(queue.take(30.0), 5)] == [2]  # still in a hurry
    queue.hurry(False)
    queue.put_nowait(_item(3))
    started = time.monotonic()
    assert [i[0] for i in await queue.take(0.2)] == [3] and time.monotonic() - started >= 0.19
