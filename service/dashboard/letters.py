"""Dead letters: list by reason and kind, show one, replay one or a filtered set, purge.

The queue is read the way `flowctl dlq` reads it (every letter taken, then given back
in order), one read at a time in this process. Showing a letter does not replay or
remove it. Replay and purge are operator actions, logged with the user.
"""

import json
from collections import Counter
from typing import Final

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from structlog.typing import FilteringBoundLogger

from service import operations
from service.adapters.amqp.deadletters import DeadLetter, Selection
from service.dashboard.auth import checked_form, current_user
from service.dashboard.context import console
from service.dashboard.control import Outcome, flash
from service.dashboard.masking import mask_json, mask_mapping, mask_text
from service.dashboard.pages import render
from service.errors import FlowError

log: FilteringBoundLogger = structlog.get_logger()

SHOWN: Final = 500
"""Letters read for the list (the count covers the whole queue)."""
LONGEST_BODY: Final = 64 * 1024


def _choice(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


async def letters_page(request: Request) -> Response:
    reason, kind = _choice(request, "reason"), _choice(request, "kind")
    chosen = Selection(reason=reason, kind=kind)
    hub = console(request)
    error = None
    letters: list[DeadLetter] = []
    total = 0
    name = hub.target.names.dead
    try:
        async with hub.letters, operations.dead_letters(hub.target) as queue:
            letters, total = await queue.browse(SHOWN)
    except FlowError as exc:
        error = str(exc)
    return render(
        request,
        "letters.html",
        queue=name,
        letters=[one for one in letters if chosen.wants(one)],
        total=total,
        read=len(letters),
        reasons=Counter(one.reason or "" for one in letters).most_common(),
        kinds=Counter(one.type or "" for one in letters).most_common(),
        reason=reason,
        kind=kind,
        error=error,
    )


async def letter_page(request: Request) -> Response:
    letter_id = request.path_params["letter_id"]
    hub = console(request)
    try:
        async with hub.letters, operations.dead_letters(hub.target) as queue:
            found = await queue.find(letter_id)
    except FlowError as exc:
        raise HTTPException(503, str(exc)) from None
    if not found:
        raise HTTPException(404, "No such dead letter (replayed or purged?).")
    letter = found[0]
    return render(
        request,
        "letter.html",
        letter=letter,
        headers=mask_mapping(dict(letter.headers)),
        properties=mask_mapping(dict(letter.properties)),
        body=body_text(letter.body),
        copies=len(found),
    )


def body_text(body: bytes) -> str:
    """The body for a page: masked, indented JSON; else text; else hex."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"(not UTF-8, {len(body)} bytes) {body[:256].hex(' ')}"
    try:
        shown = json.dumps(mask_json(json.loads(text)), indent=2, ensure_ascii=False)
    except ValueError:
        shown = mask_text(text)
    if len(shown) > LONGEST_BODY:
        return f"{shown[:LONGEST_BODY]}\n… ({len(shown) - LONGEST_BODY:,} more)"
    return shown or "(empty)"


async def replay(request: Request) -> Response:
    """`POST /dead-letters/replay`: one letter (`letter_id`) or those of a filter."""
    form = await checked_form(request)
    user = current_user(request)
    letter_id = str(form.get("letter_id", "")).strip() or None
    reason = str(form.get("reason", "")).strip() or None
    kind = str(form.get("kind", "")).strip() or None
    hub = console(request)
    log.info("dashboard_dlq_replay", user=user.name, letter_id=letter_id, reason=reason)
    try:
        async with hub.letters, operations.dead_letters(hub.target) as queue:
            done = await queue.replay(
                Selection(letter_id=letter_id, reason=reason, kind=kind)
            )
    except FlowError as exc:
        flash(request, Outcome.failed("replay", exc))
        return RedirectResponse("/dead-letters", status_code=303)
    ok = bool(done.replayed) and not done.failed
    text = f"{len(done.replayed)} replayed, {len(done.failed)} failed"
    if done.failed:
        text += f" (first: {done.failed[0][1]})"
    log.info(
        "dashboard_dlq_replayed",
        user=user.name,
        replayed=len(done.replayed),
        failed=len(done.failed),
    )
    flash(
        request,
        Outcome(ok=ok, kind="replay", status="done" if ok else "nothing", message=text),
    )
    return RedirectResponse("/dead-letters", status_code=303)


async def purge(request: Request) -> Response:
    """`POST /dead-letters/purge` (the form asks for confirmation)."""
    form = await checked_form(request)
    user = current_user(request)
    if form.get("confirm") != "purge":
        flash(
            request,
            Outcome.failed("purge", ValueError("type 'purge' to confirm the purge")),
        )
        return RedirectResponse("/dead-letters", status_code=303)
    hub = console(request)
    try:
        async with hub.letters, operations.dead_letters(hub.target) as queue:
            purged = await queue.purge()
    except FlowError as exc:
        flash(request, Outcome.failed("purge", exc))
        return RedirectResponse("/dead-letters", status_code=303)
    log.warning("dashboard_dlq_purged", user=user.name, purged=purged)
    flash(
        request,
        Outcome(
            ok=True, kind="purge", status="done", message=f"purged {purged} letters"
        ),
    )
    return RedirectResponse("/dead-letters", status_code=303)
