"""The dashboard's composition root: settings, MongoDB, routes, middleware, uvicorn.

`main(settings)` is `flowctl dashboard`: a separate process that reads MongoDB and
publishes control messages; it never executes a step. It refuses to start without
users (`DASHBOARD_USERS`). One change stream feeds the live pages while it runs.
"""

import asyncio
import contextlib
import secrets
import signal
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from structlog.typing import FilteringBoundLogger

from service import operations
from service.adapters.mongo.browse import RunBrowser
from service.adapters.mongo.changes import follow_changes
from service.adapters.mongo.client import MongoStores, connect
from service.dashboard import flows, letters, run, runs, signin
from service.dashboard.auth import User, parse_users
from service.dashboard.context import Console
from service.dashboard.control import Controls
from service.dashboard.live import live
from service.dashboard.pages import HERE, render
from service.dashboard.security import RequireSignIn, SecurityHeaders
from service.errors import UnavailableError
from service.logs import configure_logging
from service.settings import Settings

log: FilteringBoundLogger = structlog.get_logger()

SESSION_COOKIE: Final = "flow_dashboard"
GRACEFUL_SHUTDOWN: Final = 3
"""Seconds open live streams get to end when the process is told to stop."""
READY_TIMEOUT: Final = 2.0


class DashboardSettingsError(ValueError):
    """A dashboard setting that makes no sense; the dashboard refuses to start."""


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    host: str
    port: int
    users: Mapping[str, User]
    secret_key: str
    session_ttl: timedelta
    secure_cookies: bool
    target: operations.Target


def config_from(settings: Settings) -> DashboardConfig:
    """The dashboard's configuration; DashboardSettingsError if it can't start."""
    try:
        users = parse_users(settings.dashboard_users.get_secret_value())
    except ValueError as exc:
        raise DashboardSettingsError(str(exc)) from None
    if not users:
        raise DashboardSettingsError(
            "DASHBOARD_USERS is empty: nobody could sign in (`flowctl dashboard-user "
            "NAME operator` prints an entry)"
        )
    key = settings.dashboard_secret_key.get_secret_value()
    if key and len(key) < 32:
        raise DashboardSettingsError("DASHBOARD_SECRET_KEY needs 32 characters or more")
    return DashboardConfig(
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        users=users,
        secret_key=key or secrets.token_urlsafe(48),
        session_ttl=settings.dashboard_session_ttl,
        secure_cookies=settings.dashboard_secure_cookies,
        target=operations.Target(
            amqp_url=settings.amqp_url.get_secret_value(),
            prefix=settings.amqp_prefix,
            mongodb_url=settings.mongodb_url.get_secret_value(),
            database=settings.mongodb_database,
            mongodb_timeout=settings.mongodb_timeout,
        ),
    )


def build_app(config: DashboardConfig, stores: MongoStores) -> Starlette:
    """The ASGI app on open `stores` (the caller closes them)."""
    console = Console(
        stores=stores,
        browse=RunBrowser(stores.database),
        controls=Controls(config.target),
        target=config.target,
        users=config.users,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(follow_changes(stores.database, console.hub.notify, stop))
            log.info("dashboard_started", host=config.host, port=config.port)
            try:
                yield
            finally:
                stop.set()

    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=config.secret_key,
                session_cookie=SESSION_COOKIE,
                max_age=int(config.session_ttl.total_seconds()),
                same_site="lax",
                https_only=config.secure_cookies,
            ),
            Middleware(
                RequireSignIn,
                users=config.users,
                ttl=config.session_ttl.total_seconds(),
            ),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _crash},
        lifespan=lifespan,
    )
    app.state.console = console
    app.state.session_ttl = config.session_ttl.total_seconds()
    return app


