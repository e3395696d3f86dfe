"""The update documents of step transitions: a claim, a result, a settle.

Pure: `steps.py` sends them. Kept apart because they are the part of the step store
that is MongoDB's update language rather than the store's logic.
"""

from datetime import datetime, timedelta
from typing import Any

from service.adapters.mongo.codec import (
    Document,
    attempt_document,
    context_document,
    dumps,
    dumps_mapping,
    step_document,
)
from service.engine.model import JobId, RunId, RunStatus, StepStatus
from service.engine.records import ATTEMPTS_KEPT, NewStep, Outcome

_RUNNING = str(StepStatus.RUNNING)


def claimed_fields(
    run_id: RunId,
    job_id: JobId,
    dispatch_id: str,
    now: datetime,
    lease: timedelta,
    new: NewStep | None,
) -> Document:
    """The claim's `$set` stage; with `new`, also the fields of a row it creates."""
    number = {"$add": [{"$ifNull": ["$attempt", 0]}, 1]}
    entry = attempt_document(number, {"$literal": job_id}, at=now)
    fields: Document = {
        "status": _RUNNING,
        "attempt": number,
        "job_id": {"$literal": job_id},
        "dispatch_id": {"$literal": dispatch_id or None},
        "lease_until": now + lease,
        "started_at": now,
        "attempts": {
            "$slice": [
                {"$concatArrays": [{"$ifNull": ["$attempts", []]}, [entry]]},
                -ATTEMPTS_KEPT,
            ]
        },
    }
    if new is not None:
        created = step_document(run_id, new, at=now)
        for name in ("run_id", "key", "scope", "type", "dispatched_at", "inputs"):
            fields[name] = {"$ifNull": [f"${name}", {"$literal": created[name]}]}
        for name in ("resolved_inputs", "output", "error", "trace", "completed_at"):
            fields[name] = {"$ifNull": [f"${name}", None]}
    return fields


def stop_of(doc: Document | None) -> RunStatus | None:
    stop = None if doc is None else doc.get("stop")
    return None if stop is None else RunStatus(stop)


def outcome_fields(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """What `finish` and `settle` write on the step itself."""
    fields: dict[str, Any] = {
        "status": str(outcome.status),
        "output": None if outcome.output is None else dumps(outcome.output),
        "error": outcome.error,
        "trace": None if outcome.trace is None else dumps(outcome.trace),
        "resolved_inputs": dumps_mapping(outcome.resolved_inputs),
        "lease_until": None,
        "completed_at": now if outcome.status.is_final else None,
    }
    if outcome.inputs is not None:
        fields["inputs"] = dumps_mapping(outcome.inputs)
    if outcome.trace_context:  # only when tracing is on (issue 13)
        fields["tc"] = context_document(outcome.trace_context)
    return fields


def closed_latest_attempt(outcome: Outcome, now: datetime) -> Document:
    """A pipeline expression: `attempts` with its latest entry closed, if it is open."""
    latest = {"$arrayElemAt": ["$attempts", -1]}
    latest_end = {"$getField": {"field": "completed_at", "input": latest}}
    is_open = {
        "$and": [
            {"$gt": [{"$size": "$attempts"}, 0]},
            {"$eq": [{"$ifNull": [latest_end, None]}, None]},
        ]
    }
    closed = {
        "$mergeObjects": [
            latest,
            {
                "status": str(outcome.status),
                "completed_at": now,
                "error": {"$literal": outcome.error},
            },
        ]
    }
    earlier = {"$slice": ["$attempts", {"$subtract": [{"$size": "$attempts"}, 1]}]}
    return {"$cond": [is_open, {"$concatArrays": [earlier, [closed]]}, "$attempts"]}
