"""One run: its page, live fragment, DAG, a step's detail, a loop's iterations, actions.

The steps are the flow's manifest joined with the rows that exist (`stepview`), so a
step without a row shows as waiting. Actions (retry, cancel, signal, rerun) publish
the control message `flowctl` publishes and flash the worker's reply.
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from contracts.messages import (
    CancelRunMessage,
    RerunMessage,
    RetryStepMessage,
    SignalMessage,
)
from service.dashboard.auth import checked_form, current_user
from service.dashboard.context import Console, console
from service.dashboard.control import Outcome, flash, request_body
from service.dashboard.gantt import Gantt, gantt
from service.dashboard.graph import run_graph
from service.dashboard.masking import mask_mapping
from service.dashboard.pages import CLOCK, render
from service.dashboard.stepview import StepLine, step_lines
from service.engine.model import Flow, StepStatus
from service.engine.records import Event, RunRecord, Timer, Waiter
from service.engine.timeline import timeline

EVENTS_SHOWN: Final = 300
ITERATIONS_SHOWN: Final = 50
LARGEST_PAYLOAD: Final = 64 * 1024
"""Characters of a signal payload the form accepts."""


@dataclass(frozen=True, slots=True)
class RunView:
    run: RunRecord
    flow: Flow | None
    lines: list[StepLine]
    events: list[Event]
    timers: list[Timer]
    waiters: list[Waiter]
    derived: list[RunRecord]
    gantt: Gantt
    children: list[RunRecord]
    place: int | None
    """A Queued run's place in its key's queue."""

    @property
    def failed(self) -> list[StepLine]:
        return [line for line in self.lines if line.status == StepStatus.FAILED]

    @property
    def waiting_signals(self) -> list[Waiter]:
        return [w for w in self.waiters if w.delivered_at is None]


async def load(hub: Console, run_id: str) -> RunView:
    run = await hub.browse.run(run_id)
    if run is None:
        raise HTTPException(404, "No such run.")
    async with asyncio.TaskGroup() as reads:
        flow = reads.create_task(hub.flow(run.flow_id))
        rows = reads.create_task(hub.browse.rows(run_id, values=False))
        templates = reads.create_task(hub.browse.template_counts(run_id))
        stored = reads.create_task(hub.browse.events(run_id, limit=EVENTS_SHOWN))
        timers = reads.create_task(hub.browse.timers(run_id))
        waiters = reads.create_task(hub.browse.waiters(run_id))
        derived = reads.create_task(hub.browse.derived(run_id))
        children = reads.create_task(hub.browse.children(run_id))
        place = reads.create_task(hub.browse.queue_place(run))
    lines = step_lines(flow.result(), rows.result(), templates.result())
    now = CLOCK.now()
    events = timeline(run, stored.result(), rows.result())[-EVENTS_SHOWN:]
    return RunView(
        run=run,
        flow=flow.result(),
        lines=lines,
        events=events,
        timers=timers.result(),
        waiters=waiters.result(),
        derived=derived.result(),
        gantt=gantt(run, lines, timers.result(), now),
        children=children.result(),
        place=place.result(),
    )


async def run_page(request: Request) -> Response:
    view = await load(console(request), request.path_params["run_id"])
    fragment = bool(request.query_params.get("fragment"))
    return render(
        request,
        "_run_live.html" if fragment else "run.html",
        view=view,
        run=view.run,
        headers=mask_mapping(dict(view.run.headers)),
    )


async def run_graph_json(request: Request) -> Response:
    """`GET /runs/{run}/graph`: the DAG with statuses (what a live page refetches)."""
    hub = console(request)
    run_id = request.path_params["run_id"]
    run = await hub.browse.run(run_id)
    if run is None:
        raise HTTPException(404, "No such run.")
    async with asyncio.TaskGroup() as reads:
        flow = reads.create_task(hub.flow(run.flow_id))
        rows = reads.create_task(hub.browse.rows(run_id, values=False))
        templates = reads.create_task(hub.browse.template_counts(run_id))
    lines = step_lines(flow.result(), rows.result(), templates.result())
    return JSONResponse(run_graph(lines, flow.result()))


async def step_detail(request: Request) -> Response:
    """`GET /runs/{run}/steps/{key}`: one step in full, as a fragment."""
    hub = console(request)
    run_id, key = request.path_params["run_id"], request.path_params["key"]
    run = await hub.browse.run(run_id)
    if run is None:
        raise HTTPException(404, "No such run.")
    row, flow, waiters = await asyncio.gather(
        hub.browse.row(run_id, key), hub.flow(run.flow_id), hub.browse.waiters(run_id)
    )
    step = flow.find(key) if flow is not None else None
    if row is None and step is None:
        raise HTTPException(404, "No such step.")
    return render(
        request,
        "_step.html" if request.query_params.get("fragment") else "step.html",
        run=run,
        key=key,
        row=row,
        step=step,
        waiter=next((w for w in waiters if w.step_key == key), None),
    )


async def loop_iterations(request: Request) -> Response:
    """`GET /runs/{run}/loops/{key}?start=N`: a page of a ForEach's iterations."""
    hub = console(request)
    run_id, key = request.path_params["run_id"], request.path_params["key"]
    try:
        start = max(int(request.query_params.get("start", "0")), 0)
    except ValueError:
        start = 0
    run = await hub.browse.run(run_id)
    if run is None:
        raise HTTPException(404, "No such run.")
    row, flow = await asyncio.gather(hub.browse.row(run_id, key), hub.flow(run.flow_id))
    if row is None:
        raise HTTPException(404, "No such loop.")
    total = row.loop.total if row.loop is not None else 0
    indexes = range(start, min(start + ITERATIONS_SHOWN, total))
    keys = [f"{key}.{i}" for i in indexes]
    body = _body_keys(flow, key)
    children = [f"{key}.{i}.{child}" for i in indexes for child in body]
    found = await hub.browse.rows_by_key(run_id, [*keys, *children])
    by_key = {r.key: r for r in found}
    return render(
        request,
        "_iterations.html",
        run=run,
        key=key,
        indexes=list(indexes),
        body=body,
        rows=by_key,
        total=total,
        start=start,
        shown=ITERATIONS_SHOWN,
    )


