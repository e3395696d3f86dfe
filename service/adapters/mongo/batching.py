"""`Batcher`: the writes of concurrent deliveries, sent together (group commit).

A write goes out at once when no batch of its kind is on the wire; while one is (or
`parallel` are), the writes that come meanwhile wait for it and then go out together,
in one command. So a lone delivery waits for nothing, and a worker handling thirty
deliveries sends a few claim commands instead of thirty: fewer socket writes on both
sides, one majority wait for the lot. Each submitter gets its own answer, or the error
the command raised.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        parallel: int = 2,
        largest: int = 256,
    ) -> None:
        """`send` answers a batch of writes, one answer per write, in order.

        At most `parallel` batches are on the wire at once, each of at most `largest`
        writes.
        """
        self._send = send
        self._parallel = parallel
        self._largest = largest
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def submit(self, write: T) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._pending.append((write, answer))
        if not self._scheduled and len(self._sending) < self._parallel:
            # At the end of this turn: the writes of the same turn go together.
            self._scheduled = True
            loop.call_soon(self._flush)
        return await answer

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._sending) < self._parallel:
            batch = self._pending[: self._largest]
            del self._pending[: self._largest]
            # Owned here until it ends: each submitter awaits its own future.
            task = asyncio.get_running_loop().create_task(self._deliver(batch))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._pending and not self._scheduled:
            self._flush()  # what came while the wire was full goes now, together

    async def _deliver(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._send([write for write, _ in batch])
        except asyncio.CancelledError:
            for _, answer in batch:
                answer.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - handed to every submitter
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(error)
            return
        for (_, answer), result in zip(batch, answers, strict=True):
            if not answer.done():  # a submitter cancelled meanwhile needs none
                answer.set_result(result)
