"""Loading what the engine asked for (`rounds.Load`).

Rows, counts of final rows, loop items, a loop's count, a waiter, a child run.
Everything one `Load` asks for is read at once. A loop's count is a write, but one that
is safe to repeat (each iteration is counted once, whoever asks), which is why the
engine may ask for it as a fact.
"""

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from service.engine.model import Json, RunId, StepKey
from service.engine.records import RunRecord, StepRecord, Waiter
from service.engine.rounds import CountIteration, Load, Loaded
from service.orchestrator.runtime import Runtime
from service.orchestrator.together import every


@dataclass(slots=True)
class _Found:
    rows: dict[StepKey, StepRecord] = field(default_factory=dict)
    scope_rows: list[StepRecord] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    scope_final: int = 0
    items: dict[tuple[StepKey, int], Json] = field(default_factory=dict)
    loop: StepRecord | None = None
    waiter: Waiter | None = None
    in_flight: list[StepRecord] = field(default_factory=list)
    all_rows: list[StepRecord] = field(default_factory=list)
    child: RunRecord | None = None


async def load(rt: Runtime, run_id: RunId, asked: Load) -> Loaded:
    found = _Found()
    work = _reads(rt, run_id, asked, found)
    if work:
        await every(work)
    return Loaded(
        rows=found.rows,
        scope_rows=tuple(found.scope_rows),
        counts=tuple(found.counts[n] for n in range(len(asked.counts))),
        scope_final=found.scope_final,
        items=found.items,
        loop=found.loop,
        waiter=found.waiter,
        in_flight=tuple(found.in_flight),
        all_rows=tuple(found.all_rows),
        child=found.child,
    )


class _Reader:
    """One coroutine per kind of read, each writing its answer into `found`."""

    def __init__(self, rt: Runtime, run_id: RunId, found: _Found) -> None:
        self._rt = rt
        self._run_id = run_id
        self._steps = rt.stores.steps
        self.found = found

    async def rows(self, keys: frozenset[StepKey]) -> None:
        self.found.rows = await self._steps.steps(self._run_id, keys)

    async def scope(self, name: str) -> None:
        self.found.scope_rows = await self._steps.scope_steps(self._run_id, name)

    async def count(self, n: int, keys: frozenset[StepKey]) -> None:
        self.found.counts[n] = await self._steps.count_final_of(
            self._run_id, list(keys)
        )

    async def scope_final(self, name: str) -> None:
        self.found.scope_final = await self._steps.count_final(self._run_id, name)

    async def item(self, loop: StepKey, index: int) -> None:
        try:
            item = await self._rt.stores.loops.loop_item(self._run_id, loop, index)
        except IndexError:
            return  # past the loop's end: absent
        self.found.items[loop, index] = item

    async def counted(self, it: CountIteration) -> None:
        self.found.loop = await self._rt.stores.loops.advance_loop(
            self._run_id, it.loop, index=it.index, failed=it.failed
        )

    async def waiter(self, key: StepKey) -> None:
        self.found.waiter = await self._rt.stores.signals.waiter(self._run_id, key)

    async def in_flight(self) -> None:
        self.found.in_flight = await self._steps.in_flight(self._run_id)

    async def all_rows(self) -> None:
        self.found.all_rows = await self._steps.all_steps(self._run_id)

    async def child(self, run_id: RunId) -> None:
        self.found.child = await self._rt.stores.runs.get_run(run_id)


def _reads(
    rt: Runtime, run_id: RunId, asked: Load, found: _Found
) -> list[Coroutine[Any, Any, None]]:
    read = _Reader(rt, run_id, found)
    wanted: list[tuple[object, Callable[[], Coroutine[Any, Any, None]]]] = [
        (asked.rows, lambda: read.rows(asked.rows)),
        (asked.scope is not None, lambda: read.scope(asked.scope or "")),
        (
            asked.count_scope is not None,
            lambda: read.scope_final(asked.count_scope or ""),
        ),
        (asked.waiter is not None, lambda: read.waiter(StepKey(asked.waiter or ""))),
        (asked.in_flight, read.in_flight),
        (asked.all_rows, read.all_rows),
        (asked.child is not None, lambda: read.child(RunId(asked.child or ""))),
    ]
    reads = [make() for want, make in wanted if want]
    reads.extend(read.count(n, keys) for n, keys in enumerate(asked.counts))
    reads.extend(read.item(loop, index) for loop, index in asked.items)
    if asked.count_iteration is not None:
        reads.append(read.counted(asked.count_iteration))
    return reads
