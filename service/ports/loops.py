"""`LoopStore`: the items and counters of ForEach steps.

Every method may raise `UnavailableError`; a lost race is never an error.
"""

from collections.abc import Sequence
from typing import Protocol

from service.engine.model import Json, RunId, StepKey
from service.engine.records import LoopState, StepRecord


class LoopStore(Protocol):
    async def start_loop(
        self, run_id: RunId, key: StepKey, items: Sequence[Json], *, concurrency: int
    ) -> LoopState:
        """Store the items of a ForEach step and its counters.

        Idempotent: a second call keeps the first items and returns the state as it is.
        """
        ...

    async def loop_item(self, run_id: RunId, key: StepKey, index: int) -> Json:
        """Item `index` of a started loop; IndexError past its end."""
        ...

    async def advance_loop(
        self, run_id: RunId, key: StepKey, *, index: int, failed: bool
    ) -> StepRecord | None:
        """Count iteration `index` finished (and failed if `failed`), once, atomically.

        Returns the loop's row after this call (its `loop` holds the counters and the
        iterations counted), or None when the loop has no counters (reset meanwhile).
        Counting an iteration again changes nothing, so a continuation cut short may
        repeat it; each first count sees a distinct `finished`. A loop marked stopped
        counts nothing more: its row comes back with `stop` set.
        """
        ...
