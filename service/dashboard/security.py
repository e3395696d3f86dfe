"""The dashboard's outer guards, as plain ASGI middleware: headers and sign-in.

`SecurityHeaders` puts a strict Content-Security-Policy (scripts and styles from this
origin only: no inline script, no inline style, no eval) and the usual hardening
headers on every response, and keeps pages out of caches. `RequireSignIn` lets only
the sign-in page, static files and the health probe through without a session.
"""

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.dashboard.auth import User, signed_in

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
PUBLIC: Final = ("/login", "/healthz", "/readyz")
STATIC: Final = "/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope["path"]).startswith(STATIC)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                headers["cache-control"] = (
                    "private, max-age=300" if static else "no-store"
                )
            await send(message)

        await self.app(scope, receive, with_headers)


class RequireSignIn:
    """Without a live session: pages redirect to /login, anything else gets 401."""

    def __init__(self, app: ASGIApp, *, users: Mapping[str, User], ttl: float) -> None:
        self.app = app
        self.users = users
        self.ttl = ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path in PUBLIC or path.startswith(STATIC):
            await self.app(scope, receive, send)
            return
        user = signed_in(HTTPConnection(scope), self.users, ttl=self.ttl)
        if user is not None:
            scope.setdefault("state", {})["user"] = user
            await self.app(scope, receive, send)
            return
        if scope["method"] in {"GET", "HEAD"} and not path.startswith("/live"):
            query = scope.get("query_string", b"").decode("latin-1")
            back = path + (f"?{query}" if query else "")
            target = "/login?" + urlencode({"next": back})
            response: Response = RedirectResponse(target, status_code=303)
        else:
            response = PlainTextResponse("Sign in first.\n", status_code=401)
        await response(scope, receive, send)
