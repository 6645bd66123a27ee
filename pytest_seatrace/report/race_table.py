"""The race table of the ``race summary``: one row per race, as wide as the terminal allows.

The table fits the terminal's width as pytest measures it (:func:`terminal_width`: ``COLUMNS``
honoured, under 40 taken as 80). When the full table is too wide, long test names are elided in
the middle first (down to :data:`NAME_ROOM` characters), then the table narrows one step at a
time, always in the order of :data:`NARROWING`; when even the narrowest table leaves no room for
a name, each race takes a line of its own for its name and one or more for its figures. A figure
is never cut and a row is never wider than the terminal. The HTML page's summary uses the full
table's columns (:data:`HEADERS`, :func:`row_cells`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_seatrace.core.document import RaceDoc, format_expect, verdict
from pytest_seatrace.report.wording import format_ms, rounds_run

HEADERS = (
    "test",
    "res × conc",
    "requests",
    "successes exp/act",
    "rejections",
    "errors",
    "unknown",
    "double",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "req/s",
    "spread ms",
    "mode",
    "result",
)
"""The full table's headers (the HTML report's summary uses all of them)."""

NAME_ROOM = 40
"""Test names are elided down to this many characters before a column is dropped."""
NAME_FLOOR = 16
"""Below this, the narrowest table gives way to one line per race name."""


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    red: bool = False
    green: bool = False
    bold: bool = False
    yellow: bool = False


def terminal_width() -> int:
    """The terminal's width as pytest measures it: ``COLUMNS`` first, under 40 taken as 80."""
    width = shutil.get_terminal_size(fallback=(80, 24)).columns
    return 80 if width < 40 else width


def _expected(race: RaceDoc) -> str:
    """Allowed winners over every resource and every round that ran."""
    return format_expect(race["expect"], len(race["resources"]) * (rounds_run(race) or 1))


def _sharded(race: RaceDoc) -> str:
    """`` × 2 shards`` for a race whose clients several processes shared."""
    shards = race.get("shards")
    return f" × {len(shards)} shards" if shards else ""


def _latency(race: RaceDoc, key: str) -> str:
    figures: Mapping[str, Any] = race["latency"]["all"]
    return format_ms(figures[key])


# -- columns -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    cell: Callable[[RaceDoc], str]
    right: bool = True
    """Numbers are right-aligned, words left-aligned."""


COLUMNS: dict[str, Column] = {
    "res": Column("res × conc", lambda r: f"{len(r['resources'])} × {r['concurrency']}{_sharded(r)}"),
    "requests": Column("requests", lambda r: str(r["requests"])),
    "successes": Column("successes exp/act", lambda r: f"{_expected(r)} / {r['wins']}"),
    "wins": Column("wins exp/act", lambda r: f"{_expected(r)} / {r['wins']}"),
    "rejections": Column("rejections", lambda r: str(r["rejections"])),
    "errors": Column("errors", lambda r: str(r["errors"])),
    "unknown": Column("unknown", lambda r: str(r["unknown"])),
    "err/unk": Column("err/unk", lambda r: f"{r['errors']}/{r['unknown']}"),
    "double": Column("double", lambda r: str(r["double_bookings"])),
    "p50": Column("p50 ms", lambda r: _latency(r, "med_ns")),
    "p95": Column("p95 ms", lambda r: _latency(r, "p95_ns")),
    "p99": Column("p99 ms", lambda r: _latency(r, "p99_ns")),
    "p50/p95/p99": Column(
        "p50/p95/p99 ms", lambda r: "/".join(_latency(r, k) for k in ("med_ns", "p95_ns", "p99_ns"))
    ),
    "max": Column("max ms", lambda r: _latency(r, "max_ns")),
    "rps": Column("req/s", lambda r: f"{r['rps']:.0f}"),
    "spread": Column("spread ms", lambda r: format_ms(r["spread"]["median_ns"], 2)),
    "mode": Column("mode", lambda r: r["mode"], right=False),
}

FULL: tuple[str, ...] = (
    "res",
    "requests",
    "successes",
    "rejections",
    "errors",
    "unknown",
    "double",
    "p50",
    "p95",
    "p99",
    "max",
    "rps",
    "spread",
    "mode",
)
"""The columns between ``test`` and ``result`` of the full table, in :data:`HEADERS` order."""

NARROWING: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("p50", "p95", "p99"), "p50/p95/p99"),
    (("max",), None),
    (("errors", "unknown"), "err/unk"),
    (("spread",), None),
    (("mode",), None),
    (("rps",), None),
    (("successes",), "wins"),
    (("p50/p95/p99",), "p95"),
    (("rejections",), None),
    (("res",), None),
    (("p95",), None),
)
"""The steps that narrow the table, applied in this order: the columns replaced, and the one
column that takes their place (``None``: dropped). ``requests``, the successes (expected /
actual), ``err/unk``, ``double`` and ``result`` always stay. Documented in docs/guide.md (Reports)."""


