"""Group commit: writes of one turn go together, a lone write waits for nothing."""

import asyncio
from collections.abc import Sequence

import pytest

from service.adapters.mongo.batching import Batcher
from service.errors import UnavailableError


class Wire:
    """A `send` that records its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.sent = asyncio.Event()

    async def send(self, writes: Sequence[int]) -> list[int]:
        self.batches.append(list(writes))
        self.sent.set()
        await self.open.wait()
        return [w * 10 for w in writes]


async def test_writes_of_one_turn_go_out_together_each_with_its_answer():
    wire = Wire()
    batcher = Batcher(wire.send)

    answers = await asyncio.gather(*(batcher.submit(n) for n in range(5)))

    assert answers == [0, 10, 20, 30, 40]
    assert wire.batches == [[0, 1, 2, 3, 4]]


async def test_a_lone_write_goes_alone():
    wire = Wire()
    batcher = Batcher(wire.send)

    assert await batcher.submit(7) == 70
    assert await batcher.submit(8) == 80
    assert wire.batches == [[7], [8]]


async def test_writes_that_come_while_the_wire_is_full_wait_and_go_together():
    wire = Wire()
    wire.open.clear()
    batcher = Batcher(wire.send, parallel=1)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.wait_for(wire.sent.wait(), 5)  # the first batch is on the wire
    later = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)  # they are submitted, and wait

    wire.open.set()

    assert await first == 10
    assert [await f for f in later] == [20, 30]
    assert wire.batches == [[1], [2, 3]]


async def test_an_error_reaches_every_write_of_its_batch():
    async def down(writes: Sequence[int]) -> list[int]:
        raise UnavailableError("MongoDB is unavailable")

    batcher = Batcher(down)

    results = await asyncio.gather(
        *(batcher.submit(n) for n in range(3)), return_exceptions=True
    )

    assert all(isinstance(r, UnavailableError) for r in results)


async def test_a_batch_is_never_larger_than_its_limit():
    wire = Wire()
    batcher = Batcher(wire.send, largest=2, parallel=4)

    await asyncio.gather(*(batcher.submit(n) for n in range(5)))

    assert [len(b) for b in wire.batches] == [2, 2, 1]


@pytest.mark.parametrize("parallel", [1, 2])
async def test_a_cancelled_submitter_leaves_the_others_answered(parallel: int):
    wire = Wire()
    wire.open.clear()
    batcher = Batcher(wire.send, parallel=parallel)
    gone = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.wait_for(wire.sent.wait(), 5)

    gone.cancel()
    wire.open.set()

    assert await kept == 20
    assert gone.cancelled()
