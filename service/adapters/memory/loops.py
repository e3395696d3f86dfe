"""`InMemoryLoopStore`: ForEach items and counters, on the rows of `InMemoryStepStore`.

The counters live on the loop's row, as they do in MongoDB; the items beside the rows.
"""

from collections.abc import Sequence
from dataclasses import replace

from service.adapters.memory.copies import copied
from service.adapters.memory.steps import InMemoryStepStore
from service.engine.model import Json, RunId, StepKey
from service.engine.records import LoopState, StepRecord
from service.errors import UnknownReferenceError


class InMemoryLoopStore:
    def __init__(self, steps: InMemoryStepStore) -> None:
        self._steps = steps

    async def start_loop(
        self, run_id: RunId, key: StepKey, items: Sequence[Json], *, concurrency: int
    ) -> LoopState:
        row = self._steps.row(run_id, key)
        if row is None:
            raise UnknownReferenceError("step", f"{run_id}/{key}")
        if row.loop is not None:
            return row.loop
        state = LoopState(total=len(items), concurrency=concurrency)
        self._steps.items.setdefault(run_id, {})[key] = [copied(i) for i in items]
        self._steps.put(replace(row, loop=state))
        return state

    async def loop_item(self, run_id: RunId, key: StepKey, index: int) -> Json:
        items = self._steps.items.get(run_id, {}).get(key)
        if items is None:
            raise UnknownReferenceError("loop", f"{run_id}/{key}")
        if not 0 <= index < len(items):
            raise IndexError(f"loop {key} has {len(items)} items, not item {index}")
        return copied(items[index])

    async def advance_loop(
        self, run_id: RunId, key: StepKey, *, index: int, failed: bool
    ) -> StepRecord | None:
        row = self._steps.row(run_id, key)
        if row is None or row.loop is None:
            return None
        if row.stop is not None:
            return replace(row, loop=replace(row.loop, stop=row.stop))
        if row.loop.is_counted(index):
            return row
        state = replace(
            row.loop,
            finished=row.loop.finished + 1,
            failed=row.loop.failed + (1 if failed else 0),
            done=row.loop.with_counted(index),
        )
        return self._steps.put(replace(row, loop=state))