def routes() -> list[Route | Mount]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/", lambda _: RedirectResponse("/runs", status_code=303)),
        Route("/healthz", lambda _: PlainTextResponse("ok\n")),
        Route("/readyz", _ready),
        Route("/login", signin.login_page, methods=get),
        Route("/login", signin.login, methods=post),
        Route("/logout", signin.logout, methods=post),
        Route("/live", live),
        Route("/runs", runs.runs_page),
        Route("/runs/bulk/confirm", runs.bulk_confirm, methods=post),
        Route("/runs/bulk", runs.bulk_act, methods=post),
        Route("/runs/{run_id}", run.run_page),
        Route("/runs/{run_id}/graph", run.run_graph_json),
        Route("/runs/{run_id}/steps/{key:path}", run.step_detail),
        Route("/runs/{run_id}/loops/{key:path}", run.loop_iterations),
        Route("/runs/{run_id}/retry", run.retry, methods=post),
        Route("/runs/{run_id}/cancel", run.cancel, methods=post),
        Route("/runs/{run_id}/signal", run.signal, methods=post),
        Route("/runs/{run_id}/rerun", run.rerun, methods=post),
        Route("/flows", flows.flows_page),
        Route("/flows/{flow_id}", flows.flow_page),
        Route("/flows/{flow_id}/graph", flows.flow_graph_json),
        Route("/flows/{flow_id}/{switch:str}", flows.switch_flow, methods=post),
        Route("/schedules", flows.schedules_page),
        Route(
            "/schedules/{flow_id}/{trigger}/{action}",
            flows.schedule_action,
            methods=post,
        ),
        Route("/dead-letters", letters.letters_page),
        Route("/dead-letters/replay", letters.replay, methods=post),
        Route("/dead-letters/purge", letters.purge, methods=post),
        Route("/dead-letters/{letter_id:path}", letters.letter_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


async def _ready(request: Request) -> Response:
    hub: Console = request.app.state.console
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await hub.stores.ping()
    except (UnavailableError, TimeoutError):
        return PlainTextResponse("MongoDB is unreachable\n", status_code=503)
    return PlainTextResponse("ok\n")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Server error."
    if request.url.path.startswith(("/static", "/live")) or _fragment(request):
        return PlainTextResponse(f"{detail}\n", status_code=status)
    return render(
        request, "error.html", status_code=status, status=status, detail=detail
    )


async def _crash(request: Request, exc: Exception) -> Response:
    outage = isinstance(exc, UnavailableError) or (
        isinstance(exc, ExceptionGroup) and exc.subgroup(UnavailableError) is not None
    )
    if outage:
        log.warning("dashboard_store_unavailable", path=request.url.path)
        detail = "MongoDB is unreachable right now; try again in a moment."
        return await _http_error(request, HTTPException(503, detail))
    log.error("dashboard_crashed", path=request.url.path, exc_info=exc)
    return await _http_error(request, HTTPException(500, "Server error (logged)."))


def _fragment(request: Request) -> bool:
    return bool(request.query_params.get("fragment")) or request.url.path.endswith(
        "/graph"
    )


def main(settings: Settings) -> None:
    """Serve the dashboard until SIGTERM or SIGINT.

    Raises:
        DashboardSettingsError: before anything starts, if it can't.
    """
    config = config_from(settings)
    configure_logging(settings.log_level, json=settings.log_json)
    asyncio.run(serve(config))


class _Server(uvicorn.Server):
    """uvicorn, stopped by SIGTERM or SIGINT through the event loop, exiting 0.

    uvicorn's own handlers raise the signal again once it has stopped, which ends
    the process by that signal: a clean stop would look like a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.handle_exit, signum, None)
        try:
            yield
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


async def serve(config: DashboardConfig) -> None:
    stores = connect(
        config.target.mongodb_url,
        config.target.database,
        server_selection_timeout=config.target.mongodb_timeout,
        app_name="flow-dashboard",
    )
    async with stores:
        server = _Server(
            uvicorn.Config(
                build_app(config, stores),
                host=config.host,
                port=config.port,
                log_config=None,
                proxy_headers=False,
                server_header=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
            )
        )
        await server.serve()
