"""Concurrency keys: the key a run holds a slot of, and who may start as slots free.

A flow with `concurrency=Concurrency(key, limit)` runs at most `limit` runs per value of
its key. Its runs are created Queued and join their key's queue (tickets numbered in
the order they join); only the head of the queue may take a free slot, and only a run
holding a slot is marked Running and started, so runs start in the order they joined.
A run holds its slot until it has ended; a slot held by a run that ended or is gone is
freed by the next admission that meets it, so it never blocks the key. Pure: the
shell reads the key's slots and the holders' statuses, and does what this says.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from service.engine.expressions import Facts, resolve
from service.engine.model import Flow, FlowId, Json, RunId, RunStatus
from service.engine.records import RunRecord

KEY_CHARS: Final = 200
"""A longer key value is replaced by its SHA-256 (`sha256:<hex>`)."""
QUEUE_ROOM: Final = 100_000
"""Runs one key's queue holds (its record must stay well below MongoDB's 16 MB)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    run_id: RunId
    number: int
    """Its place in the key's queue: tickets are numbered in the order runs joined."""
    admitted: int | None = None
    """Its place among the key's admissions, once it holds a slot."""


@dataclass(frozen=True, slots=True)
class Slots:
    """The slots of one key: who holds one, and who waits, in order."""

    flow_id: FlowId
    key: str
    holders: tuple[Ticket, ...] = ()
    waiting: tuple[Ticket, ...] = ()
    tickets: int = 0
    """Tickets handed out so far (the next is `tickets + 1`)."""
    admitted: int = 0
    """Admissions so far (the next is `admitted + 1`)."""

    def holds(self, run_id: RunId) -> bool:
        return any(t.run_id == run_id for t in self.holders)

    def place(self, run_id: RunId) -> int | None:
        """1 for the head of the queue; None if `run_id` does not wait."""
        found = (n for n, t in enumerate(self.waiting, 1) if t.run_id == run_id)
        return next(found, None)


@dataclass(frozen=True, slots=True)
class Admission:
    """What one look at a key's slots says to do, in this order."""

    free: tuple[RunId, ...] = ()
    """Holders whose run ended or is gone: their slots are free again."""
    resume: tuple[Ticket, ...] = ()
    """Holders still Queued (their admission was cut short): mark them Running."""
    take: Ticket | None = None
    """The head of the queue, which takes a free slot."""


def key_of(flow: Flow, body: Json, headers: Mapping[str, str]) -> str | None:
    """The value of `flow`'s concurrency key for a trigger; None if it has no key.

    A string as it is, anything else as compact JSON: a missing or null value is the
    key `null`, shared by every run that has none.
    """
    if flow.concurrency is None:
        return None
    facts = Facts(body=body, headers=headers, steps={}, declared=frozenset())
    value = resolve(flow.concurrency.key, facts)
    text = value if isinstance(value, str) else _compact(value)
    if len(text) > KEY_CHARS:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def queued(flow: Flow, run: RunRecord) -> RunRecord:
    """`run` as created: Queued under its key when its flow has one, else as it is."""
    key = key_of(flow, run.body, run.headers)
    if key is None:
        return run
    return replace(run, status=RunStatus.QUEUED, concurrency_key=key)


def admission(
    slots: Slots, statuses: Mapping[RunId, RunStatus], limit: int
) -> Admission:
    """What to do with `slots`, knowing its holders' run statuses (absent: gone)."""
    ended = tuple(
        t.run_id
        for t in slots.holders
        if (status := statuses.get(t.run_id)) is None or status.is_final
    )
    if ended:
        return Admission(free=ended)  # then look again, with those slots free
    resume = tuple(
        t for t in slots.holders if statuses.get(t.run_id) is RunStatus.QUEUED
    )
    room = len(slots.holders) < limit
    head = slots.waiting[0] if slots.waiting and room else None
    return Admission(resume=resume, take=head)


def _compact(value: Json) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
