"""`InMemoryDispatcher`: a FIFO of `run_step` dispatches, taken by whoever drives it."""

from collections import deque
from collections.abc import Sequence

from service.ports.dispatch import Dispatch


class InMemoryDispatcher:
    """A FIFO of `run_step` dispatches, delivered by whoever drives it (`take`)."""

    def __init__(self) -> None:
        self._queue: deque[Dispatch] = deque()

    async def publish(self, dispatches: Sequence[Dispatch]) -> None:
        self._queue.extend(dispatches)

    @property
    def pending(self) -> int:
        """How many dispatches wait to be taken."""
        return len(self._queue)

    def take(self) -> Dispatch:
        """The oldest waiting dispatch; IndexError when none waits."""
        return self._queue.popleft()

    def clear(self) -> None:
        """Lose every waiting dispatch (a broker that dropped its messages)."""
        self._queue.clear()
