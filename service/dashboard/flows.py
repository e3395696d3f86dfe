"""Flows and schedules: switches, a flow's DAG and manifest, cron and next fires.

Reads come from the stored flows and schedules; every change is a control message a
worker answers (`enable_flow`, `disable_flow`, `pause_schedule`, `resume_schedule`,
`trigger_schedule_now`, `set_cron`).
"""

from datetime import datetime
from typing import Final

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from contracts.messages import (
    DisableFlowMessage,
    EnableFlowMessage,
    PauseScheduleMessage,
    ResumeScheduleMessage,
    SetCronMessage,
    TriggerScheduleNowMessage,
)
from service.dashboard.auth import checked_form, current_user
from service.dashboard.context import console
from service.dashboard.control import Outcome, flash, request_body
from service.dashboard.graph import flow_graph
from service.dashboard.pages import CLOCK, render
from service.dashboard.stepview import conditions_text, dag_order
from service.engine.cron import next_fire
from service.engine.records import Schedule
from service.flow_views import FlowView

NEXT_FIRES: Final = 5
SCHEDULE_ACTIONS: Final[dict[str, tuple[str, type[BaseModel]]]] = {
    "pause": ("pause_schedule", PauseScheduleMessage),
    "resume": ("resume_schedule", ResumeScheduleMessage),
    "trigger": ("trigger_schedule_now", TriggerScheduleNowMessage),
}


async def _view(request: Request) -> FlowView:
    flow_id = request.path_params["flow_id"]
    for view in await console(request).flows():
        if view.record.flow_id == flow_id:
            return view
    raise HTTPException(404, "No such flow.")


async def flows_page(request: Request) -> Response:
    return render(request, "flows.html", flows=await console(request).flows())


async def flow_page(request: Request) -> Response:
    view = await _view(request)
    steps = []
    if view.flow is not None:
        steps = [
            (key, view.flow.steps[key], conditions_text(view.flow.steps[key]))
            for key in dag_order(view.flow.steps)
        ]
    return render(
        request,
        "flow.html",
        view=view,
        steps=steps,
        manifest=dict(view.record.manifest),
        fires={s.job_id: next_fires(s, CLOCK.now()) for s in view.schedules},
    )


async def flow_graph_json(request: Request) -> Response:
    view = await _view(request)
    if view.flow is None:
        raise HTTPException(404, "The stored manifest can't be read.")
    return JSONResponse(flow_graph(view.flow))


def next_fires(schedule: Schedule, now: datetime) -> list[datetime]:
    """The next NEXT_FIRES fire times of a schedule (none while paused)."""
    if schedule.paused:
        return []
    fires: list[datetime] = []
    at = now
    try:
        for _ in range(NEXT_FIRES):
            at = next_fire(schedule.effective_cron, after=at)
            fires.append(at)
    except ValueError:
        return fires
    return fires


async def schedules_page(request: Request) -> Response:
    views = await console(request).flows()
    now = CLOCK.now()
    rows = [(v, s, next_fires(s, now)) for v in views for s in v.schedules]
    return render(request, "schedules.html", rows=rows)


async def _ask(request: Request, kind: str, body: BaseModel) -> None:
    outcome: Outcome = await console(request).controls.ask(
        current_user(request), kind, body
    )
    flash(request, outcome)


async def switch_flow(request: Request) -> Response:
    """`POST /flows/{id}/enable` or `/disable`."""
    await checked_form(request)
    view = await _view(request)
    if request.path_params["switch"] not in {"enable", "disable"}:
        raise HTTPException(404, "Enable or disable only.")
    enable = request.path_params["switch"] == "enable"
    model = EnableFlowMessage if enable else DisableFlowMessage
    kind = "enable_flow" if enable else "disable_flow"
    await _ask(request, kind, request_body(model, flow=view.record.flow_id))
    back = request.headers.get("referer", "")
    target = "/flows" if back.endswith("/flows") else f"/flows/{view.record.flow_id}"
    return RedirectResponse(target, status_code=303)


async def schedule_action(request: Request) -> Response:
    """`POST /schedules/{flow_id}/{trigger}/{pause|resume|trigger|cron}`."""
    form = await checked_form(request)
    view = await _view(request)
    trigger = request.path_params["trigger"]
    action = request.path_params["action"]
    fields = {"flow": view.record.flow_id, "trigger_key": trigger}
    if action == "cron":
        cron = str(form.get("cron", "")).strip()
        clear = form.get("clear") is not None or not cron
        try:
            body = request_body(SetCronMessage, **fields, cron=None if clear else cron)
        except HTTPException as exc:
            flash(request, Outcome.failed("set_cron", ValueError(exc.detail)))
        else:
            await _ask(request, "set_cron", body)
    elif action in SCHEDULE_ACTIONS:
        kind, model = SCHEDULE_ACTIONS[action]
        await _ask(request, kind, request_body(model, **fields))
    else:
        raise HTTPException(404, "No such schedule action.")
    return RedirectResponse("/schedules", status_code=303)
