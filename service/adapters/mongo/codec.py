"""How records look as MongoDB documents: names, ids, JSON values, conversions.

No I/O here. Flow authors' JSON (trigger bodies, inputs, outputs, traces, loop items,
signal payloads, manifests) is stored as JSON text, not as BSON sub-documents: it may
hold keys with '.' or a leading '$', integers past int64 and nesting past BSON's 100
levels, all of which BSON or the update language would refuse or mangle. Instants are
BSON dates (UTC, millisecond precision; the client is `tz_aware=True`, so they come back
aware).
"""

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from service.engine.model import (
    FlowId,
    JobId,
    Json,
    RunId,
    RunStatus,
    StepKey,
    StepStatus,
    TriggerKey,
    scope_of,
)
from service.engine.records import (
    NO_CONTEXT,
    Attempt,
    Event,
    FlowRecord,
    LoopState,
    NewStep,
    ParentRef,
    RunRecord,
    Schedule,
    StepRecord,
    Timer,
    TimerKind,
    Waiter,
)

Document = dict[str, Any]

RUNS: Final = "runs"
STEPS: Final = "steps"
LOOP_ITEMS: Final = "loop_items"
EVENTS: Final = "events"
EVENT_COUNTERS: Final = "event_counters"
TIMERS: Final = "timers"
WAITERS: Final = "waiters"
FLOWS: Final = "flows"
SCHEDULES: Final = "schedules"
SLOTS: Final = "slots"


def row_id(run_id: str, key: str) -> str:
    """`<run>/<key>`: the `_id` of a step or waiter; run ids hold no '/'."""
    return f"{run_id}/{key}"


def dumps(value: Json) -> str:
    """JSON text of a flow author's value, exact (no float for a big integer)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Json:
    if text is None:
        return None
    value: Json = json.loads(text)
    return value


def dumps_mapping(values: Mapping[str, Json] | None) -> str | None:
    return None if values is None else dumps(dict(values))


def loads_mapping(text: str | None) -> dict[str, Json] | None:
    value = loads(text)
    # Only ever written by dumps_mapping, so the text is an object.
    return value if isinstance(value, dict) else None


def run_document(run: RunRecord) -> Document:
    doc: Document = {
        "_id": run.run_id,
        "flow_id": run.flow_id,
        "flow_name": run.flow_name,
        "trigger_key": run.trigger_key,
        "job_id": run.job_id,
        "status": str(run.status),
        "body": dumps(run.body),
        # Pairs, not a sub-document: a header name may hold a '.'.
        "headers": [[name, value] for name, value in run.headers.items()],
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "source_run_id": run.source_run_id,
        "deadline_at": run.deadline_at,
        "cancel": {
            "requested": run.cancel_requested,
            "reason": run.cancel_reason,
            "at": None,
        },
        "timed_out_at": run.timed_out_at,
        "released": list(run.released),
    }
    if run.idempotency_key is not None:
        # Absent, not null, when there is no key: the unique index is partial on it.
        doc["idem"] = run.idempotency_key
    if run.trace_context:
        doc["tc"] = context_document(run.trace_context)
    return doc | _lineage_document(run)


def _lineage_document(run: RunRecord) -> Document:
    """The fields of a child or a keyed run; absent on every other run."""
    doc: Document = {}
    if run.concurrency_key is not None:
        doc["ckey"] = run.concurrency_key
    if run.parent is not None:
        doc["parent"] = {"run_id": run.parent.run_id, "step_key": run.parent.step_key}
        doc["depth"] = run.depth
    return doc


def context_document(context: Mapping[str, str]) -> list[list[str]]:
    """A trace context as stored: name/value pairs, as headers are.

    Written only when tracing is on, so nothing grows when it is off.
    """
    return [[name, value] for name, value in context.items()]


def context_of(doc: Document) -> Mapping[str, str]:
    """The trace context stored in `doc` ("tc"), or the shared empty one."""
    pairs = doc.get("tc")
    return dict(pairs) if pairs else NO_CONTEXT


def run_record(doc: Document) -> RunRecord:
    cancel = doc.get("cancel") or {}
    return RunRecord(
        run_id=RunId(doc["_id"]),
        flow_id=FlowId(doc["flow_id"]),
        flow_name=doc["flow_name"],
        trigger_key=TriggerKey(doc["trigger_key"]),
        job_id=JobId(doc["job_id"]),
        started_at=doc["started_at"],
        body=loads(doc.get("body")),
        headers=dict(doc.get("headers") or []),
        status=RunStatus(doc["status"]),
        completed_at=doc.get("completed_at"),
        source_run_id=doc.get("source_run_id"),
        idempotency_key=doc.get("idem"),
        deadline_at=doc.get("deadline_at"),
        cancel_requested=bool(cancel.get("requested")),
        cancel_reason=cancel.get("reason"),
        timed_out_at=doc.get("timed_out_at"),
        released=tuple(StepKey(k) for k in doc.get("released") or ()),
        trace_context=context_of(doc),
        concurrency_key=doc.get("ckey"),
        ticket=doc.get("ticket"),
        admitted=doc.get("admitted"),
        parent=_parent(doc.get("parent")),
        depth=doc.get("depth", 0),
        outputs=loads(doc.get("outputs")),
    )


def _parent(doc: Document | None) -> ParentRef | None:
    if doc is None:
        return None
    return ParentRef(RunId(doc["run_id"]), StepKey(doc["step_key"]))


def step_document(run_id: RunId, new: NewStep, *, at: datetime) -> Document:
    """A new row; `stop` is null (not absent), so a claim's filter matches it."""
    return {
        "_id": row_id(run_id, new.key),
        "run_id": run_id,
        "key": new.key,
        "scope": scope_of(new.key),
        "type": new.type,
        "status": str(new.status),
        "dispatched_at": at,
        "inputs": dumps_mapping(new.inputs),
        "attempt": 0,
        "job_id": None,
        "lease_until": None,
        "resolved_inputs": None,
        "output": None,
        "error": new.error,
        "trace": None if new.trace is None else dumps(new.trace),
        "started_at": None,
        "completed_at": None,
        "attempts": [],
        "stop": None,
    }