def _body_keys(flow: Flow | None, key: str) -> list[str]:
    step = flow.find(key) if flow is not None else None
    return list(step.steps) if step is not None else []


# -- actions -------------------------------------------------------------------


async def _act(request: Request, kind: str, body: BaseModel) -> Outcome:
    outcome = await console(request).controls.ask(current_user(request), kind, body)
    flash(request, outcome)
    return outcome


def _back(run_id: str) -> RedirectResponse:
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


async def retry(request: Request) -> Response:
    form = await checked_form(request)
    run_id = request.path_params["run_id"]
    body = request_body(RetryStepMessage, run_id=run_id, step_key=form.get("step_key"))
    await _act(request, "retry_step", body)
    return _back(run_id)


async def cancel(request: Request) -> Response:
    form = await checked_form(request)
    run_id = request.path_params["run_id"]
    reason = str(form.get("reason", "")).strip() or None
    await _act(
        request,
        "cancel_run",
        request_body(CancelRunMessage, run_id=run_id, reason=reason),
    )
    return _back(run_id)


async def signal(request: Request) -> Response:
    form = await checked_form(request)
    run_id = request.path_params["run_id"]
    text = str(form.get("payload", "")).strip()
    if len(text) > LARGEST_PAYLOAD:
        flash(request, Outcome.failed("signal", ValueError("the payload is too large")))
        return _back(run_id)
    try:
        payload = json.loads(text) if text else None
    except ValueError as exc:
        flash(
            request, Outcome.failed("signal", ValueError(f"payload: not JSON ({exc})"))
        )
        return _back(run_id)
    body = request_body(
        SignalMessage, run_id=run_id, signal=form.get("name"), payload=payload
    )
    await _act(request, "signal", body)
    return _back(run_id)


async def rerun(request: Request) -> Response:
    await checked_form(request)
    run_id = request.path_params["run_id"]
    outcome = await _act(request, "rerun", request_body(RerunMessage, run_id=run_id))
    return _back(outcome.run_id if outcome.ok and outcome.run_id else run_id)
