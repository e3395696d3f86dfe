"""Terminal text: aligned tables under colour, durations, shortening, progress."""

import asyncio
import io
import re
from datetime import UTC, datetime, timedelta, timezone

import click
import pytest

from service import console

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def test_a_table_pads_columns_to_the_widest_cell_and_trims_line_ends():
    text = console.table(
        ["KEY", "STATUS", "NOTE"],
        [["charge", "Failed", "declined"], ["ship", "Succeeded", ""]],
    )

    assert plain(text).splitlines() == [
        "KEY     STATUS     NOTE",
        "charge  Failed     declined",
        "ship    Succeeded",
    ]


def test_colour_does_not_move_the_columns():
    rows = [["a", "Failed", "x"], ["bb", "Succeeded", "y"]]

    coloured = console.table(["K", "STATUS", "N"], rows, styles={1: console.status})

    assert click.style("Failed", fg="red", bold=True) in coloured
    assert plain(coloured) == plain(console.table(["K", "STATUS", "N"], rows))


def test_a_cell_with_line_breaks_stays_on_one_line():
    text = plain(console.table(["A", "B"], [["one\ntwo", "x"]]))

    assert text.splitlines()[1] == "one two  x"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0ms"),
        (0.85, "850ms"),
        (3.21, "3.2s"),
        (59.9, "59.9s"),
        (252, "4m12s"),
        (7380, "2h03m"),
        (273_600, "3d04h"),
        (-5, "0ms"),
    ],
    ids=["zero", "ms", "s", "just-under-a-minute", "m", "h", "d", "negative"],
)
def test_durations_read_like_people_write_them(seconds: float, shown: str):
    assert console.seconds(seconds) == shown
    assert console.seconds(timedelta(seconds=seconds)) == shown


def test_elapsed_marks_what_is_still_going():
    start = datetime(2026, 5, 17, 10, 0, tzinfo=UTC)

    assert console.elapsed(start, start + timedelta(seconds=3), now=start) == "3.0s"
    assert console.elapsed(start, None, now=start + timedelta(seconds=90)) == "1m30s+"
    assert console.elapsed(None, None, now=start) == ""


@pytest.mark.parametrize(
    ("text", "width", "shown"),
    [
        (None, 5, ""),
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("one that is too long", 10, "one that …"),
        ("line\nbreaks  and   spaces", 40, "line breaks and spaces"),
    ],
    ids=["none", "fits", "exact", "cut", "collapsed"],
)
def test_shorten(text: str | None, width: int, shown: str):
    assert console.shorten(text, width) == shown


def test_instants_are_shown_in_utc():
    at = datetime(2026, 5, 17, 12, 22, 3, 125_000, tzinfo=UTC)
    elsewhere = at.astimezone(timezone(timedelta(hours=-7)))

    assert console.instant(elsewhere) == "2026-05-17 12:22:03"
    assert console.clock_time(at) == "12:22:03.125"
    assert console.instant(None) == ""


def test_a_status_can_borrow_the_colour_of_another():
    assert console.status("no", like="failed") == click.style("no", fg="red", bold=True)
    assert console.status("Whatever") == "Whatever"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_is_drawn_on_a_terminal_and_cleared_at_the_end():
    stream = Terminal()

    async with console.progress("waiting", stream=stream) as meter:
        meter.update("Running, 1/2 steps final,")
        await asyncio.sleep(0.45)

    text = plain(stream.getvalue())
    assert "waiting Running, 1/2 steps final," in text
    assert text.endswith("\r\x1b[K")


async def test_progress_draws_nothing_where_stderr_is_not_a_terminal():
    stream = io.StringIO()

    async with console.progress("waiting", stream=stream) as meter:
        meter.update("Running")
        await asyncio.sleep(0.25)

    assert stream.getvalue() == ""


async def test_an_error_in_the_block_comes_out_as_itself():
    with pytest.raises(LookupError):
        async with console.progress("waiting", stream=Terminal()):
            raise LookupError("nope")
