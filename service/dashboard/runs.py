"""The runs list: filters, counts by status, keyset pages, live fragment, bulk actions.

`GET /runs` is the page; `?fragment=1` is its live part (counts and table), which the
page fetches again on each change. Bulk retry and cancel take two steps: a
confirmation that says how many runs the filter selects now, then the action on at
most that many (the newest), so nothing beyond what was confirmed is touched.
"""

from collections import Counter
from typing import Final

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from contracts.messages import CancelRunMessage, RetryStepMessage
from service.adapters.mongo.browse import RunFilter
from service.dashboard import filters
from service.dashboard.auth import checked_form, current_user
from service.dashboard.context import console
from service.dashboard.control import Outcome, flash
from service.dashboard.pages import CLOCK, render
from service.engine.model import RunStatus

PAGE: Final = 50
BULK_LIMIT: Final = 1000
"""Runs one bulk action touches at most."""
BULK: Final = {
    "retry": (RunStatus.FAILED, "retry_step", "retry the failed steps of"),
    "cancel": (RunStatus.RUNNING, "cancel_run", "cancel"),
}
"""action -> (the status of the runs it applies to, the control kind, a verb)."""


async def runs_page(request: Request) -> Response:
    parsed = filters.parse(request.query_params, now=CLOCK.now())
    hub = console(request)
    flows = await hub.flows()
    page = await hub.browse.page(
        parsed.where, limit=PAGE, before=parsed.before, after=parsed.after
    )
    counts = await hub.browse.count_by_status(parsed.where)
    status = parsed.where.status
    total = counts[str(status)] if status is not None else sum(counts.values())
    name = "_runs_live.html" if request.query_params.get("fragment") else "runs.html"
    return render(
        request,
        name,
        parsed=parsed,
        page=page,
        counts=counts,
        total=total,
        flows=flows,
        flow_names={view.record.flow_id: view.record.name for view in flows},
        statuses=[str(s) for s in RunStatus],
        cursor_text=filters.cursor_text,
        live_query=parsed.query(
            **{
                k: v
                for k, v in request.query_params.items()
                if k in {"before", "after"}
            }
        ),
    )


def _bulk_action(form_action: object) -> tuple[RunStatus, str, str]:
    if not isinstance(form_action, str) or form_action not in BULK:
        raise HTTPException(400, "Unknown bulk action.")
    return BULK[form_action]


def _form_filter(form: dict[str, str], status: RunStatus) -> filters.Parsed:
    parsed = filters.parse(form, now=CLOCK.now())
    where = parsed.where
    narrowed = RunFilter(
        flow=where.flow,
        status=status,
        since=where.since,
        until=where.until,
        trigger=where.trigger,
        text=where.text,
    )
    return filters.Parsed(narrowed, parsed.values, parsed.problems)


async def bulk_confirm(request: Request) -> Response:
    """`POST /runs/bulk/confirm`: how many runs the action would touch, to confirm."""
    form = await checked_form(request)
    action = str(form.get("action", ""))
    status, _, verb = _bulk_action(action)
    parsed = _form_filter({k: str(v) for k, v in form.items()}, status)
    matching = await console(request).browse.count(parsed.where)
    return render(
        request,
        "confirm.html",
        action=action,
        verb=verb,
        status=str(status),
        parsed=parsed,
        matching=matching,
        expected=min(matching, BULK_LIMIT),
        limit=BULK_LIMIT,
        flow_names={
            v.record.flow_id: v.record.name for v in await console(request).flows()
        },
    )


async def bulk_act(request: Request) -> Response:
    """`POST /runs/bulk`: the confirmed action on at most `expected` runs."""
    form = await checked_form(request)
    action = str(form.get("action", ""))
    status, kind, _ = _bulk_action(action)
    parsed = _form_filter({k: str(v) for k, v in form.items()}, status)
    try:
        expected = min(int(str(form.get("expected", "0"))), BULK_LIMIT)
    except ValueError:
        raise HTTPException(400, "The confirmed count is not a number.") from None
    hub = console(request)
    run_ids = await hub.browse.run_ids(parsed.where, limit=max(expected, 0))
    bodies: list[BaseModel]
    try:
        if action == "retry":
            rows = await hub.browse.failed_steps(run_ids)
            bodies = [RetryStepMessage(run_id=r.run_id, step_key=r.key) for r in rows]
        else:
            reason = str(form.get("reason", "")).strip() or None
            bodies = [CancelRunMessage(run_id=i, reason=reason) for i in run_ids]
    except ValidationError:
        raise HTTPException(400, "A field of the request is invalid.") from None
    outcomes = (
        await hub.controls.ask_many(current_user(request), kind, bodies)
        if bodies
        else []
    )
    flash(request, _summary(kind, outcomes), note=_summary_text(kind, outcomes))
    return RedirectResponse(f"/runs?{parsed.query()}", status_code=303)


def _summary(kind: str, outcomes: list[Outcome]) -> Outcome:
    ok = bool(outcomes) and all(outcome.ok for outcome in outcomes)
    return Outcome(ok=ok, kind=kind, status="done" if ok else "partly", message="")


def _summary_text(kind: str, outcomes: list[Outcome]) -> str:
    if not outcomes:
        return f"{kind}: nothing to do (no run matches any more)"
    tally = Counter(outcome.status for outcome in outcomes)
    text = ", ".join(f"{n} {status}" for status, n in tally.most_common())
    first = next((o for o in outcomes if not o.ok), None)
    more = f"; first refusal: {first.message}" if first is not None else ""
    return f"{len(outcomes)} {kind} requests: {text}{more}"
