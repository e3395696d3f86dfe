"""`RunCache`: what a worker remembers of the runs it met (their immutable part).

A step needs its run's flow, trigger body and headers; those never change, so a worker
keeps them from the trigger (or the first read) instead of reading the run at every
step. What does change (a stop) reaches a step through its own row. Bounded by entries
and by the size of the bodies; the least recently used go first.
"""

import json
from collections import OrderedDict
from typing import Final

from service.engine.model import RunId
from service.engine.records import RunFacts

MAX_RUNS: Final = 4096
MAX_BYTES: Final = 64 * 1024 * 1024


class RunCache:
    def __init__(self, *, max_runs: int = MAX_RUNS, max_bytes: int = MAX_BYTES) -> None:
        self._facts: OrderedDict[RunId, tuple[RunFacts, int]] = OrderedDict()
        self._max_runs = max_runs
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, run_id: RunId) -> RunFacts | None:
        found = self._facts.get(run_id)
        if found is None:
            return None
        self._facts.move_to_end(run_id)
        return found[0]

    def put(self, facts: RunFacts) -> None:
        size = _size(facts)
        if size > self._max_bytes // 8:
            return  # a huge body is read again rather than crowding everything out
        old = self._facts.pop(facts.run_id, None)
        if old is not None:
            self._bytes -= old[1]
        self._facts[facts.run_id] = (facts, size)
        self._bytes += size
        while len(self._facts) > self._max_runs or self._bytes > self._max_bytes:
            _, (_, dropped) = self._facts.popitem(last=False)
            self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._facts)


def _size(facts: RunFacts) -> int:
    """About how many bytes the run's body and headers hold."""
    body = len(json.dumps(facts.body)) if facts.body is not None else 0
    return 256 + body + sum(len(k) + len(v) for k, v in facts.headers.items())
