"""Signing in and out: the form, the password check, the session, the log lines.

A failed sign-in says only "wrong name or password" and is logged with the name
(never the password); past `FAILURES_ALLOWED` failures of one name within a few
minutes, that name is refused without a password check until the window passes.
"""

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from structlog.typing import FilteringBoundLogger

from service.dashboard.auth import (
    check_csrf,
    safe_next,
    sign_in,
    signed_in,
    verify,
)
from service.dashboard.context import console
from service.dashboard.pages import render

log: FilteringBoundLogger = structlog.get_logger()


async def login_page(request: Request) -> Response:
    hub = console(request)
    target = safe_next(request.query_params.get("next"))
    if signed_in(request, hub.users, ttl=request.app.state.session_ttl) is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", next=target, error=None, login_name="")


async def login(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    hub = console(request)
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))
    target = safe_next(str(form.get("next", "")))
    if hub.throttle.blocked(name):
        log.warning("dashboard_sign_in_throttled", user=name)
        return render(
            request,
            "login.html",
            status_code=429,
            next=target,
            login_name=name,
            error="Too many failed attempts: wait a few minutes.",
        )
    user = await verify(hub.users, name, password)
    if user is None:
        hub.throttle.failed(name)
        log.warning("dashboard_sign_in_refused", user=name)
        return render(
            request,
            "login.html",
            status_code=401,
            next=target,
            login_name=name,
            error="Wrong name or password.",
        )
    hub.throttle.forget(name)
    sign_in(request, user)
    log.info("dashboard_signed_in", user=user.name, role=str(user.role))
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    user = getattr(request.state, "user", None)
    request.session.clear()
    if user is not None:
        log.info("dashboard_signed_out", user=user.name)
    return RedirectResponse("/login", status_code=303)