def layouts() -> list[tuple[str, ...]]:
    """The full table's columns, then those after each step of :data:`NARROWING`."""
    current = FULL
    out = [current]
    for replaced, merged in NARROWING:
        at = current.index(replaced[0])
        kept = tuple(key for key in current if key not in replaced)
        current = (*kept[:at], merged, *kept[at:]) if merged else kept
        out.append(current)
    return out


def row_cells(race: RaceDoc) -> list[str]:
    """The figures of one race, between its name and its verdict, in the full table's columns."""
    return [COLUMNS[key].cell(race) for key in FULL]


def own_name(nodeid: str) -> str:
    """The test's own name and parameters: what follows the last ``::``."""
    return nodeid[nodeid.rfind("::") + 2 :] if "::" in nodeid else nodeid


def elide_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut in the middle: ``tests/…::test_x[params]``.

    The test's own name and parameters (after the last ``::``) are kept whole, then as much of
    its file's path as fits, and the first directory when there is room for it. When the test's
    own name does not fit, it keeps both of its ends: ``test_one_win…row-7]``.
    """
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    own = own_name(text)
    if len(own) + 1 > width:  # the test's own name does not fit: keep its start and its end
        front = (width - 1) // 2
        return f"{own[:front]}…{own[len(own) - (width - 1 - front) :]}"
    slash = text.find("/")
    prefix = text[: slash + 1] if slash > 0 else ""
    if len(prefix) + 3 + len(own) > width:
        prefix = ""
    suffix = text[len(text) - (width - len(prefix) - 1) :]
    # A stray letter or two of a path part says nothing: start at the next "/" or "::" instead.
    bounds = [i for i in (suffix.find("/"), suffix.find("::")) if 0 < i <= 3]
    if bounds:
        suffix = suffix[min(bounds) :]
    return f"{prefix}…{suffix}"


def render(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> tuple[list[str], int]:
    """tabulate's "simple" format without its extra padding: every column exactly as wide as
    its widest cell, two spaces between columns. Returns the lines and their width."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    return lines, sum(widths) + 2 * (len(widths) - 1)


def verdict_line(text: str, race: RaceDoc) -> Line:
    word = verdict(race)
    return Line(text, red=word in ("FAIL", "INTERRUPTED"), green=word == "PASS", yellow=word == "unchecked")


def _table(races: Sequence[RaceDoc], keys: Sequence[str], name_width: int) -> tuple[list[str], int]:
    columns = [COLUMNS[key] for key in keys]
    headers = ["test", *(c.header for c in columns), "result"]
    rows = [
        [elide_middle(race["name"], name_width), *(c.cell(race) for c in columns), verdict(race)]
        for race in races
    ]
    return render(headers, rows, [False, *(c.right for c in columns), False])


def _stacked_lines(races: Sequence[RaceDoc], width: int) -> list[Line]:
    """For terminals too narrow for any table: a race's name, then its figures packed into lines."""
    out: list[Line] = []
    for race in races:
        out.append(Line(elide_middle(race["name"], width), bold=True))
        figures = [
            f"{verdict(race)}",
            f"{race['requests']} requests",
            f"{_expected(race)} / {race['wins']} successes",
            f"{race['double_bookings']} double",
            f"{race['errors']}/{race['unknown']} err/unk",
            f"p95 {_latency(race, 'p95_ns')} ms",
        ]
        out += [verdict_line(text, race) for text in _pack(figures, width, indent="  ")]
    return out


def _pack(parts: Sequence[str], width: int, *, indent: str) -> list[str]:
    """``parts`` joined by two spaces into lines of at most ``width``; a part is never split
    (one longer than the line is elided in the middle)."""
    lines: list[str] = []
    current = ""
    room = max(1, width - len(indent))
    for part in parts:
        part = elide_middle(part, room)
        if current and len(current) + 2 + len(part) > room:
            lines.append(indent + current)
            current = part
        else:
            current = f"{current}  {part}" if current else part
    if current:
        lines.append(indent + current)
    return lines


def table_lines(races: Sequence[RaceDoc], width: int | None = None) -> list[Line]:
    """The race table, as wide as the full table or as ``width`` (the terminal's) allows."""
    width = terminal_width() if width is None else width
    longest = max(len(race["name"]) for race in races)
    candidates = layouts()
    # Every layout in turn while every test's own name (after "::") stays whole; again while
    # names keep NAME_ROOM characters; then the narrowest one while they keep NAME_FLOOR; then
    # no table at all.
    whole = min(longest, max(NAME_ROOM, 1 + max(len(own_name(race["name"])) for race in races)))
    tries = [(keys, whole) for keys in candidates]
    tries += [(keys, min(longest, NAME_ROOM)) for keys in candidates]
    tries.append((candidates[-1], min(longest, NAME_FLOOR)))
    for keys, floor in tries:
        _, rest = _table(races, keys, 0)  # the table with every name cut to nothing
        name_width = min(longest, width - rest + len("test"))
        if name_width < max(floor, len("test")):
            continue
        lines, total = _table(races, keys, name_width)
        if total <= width:
            out = [Line(line) for line in lines[:2]]
            out += [verdict_line(line, race) for race, line in zip(races, lines[2:], strict=True)]
            return out
    return _stacked_lines(races, width)
