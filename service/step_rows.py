"""The steps of a run as `flowctl run` lists them: the flow's steps in DAG order.

Built from the flow's manifest joined with the step rows that exist (a step not
dispatched yet has no row and is listed `not started`), so the order is the flow's,
not the order rows were written. A ForEach's iterations are collapsed into one line
per body step with counts by status, unless `iterations` expands them. Rows the
manifest no longer names (a step removed since the run started) come last. Pure.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.engine.model import ITERATION, Flow, Step, StepStatus, template_parts
from service.engine.records import StepRecord, Waiter

NOT_STARTED = "not started"


@dataclass(frozen=True, slots=True)
class StepLine:
    """One line of the steps table: one step, or every iteration of a body step."""

    key: str
    type: str
    row: StepRecord | None = None
    """The step's row (None: not started, or a collapsed group)."""
    group: Sequence[StepRecord] = ()
    """The rows of every iteration of a collapsed body step."""
    expected: int | None = None
    """How many iterations the group will have, when the loop knows."""
    waiter: Waiter | None = None
    """The signal the step waits for, if it is parked on one."""

    @property
    def is_group(self) -> bool:
        return self.row is None and (bool(self.group) or self.expected is not None)

    def counts(self) -> dict[str, int]:
        """Rows by status, in status order, then those not started yet."""
        found = Counter(row.status for row in self.group)
        counts = {str(s): found[s] for s in StepStatus if found[s]}
        if self.expected is not None and self.expected > len(self.group):
            counts[NOT_STARTED] = self.expected - len(self.group)
        return counts


@dataclass
class _Lines:
    by_key: Mapping[str, StepRecord]
    waiters: Mapping[str, Waiter]
    iterations: bool
    out: list[StepLine] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    def add(self, key: str, step: Step) -> None:
        row = self.by_key.get(key)
        if row is not None:
            self.used.add(key)
        self.out.append(StepLine(key, step.type, row, waiter=self.waiters.get(key)))


def step_lines(
    flow: Flow | None,
    rows: Sequence[StepRecord],
    waiters: Iterable[Waiter] = (),
    *,
    iterations: bool = False,
) -> list[StepLine]:
    """The lines of the steps table (see the module docstring)."""
    open_waits: dict[str, Waiter] = {
        w.step_key: w for w in waiters if w.delivered_at is None
    }
    lines = _Lines({row.key: row for row in rows}, open_waits, iterations)
    if flow is not None:
        _scope(lines, flow.steps, prefix="")
    lines.out.extend(
        StepLine(row.key, row.type, row, waiter=open_waits.get(row.key))
        for row in rows
        if row.key not in lines.used and row.type != ITERATION
    )
    return lines.out


def dag_order(steps: Mapping[str, Step]) -> list[str]:
    """The keys of `steps`, each after every step it runs after.

    Ties keep the declaration order.
    """
    order: list[str] = []
    placed: set[str] = set()
    waiting = list(steps)
    while waiting:
        for key in waiting:
            if all(dep in placed or dep not in steps for dep in steps[key].conditions):
                order.append(key)
                placed.add(key)
                waiting.remove(key)
                break
        else:  # a cycle, which validation refuses at start: keep the rest as declared
            order.extend(waiting)
            break
    return order


def _scope(lines: _Lines, steps: Mapping[str, Step], *, prefix: str) -> None:
    for local in dag_order(steps):
        step = steps[local]
        key = prefix + local
        lines.add(key, step)
        if not step.is_loop:
            continue
        if lines.iterations:
            for index in _indexes(lines.by_key, key):
                iteration = f"{key}.{index}"
                row = lines.by_key.get(iteration)
                if row is not None:
                    lines.used.add(iteration)
                    lines.out.append(StepLine(iteration, "iteration", row))
                _scope(lines, step.steps, prefix=f"{iteration}.")
        else:
            _collapsed(lines, step, key)


def _collapsed(lines: _Lines, loop: Step, key: str) -> None:
    """One line per body step (and per nested body step) of the loop `key`."""
    loop_row = lines.by_key.get(key)
    total = loop_row.loop.total if loop_row and loop_row.loop else None
    for path, step in _templates(loop.steps):
        template = template_parts(key) + path
        group = [
            row
            for row in lines.by_key.values()
            if row.type != ITERATION and template_parts(row.key) == template
        ]
        lines.used.update(row.key for row in group)
        shown = key + "".join(f".*.{part}" for part in path)
        expected = total if len(path) == 1 else None
        lines.out.append(StepLine(shown, step.type, group=group, expected=expected))
    # The bookkeeping rows of the iterations are summed up by the lines above.
    lines.used.update(
        row.key for row in lines.by_key.values() if row.key.startswith(f"{key}.")
    )


def _templates(steps: Mapping[str, Step]) -> list[tuple[list[str], Step]]:
    found: list[tuple[list[str], Step]] = []
    for local in dag_order(steps):
        step = steps[local]
        found.append(([local], step))
        if step.is_loop:
            found.extend(([local, *path], s) for path, s in _templates(step.steps))
    return found


def _indexes(rows: Mapping[str, StepRecord], loop: str) -> list[int]:
    depth = len(loop.split("."))
    found = set()
    for key in rows:
        parts = key.split(".")
        if key.startswith(f"{loop}.") and len(parts) > depth and parts[depth].isdigit():
            found.add(int(parts[depth]))
    return sorted(found)


def error_line(error: str | None) -> str:
    """The line of an error that says what went wrong: the exception's own line.

    A bare traceback ends with it; our errors begin with it (`ValueError: boom`,
    then the traceback).
    """
    if not error:
        return ""
    lines = [line for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback (most recent call last)"):
        unindented = [line for line in lines[1:] if not line[:1].isspace()]
        return unindented[-1] if unindented else lines[-1]
    return lines[0]