def step_record(doc: Document) -> StepRecord:
    loop = doc.get("loop")
    return StepRecord(
        run_id=RunId(doc["run_id"]),
        key=StepKey(doc["key"]),
        type=doc["type"],
        status=StepStatus(doc["status"]),
        dispatched_at=doc["dispatched_at"],
        inputs=loads_mapping(doc.get("inputs")) or {},
        attempt=doc.get("attempt", 0),
        job_id=doc.get("job_id"),
        lease_until=doc.get("lease_until"),
        resolved_inputs=loads_mapping(doc.get("resolved_inputs")),
        output=loads(doc.get("output")),
        error=doc.get("error"),
        trace=loads(doc.get("trace")),
        started_at=doc.get("started_at"),
        completed_at=doc.get("completed_at"),
        attempts=tuple(_attempt(entry) for entry in doc.get("attempts") or ()),
        loop=None if loop is None else loop_state(loop, stop=doc.get("stop")),
        released=tuple(StepKey(k) for k in doc.get("released") or ()),
        stop=None if doc.get("stop") is None else RunStatus(doc["stop"]),
        trace_context=context_of(doc),
    )


def attempt_document(number: Any, job_id: Any, *, at: datetime) -> Document:
    """A new attempt entry; `number` and `job_id` may be pipeline expressions."""
    return {
        "number": number,
        "job_id": job_id,
        "started_at": at,
        "status": str(StepStatus.RUNNING),
        "completed_at": None,
        "error": None,
    }


def _attempt(entry: Document) -> Attempt:
    return Attempt(
        number=entry["number"],
        job_id=JobId(entry["job_id"]),
        started_at=entry["started_at"],
        status=StepStatus(entry["status"]),
        completed_at=entry.get("completed_at"),
        error=entry.get("error"),
    )


def loop_document(state: LoopState) -> Document:
    return {
        "total": state.total,
        "concurrency": state.concurrency,
        "finished": state.finished,
        "failed": state.failed,
    }


def loop_state(doc: Document, *, stop: str | None = None) -> LoopState:
    return LoopState(
        total=doc["total"],
        concurrency=doc["concurrency"],
        finished=doc["finished"],
        failed=doc["failed"],
        done={int(word): int(bits) for word, bits in (doc.get("done") or {}).items()},
        stop=None if stop is None else RunStatus(stop),
    )


def event_record(doc: Document) -> Event:
    return Event(
        run_id=RunId(doc["run_id"]),
        seq=doc["seq"],
        type=doc["type"],
        at=doc["at"],
        step_key=doc["step_key"],
        message=doc["message"],
    )


def timer_document(timer: Timer) -> Document:
    doc: Document = {
        "_id": timer.id,
        "kind": str(timer.kind),
        "due_at": timer.due_at,
        "run_id": timer.run_id,
        "step_key": timer.step_key,
        "attempt": timer.attempt,
        "flow_id": timer.flow_id,
        "owner": None,
        "lease_until": None,
        "token": None,
    }
    if timer.trace_context:
        doc["tc"] = context_document(timer.trace_context)
    return doc


def timer_record(doc: Document) -> Timer:
    step_key = doc.get("step_key")
    return Timer(
        id=doc["_id"],
        kind=TimerKind(doc["kind"]),
        due_at=doc["due_at"],
        run_id=RunId(doc["run_id"]),
        step_key=None if step_key is None else StepKey(step_key),
        attempt=doc.get("attempt"),
        flow_id=doc.get("flow_id"),
        trace_context=context_of(doc),
    )


def waiter_record(doc: Document) -> Waiter:
    return Waiter(
        run_id=RunId(doc["run_id"]),
        step_key=StepKey(doc["step_key"]),
        signal=doc["signal"],
        created_at=doc["created_at"],
        expires_at=doc.get("expires_at"),
        delivered_at=doc.get("delivered_at"),
        payload=loads(doc.get("payload")),
    )


def flow_record(doc: Document) -> FlowRecord:
    return FlowRecord(
        flow_id=FlowId(doc["_id"]),
        name=doc["name"],
        version=doc["version"],
        manifest=loads_mapping(doc.get("manifest")) or {},
        enabled=bool(doc.get("enabled", True)),
        updated_at=doc.get("updated_at"),
    )


def schedule_document(schedule: Schedule) -> Document:
    return {
        "_id": schedule.job_id,
        "flow_id": schedule.flow_id,
        "trigger_key": schedule.trigger_key,
        "cron": schedule.cron,
        "next_fire_at": schedule.next_fire_at,
        "paused": schedule.paused,
        "cron_override": schedule.cron_override,
    }


def schedule_record(doc: Document) -> Schedule:
    return Schedule(
        job_id=doc["_id"],
        flow_id=FlowId(doc["flow_id"]),
        trigger_key=TriggerKey(doc["trigger_key"]),
        cron=doc["cron"],
        next_fire_at=doc.get("next_fire_at"),
        paused=bool(doc.get("paused")),
        cron_override=doc.get("cron_override"),
    )
