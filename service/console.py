"""Terminal text for `flowctl`: tables, colours, durations, shortened values, progress.

Everything but `progress` is a pure function from values to text. Colour comes from
`click.style`; the caller prints with `click.echo`, which drops it again where the
output is not a terminal (or the context says no colour).
"""

import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, TextIO

import click

if TYPE_CHECKING:
    import asyncio

Styler = Callable[[str], str]

ELLIPSIS: Final = "…"
_STATUS_COLOURS: Final[Mapping[str, tuple[str, bool]]] = {
    # status -> (colour, bold)
    "succeeded": ("green", False),
    "failed": ("red", True),
    "timedout": ("red", False),
    "cancelled": ("magenta", False),
    "running": ("cyan", False),
    "queued": ("blue", False),
    "pending": ("yellow", False),
    "skipped": ("bright_black", False),
    "accepted": ("green", False),
    "delivered": ("green", False),
    "duplicate": ("yellow", False),
    "disabled": ("yellow", False),
    "refused": ("red", False),
    "not_found": ("red", False),
    "invalid": ("red", False),
    "error": ("red", True),
}
_SPINNER: Final = "|/-\\"


class ColourChoice:
    """The colour choice of this command line (`--color`/`--no-color`, NO_COLOR).

    Kept here because an error is reported after click's context is gone.
    """

    chosen: bool | None = None

    @classmethod
    def allows(cls) -> bool | None:
        """False when colour was turned off; None lets each stream decide."""
        if cls.chosen is not None:
            return cls.chosen
        return False if os.environ.get("NO_COLOR") else None


def status(text: str, *, like: str | None = None) -> str:
    """A run, step or reply status in its colour (unknown ones stay plain).

    `like` colours `text` as that status instead (`status("no", like="failed")`).
    """
    found = _STATUS_COLOURS.get((like or text).lower())
    if found is None:
        return text
    colour, bold = found
    return click.style(text, fg=colour, bold=bold)


def dim(text: str) -> str:
    return click.style(text, dim=True)


def bold(text: str) -> str:
    return click.style(text, bold=True)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    styles: Mapping[int, Styler] | None = None,
) -> str:
    """Rows under bold headers, columns padded to their widest cell.

    `styles` maps a column index to a function that colours a cell; widths are taken
    from the plain text, so colour never breaks the alignment. Cells are single lines.
    """
    plain = [[_one_line(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in plain:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    chosen = styles or {}
    lines = [_line(list(headers), widths, dict.fromkeys(range(len(headers)), bold))]
    lines.extend(_line(row, widths, chosen) for row in plain)
    return "\n".join(lines)


def _line(cells: list[str], widths: list[int], styles: Mapping[int, Styler]) -> str:
    out: list[str] = []
    last = len(cells) - 1
    for i, cell in enumerate(cells):
        styler = styles.get(i)
        shown = styler(cell) if styler is not None and cell else cell
        padding = "" if i == last else " " * (widths[i] - len(cell))
        out.append(shown + padding)
    return "  ".join(out).rstrip()


def fields(pairs: Iterable[tuple[str, str]]) -> str:
    """`name  value` lines, names padded to the longest one (a record's header)."""
    items = [(name, value) for name, value in pairs]
    width = max((len(name) for name, _ in items), default=0)
    return "\n".join(
        f"{dim(name.ljust(width))}  {value}".rstrip() for name, value in items
    )


def _one_line(text: str) -> str:
    return " ".join(text.split()) if ("\n" in text or "\r" in text) else text


def shorten(text: str | None, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis if longer."""
    if not text:
        return ""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    return line[: max(width - 1, 0)] + ELLIPSIS


def compact_json(value: object) -> str:
    """A JSON value on one line (`null` for None); non-JSON values as text."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def seconds(duration: timedelta | float) -> str:
    """A duration for people: 850ms, 3.2s, 4m12s, 2h03m, 3d04h."""
    total = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if total < 0:
        total = 0.0
    if total < 1:
        return f"{total * 1000:.0f}ms"
    if total < 60:
        return f"{total:.1f}s"
    whole = int(total)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d{whole % 86_400 // 3600:02d}h"


def elapsed(start: datetime | None, end: datetime | None, *, now: datetime) -> str:
    """How long from `start` to `end`; still going (`+`) up to `now` if no end."""
    if start is None:
        return ""
    if end is None:
        return seconds(now - start) + "+"
    return seconds(end - start)


def instant(at: datetime | None) -> str:
    """A UTC instant to the second: `2026-05-17 10:22:03`."""
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def clock_time(at: datetime) -> str:
    """A UTC time of day to the millisecond: `10:22:03.125`."""
    moment = at.astimezone(UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


class Progress:
    """One line on a terminal's stderr, redrawn while a wait lasts: `label ... 3s`."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._note = ""
        self._stream = stream
        self._started = time.monotonic()
        self._frame = 0

    def update(self, note: str) -> None:
        """Show `note` after the label from the next redraw on."""
        self._note = note

    def draw(self) -> None:
        spent = seconds(time.monotonic() - self._started)
        spinner = _SPINNER[self._frame % len(_SPINNER)]
        self._frame += 1
        text = f"{spinner} {self._label} {self._note} {spent}".replace("  ", " ")
        self._stream.write("\r\x1b[K" + dim(text))
        self._stream.flush()

    def clear(self) -> None:
        self._stream.write("\r\x1b[K")
        self._stream.flush()

    async def run_until(self, stop: "asyncio.Event", *, every: float = 0.2) -> None:
        import asyncio  # only a command that waits draws; --help needs no event loop

        while not stop.is_set():
            self.draw()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stop.wait()
        self.clear()


@contextlib.asynccontextmanager
async def progress(
    label: str, *, stream: TextIO | None = None
) -> AsyncIterator[Progress]:
    """A `Progress` redrawn on stderr while the block runs, if stderr is a terminal.

    Elsewhere (a pipe, a file, a test) nothing is drawn, so stderr keeps only errors.
    """
    target = stream or sys.stderr
    meter = Progress(label, target)
    # Redrawing a line takes ANSI control codes: none without a terminal or colour.
    if not target.isatty() or ColourChoice.allows() is False:
        yield meter
        return
    import asyncio  # as in `run_until`

    stop = asyncio.Event()
    # A plain task, awaited below: a TaskGroup would wrap the block's own errors.
    drawing = asyncio.create_task(meter.run_until(stop))
    try:
        yield meter
    finally:
        stop.set()
        await drawing
