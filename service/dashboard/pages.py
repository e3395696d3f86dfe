"""How a page is rendered: the Jinja environment, its filters, the common context.

Autoescaping is on for every template and `StrictUndefined` catches a misspelt name;
user data (inputs, outputs, errors, keys, flow names) only ever reaches a page as
escaped text or as an attribute value, never as script. Every page gets the user, the
CSRF token for its forms, the flash message of the last action and `now`.
"""

from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from service.adapters.clock import SystemClock
from service.dashboard import formatting
from service.dashboard.auth import Role, User, csrf_token
from service.dashboard.control import take_flash
from service.dashboard.stepview import ordered_counts

HERE: Final = Path(__file__).parent
CLOCK: Final = SystemClock()

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(
    utc=formatting.utc,
    iso=formatting.iso,
    ago=formatting.ago,
    duration=formatting.duration,
    number=formatting.number,
    pretty=formatting.pretty,
    compact=formatting.compact,
    short=formatting.short,
    headline=formatting.headline,
    st=formatting.status_class,
    counts=ordered_counts,
)


def render(
    request: Request, name: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The template `name` with the common context; fragments skip the flash."""
    user = getattr(request.state, "user", None)
    operator = isinstance(user, User) and user.may(Role.OPERATOR)
    fragment = name.startswith("_")
    page = environment.get_template(name).render(
        request=request,
        user=user,
        operator=operator,
        csrf=csrf_token(request),
        flash=None if fragment else take_flash(request),
        now=CLOCK.now(),
        **context,
    )
    return HTMLResponse(page, status_code=status_code)
