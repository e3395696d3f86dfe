"""Who may use the dashboard: users from settings, roles, sign-in, sessions, CSRF.

Users come from `DASHBOARD_USERS` as `name:role:argon2-hash` entries; passwords are
checked with argon2 (in a thread: it costs ~50 ms of CPU on purpose). A signed-in user
has a signed session cookie (Starlette's SessionMiddleware) holding the name, the time
of sign-in and a CSRF token; the role is read from the settings at every request, so
removing a user locks them out at the next restart. Every form that changes anything
carries the token (`check_csrf`), and a request from another origin is refused.
"""

import asyncio
import re
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import argon2
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request

PASSWORDS: Final = argon2.PasswordHasher()
_NAME: Final = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_ENTRIES: Final = re.compile(r"[;\n\r]+")
_DUMMY: Final = PASSWORDS.hash(secrets.token_hex(16))
"""Checked for an unknown name: a wrong name costs as long as a wrong password."""
SHORTEST_PASSWORD: Final = 12
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"
FAILURES_ALLOWED: Final = 5
FAILURE_WINDOW: Final = 300.0
"""Seconds: past FAILURES_ALLOWED failed sign-ins of one name in this window, the
name is refused until the oldest failure leaves the window."""


class Role(StrEnum):
    VIEWER = "viewer"
    """Reads every page."""
    OPERATOR = "operator"
    """Reads every page and acts (retry, cancel, signal, rerun, flows, DLQ...)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str

    def may(self, role: Role) -> bool:
        return self.role is Role.OPERATOR or role is Role.VIEWER


def parse_users(text: str) -> dict[str, User]:
    """The users of `DASHBOARD_USERS`.

    Raises:
        ValueError: an entry is malformed; the message names the entry (never its
            hash).
    """
    users: dict[str, User] = {}
    entries = [e.strip() for e in _ENTRIES.split(text) if e.strip()]
    for number, entry in enumerate(entries, start=1):
        name, _, rest = entry.partition(":")
        role, _, password_hash = rest.partition(":")
        where = f"DASHBOARD_USERS entry {number}"
        if not _NAME.match(name):
            raise ValueError(f"{where}: a name of 1-64 letters, digits or ._@+-")
        if role not in set(Role):
            raise ValueError(f"{where} ({name}): the role must be viewer or operator")
        try:
            argon2.extract_parameters(password_hash)
        except argon2.exceptions.InvalidHashError:
            raise ValueError(
                f"{where} ({name}): not an argon2 hash "
                "(make one with `flowctl dashboard-user NAME ROLE`)"
            ) from None
        if name in users:
            raise ValueError(f"{where}: '{name}' is listed twice")
        users[name] = User(name, Role(role), password_hash)
    return users


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)


async def verify(users: Mapping[str, User], name: str, password: str) -> User | None:
    """The user if `password` is theirs; None otherwise (in about the same time)."""
    user = users.get(name)
    digest = user.password_hash if user is not None else _DUMMY
    try:
        await asyncio.to_thread(PASSWORDS.verify, digest, password)
    except argon2.exceptions.VerificationError:
        return None
    return user


class Throttle:
    """Failed sign-ins per name within a sliding window."""

    def __init__(
        self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW
    ) -> None:
        self._allowed = allowed
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, name: str) -> bool:
        return len(self._recent(name)) >= self._allowed

    def failed(self, name: str) -> None:
        self._recent(name).append(time.monotonic())

    def forget(self, name: str) -> None:
        self._failures.pop(name, None)

    def _recent(self, name: str) -> deque[float]:
        found = self._failures.setdefault(name[:64], deque())
        while found and found[0] < time.monotonic() - self._window:
            found.popleft()
        return found


def sign_in(request: Request, user: User) -> None:
    """A new session for `user` (nothing of an earlier session is kept)."""
    request.session.clear()
    request.session.update(
        {"user": user.name, "since": time.time(), CSRF_FIELD: secrets.token_urlsafe(32)}
    )


def signed_in(
    connection: HTTPConnection, users: Mapping[str, User], *, ttl: float
) -> User | None:
    """The session's user, if the session is younger than `ttl` seconds."""
    session = connection.session
    user = users.get(str(session.get("user", "")))
    since = session.get("since")
    if user is None or not isinstance(since, int | float):
        return None
    if time.time() - since > ttl:
        return None
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use, also before sign-in)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def check_csrf(request: Request, form: FormData) -> None:
    """Refuse (403) a form without the session's token, or from another origin."""
    expected = request.session.get(CSRF_FIELD)
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if (
        not isinstance(expected, str)
        or not isinstance(given, str)
        or not secrets.compare_digest(expected.encode(), given.encode())
    ):
        raise HTTPException(403, "The form has expired or did not come from here.")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "A request from another site was refused.")


def current_user(request: Request) -> User:
    """The user `RequireSignIn` found for this request."""
    user = getattr(request.state, "user", None)
    if not isinstance(user, User):
        raise HTTPException(401, "Sign in first.")
    return user


async def checked_form(request: Request, role: Role = Role.OPERATOR) -> FormData:
    """The form of a request that changes something: role and CSRF token checked."""
    user = current_user(request)
    if not user.may(role):
        raise HTTPException(403, f"This needs the {role} role; you are a {user.role}.")
    form = await request.form()
    check_csrf(request, form)
    return form


def safe_next(target: str | None) -> str:
    """A local path to go to after sign-in; anything else goes to the runs."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
    ):
        return "/runs"
    return target
