"""Lines of the ``race summary`` section, from race documents (as merged from xdist workers).

Only makes text; the plugin's hook writes it. Columns follow the seed report's tables.

The race table fits the terminal's width as pytest measures it (:func:`terminal_width`:
``COLUMNS`` honoured, under 40 taken as 80). When the full table is too wide, long test names
are elided in the middle first (down to :data:`NAME_ROOM` characters), then the table narrows
one step at a time, always in the order of :data:`NARROWING`; when even the narrowest table
leaves no room for a name, each race takes a line of its own for its name and one or more for
its figures. A figure is never cut and a row is never wider than the terminal.
"""

from __future__ import annotations

import shutil
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_seatrace.core.config import DEFAULT_RESOURCE_LABEL
from pytest_seatrace.core.document import RaceDoc, format_expect, status_counts, verdict
from pytest_seatrace.core.judge import early_hint
from pytest_seatrace.core.reasons import shorten

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
CONFIDENCE = 0.95
"""The confidence level of the per-round failure-rate bound of clean multi-round races."""
MAX_NOTES = 10
"""At most this many per-race notes (early answers, confidence) are listed."""


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    red: bool = False
    green: bool = False
    bold: bool = False
    yellow: bool = False


def format_ms(ns: float | None, digits: int = 1) -> str:
    """Nanoseconds as milliseconds for tables; "-" where nothing was measured."""
    return "-" if ns is None else f"{ns / 1e6:.{digits}f}"


def terminal_width() -> int:
    """The terminal's width as pytest measures it: ``COLUMNS`` first, under 40 taken as 80."""
    width = shutil.get_terminal_size(fallback=(80, 24)).columns
    return 80 if width < 40 else width


def failure_rate_bound(rounds: int, confidence: float = CONFIDENCE) -> float:
    """The exact upper bound on the per-round failure rate after ``rounds`` clean rounds.

    With ``rounds`` independent rounds and none failing, every failure rate ``p`` with
    ``(1 - p) ** rounds >= 1 - confidence`` is still plausible; the bound is the largest,
    ``1 - (1 - confidence) ** (1 / rounds)``. The "rule of three", ``3 / rounds``, approximates it
    at 95 %.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    return 1.0 - float((1.0 - confidence) ** (1.0 / rounds))


def _rounds_run(race: RaceDoc) -> int:
    return sum(1 for r in race["per_round"] if r["requests"])


def _expected(race: RaceDoc) -> str:
    """Allowed winners over every resource and every round that ran."""
    return format_expect(race["expect"], len(race["resources"]) * (_rounds_run(race) or 1))


def _plural(n: int, word: str, plural: str) -> str:
    return f"{n} {word if n == 1 else plural}"


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


def _own_name(nodeid: str) -> str:
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
    own = _own_name(text)
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


def _render(
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


def _verdict_line(text: str, race: RaceDoc) -> Line:
    word = verdict(race)
    return Line(text, red=word in ("FAIL", "INTERRUPTED"), green=word == "PASS", yellow=word == "unchecked")


def _table(races: Sequence[RaceDoc], keys: Sequence[str], name_width: int) -> tuple[list[str], int]:
    columns = [COLUMNS[key] for key in keys]
    headers = ["test", *(c.header for c in columns), "result"]
    rows = [
        [elide_middle(race["name"], name_width), *(c.cell(race) for c in columns), verdict(race)]
        for race in races
    ]
    return _render(headers, rows, [False, *(c.right for c in columns), False])


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
        out += [_verdict_line(text, race) for text in _pack(figures, width, indent="  ")]
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
    whole = min(longest, max(NAME_ROOM, 1 + max(len(_own_name(race["name"])) for race in races)))
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
            out += [_verdict_line(line, race) for race, line in zip(races, lines[2:], strict=True)]
            return out
    return _stacked_lines(races, width)


REASON_FLOOR = 20
"""Narrowest reason column of the status breakdown; a narrower terminal wraps the table."""


def status_lines(races: Sequence[RaceDoc], width: int = 80) -> list[Line]:
    """The status breakdown over every race: status, count and share, with what the bodies
    said (``500  database is locked``) when any said something, cut to fit ``width``."""
    from tabulate import tabulate

    counts: Counter[tuple[str, str]] = Counter()
    for race in races:
        counts.update(status_counts(race))
    total = sum(counts.values()) or 1
    order = sorted(
        counts.items(), key=lambda item: (not item[0][0].isdigit(), item[0][0], -item[1], item[0][1])
    )
    shares = {key: f"{100 * n / total:.2f}%" for key, n in counts.items()}
    if any(reason for _, reason in counts):
        others = (
            max(len("status"), *(len(code) for code, _ in counts))
            + max(len("count"), *(len(str(n)) for n in counts.values()))
            + max(len("share"), *(len(share) for share in shares.values()))
        )
        room = max(REASON_FLOOR, width - others - 3 * 2)
        cells = [[code, shorten(reason, room), str(n), shares[code, reason]] for (code, reason), n in order]
        table, _ = _render(("status", "reason", "count", "share"), cells, (True, False, True, True))
    else:
        rows = [[code, n, shares[code, reason]] for (code, reason), n in order]
        table = tabulate(rows, headers=("status", "count", "share"), tablefmt="simple").splitlines()
    modes = Counter(race["mode"] for race in races)
    mode_text = ", ".join(f"{mode} ({_plural(n, 'race', 'races')})" for mode, n in sorted(modes.items()))
    return [
        Line(""),
        *[Line(line) for line in table],
        Line(""),
        Line(f"start mode: {mode_text}"),
    ]


OPERATION_HEADERS = ("operation", "requests", "wins", "rejections", "errors", "unknown", "statuses")


def _statuses(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{code} ×{n}" for code, n in counts.items()) or "-"


def operation_lines(races: Sequence[RaceDoc], width: int) -> list[Line]:
    """Per race that mixed operations, its statuses per operation (a table that fits ``width``,
    else one line or more per operation); nothing for races of one operation."""
    out: list[Line] = []
    for race in races:
        ops = race.get("by_operation")
        if not ops:
            continue
        out += [Line(""), Line(f"operations of {elide_middle(race['name'], max(NAME_FLOOR, width - 14))}:")]
        rows = [
            [
                op["operation"],
                *(str(op[k]) for k in ("requests", "wins", "rejections", "errors", "unknown")),
                _statuses(op["status_counts"]),
            ]
            for op in ops
        ]
        lines, total = _render(OPERATION_HEADERS, rows, (False, True, True, True, True, True, False))
        if total <= width:
            out += [Line(line) for line in lines]
            continue
        for op, row in zip(ops, rows, strict=True):
            text = (
                f"{op['operation']}: {op['requests']} requests, {op['wins']} wins, "
                f"{op['rejections']} rejections, {op['errors']} errors, {op['unknown']} unknown; {row[-1]}"
            )
            out += [Line(t) for t in _wrap(text, width)]
    return out


def confidence_text(race: RaceDoc) -> str | None:
    """What a clean multi-round race showed: ``0 of 20 rounds broke the invariant: …``."""
    rounds = _rounds_run(race)
    if rounds < 2 or race["violations"] or race["interrupted"] or not race["passed"]:
        return None
    bound = failure_rate_bound(rounds)
    return (
        f"0 of {rounds} rounds broke the invariant: the per-round failure rate is below "
        f"{100 * bound:.1f} % at {100 * CONFIDENCE:.0f} % confidence"
    )


def early_text(race: RaceDoc) -> str | None:
    """Requests answered before their held bytes were sent, when there were any."""
    early = race["early"]
    if not early:
        return None
    raced = race["raced"]
    hint = early_hint(race["mode"], None if raced is None else raced["hold"])
    return (
        f"early answers: {early} of {race['requests']} "
        "(answered before their held bytes were sent: not synchronised; left out of the start spread)"
        + (f"; {hint}" if hint else "")
    )


def contention_text(race: RaceDoc) -> str | None:
    """The service saw a far narrower race than was sent (``core.contention``); else nothing."""
    contention = race.get("contention")
    return None if contention is None else contention["note"]


def replaced_text(race: RaceDoc) -> str | None:
    """Kept connections the server closed (its keep-alive) and the race replaced, if any."""
    replaced = race.get("connections_replaced", 0)
    if not replaced:
        return None
    return (
        f"{replaced} kept {'connection' if replaced == 1 else 'connections'} the server had closed "
        "(idle past its keep-alive) replaced before the release: no request it could have acted on "
        "was lost or replayed"
    )


def stopped_text(race: RaceDoc) -> str | None:
    """Where and why a race ended before its last wave (a hook failed, Ctrl-C), if it did."""
    stopped = race.get("stopped")
    if stopped is None:
        return None
    if stopped["by"] == "interrupted":
        return f"{stopped['reason']}: the figures cover the requests sent until then"
    return f"stopped: {stopped['reason']}"


def note_lines(races: Sequence[RaceDoc], width: int) -> list[Line]:
    """Per-race notes under the table: where a race stopped, early answers, replaced connections,
    how the responses were classified, a service that saw a far narrower race than was sent,
    and what clean rounds showed."""
    notes: list[tuple[RaceDoc, str, bool]] = []
    for race in races:
        stopped = stopped_text(race)
        if stopped:
            notes.append((race, stopped, True))
        early = early_text(race)
        if early:
            notes.append((race, early, True))
        replaced = replaced_text(race)
        if replaced:
            notes.append((race, replaced, False))
        notes += [(race, text, True) for text in race["notes"]]
        contention = contention_text(race)
        if contention:
            notes.append((race, contention, True))
        confidence = confidence_text(race)
        if confidence:
            notes.append((race, confidence, False))
    if not notes:
        return []
    out = [Line("")]
    for race, text, warn in notes[:MAX_NOTES]:
        name = elide_middle(race["name"], max(NAME_FLOOR, width // 2))
        out += [Line(t, yellow=warn) for t in _wrap(f"{name}: {text}", width)]
    if len(notes) > MAX_NOTES:
        out.append(Line(f"… and {len(notes) - MAX_NOTES} more notes (-v shows them per race)"))
    return out


def _wrap(text: str, width: int) -> list[str]:
    """Prose in lines of at most ``width``, broken between words only (an option stays whole)."""
    return textwrap.wrap(
        text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
    ) or [""]


def workers_lines(workers: int, serialised: bool, width: int) -> list[Line]:
    """How many xdist workers raced, and whether races against one origin took turns."""
    if workers < 2:
        return []
    if serialised:
        text = (
            f"races ran on {workers} xdist workers; races against one origin took turns across "
            "workers (--race-xdist overlap to let them run at once)"
        )
    else:
        text = (
            f"races ran on {workers} xdist workers at once: races on different workers overlapped, "
            "which skews latency and start spread (the verdicts stay right)"
        )
    return [Line(t) for t in _wrap(text, width)]


def shard_lines(race: RaceDoc) -> list[Line]:
    """A sharded race's shards: where each ran, its clock error beside its own start spread."""
    out = []
    for shard in race.get("shards") or []:
        spread = format_ms(shard["spread_median_ns"], 2)
        text = (
            f"shard {shard['shard']} {shard['spec']} on {shard['host'] or '?'}: "
            f"{shard['requests']} requests, spread {spread} ms, "
            f"clock offset {shard['clock_offset_ns'] / 1e6:+.3f} ms "
            f"± {shard['clock_error_ns'] / 1e6:.3f} ms, "
            f"released up to {shard['start_late_ns'] / 1e6:.3f} ms after the start"
        )
        if shard["failure"]:
            text += f" — {shard['failure']}"
        out.append(Line(text, red=bool(shard["failure"])))
    return out


def _resource_label(race: RaceDoc) -> Callable[[str], str]:
    """``Ticket 8123`` with ``resource_label="Ticket"``; else ``Seat 7`` for the numbered
    resources 1..N of ``resources=N`` and the id itself otherwise."""
    noun = race["settings"].get("resource_label")
    if noun is None and race["resources"] == [str(i) for i in range(1, len(race["resources"]) + 1)]:
        noun = DEFAULT_RESOURCE_LABEL
    return (lambda rid: f"{noun} {rid}") if noun else (lambda rid: rid)


def resource_lines(races: Sequence[RaceDoc]) -> list[Line]:
    """The seed report's execution pattern: ``Seat 7: 100 VUs → ✓ 1 success, ✗ 99 failures``."""
    out: list[Line] = []
    for race in races:
        out.append(Line(""))
        out.append(Line(f"{race['name']} ({race['mode']}):", bold=True))
        label_of = _resource_label(race)
        labels = [f"{label_of(str(r['resource']))}:" for r in race["by_resource"]]
        width = max((len(label) for label in labels), default=0)
        per_round = race["rounds"]
        for label, row in zip(labels, race["by_resource"], strict=True):
            clients = row["requests"] // per_round if per_round else row["requests"]
            parts = [f"✓ {_plural(row['wins'], 'success', 'successes')}"]
            if row["rejections"]:
                parts.append(f"✗ {_plural(row['rejections'], 'failure', 'failures')}")
            if row["errors"]:
                parts.append(f"! {_plural(row['errors'], 'error', 'errors')}")
            if row["unknown"]:
                parts.append(f"? {row['unknown']} unknown")
            rounds = f" over {per_round} rounds" if per_round > 1 else ""
            bad = (
                row["wins"] > race["expect"]["max"] * per_round
                or row["wins"] < race["expect"]["min"] * per_round
            )
            out.append(Line(f"{label.ljust(width)} {clients} VUs{rounds} → " + ", ".join(parts), red=bad))
        out.append(
            Line(
                f"Total: {race['requests']:,} requests, "
                f"{race['wins']:,} {'success' if race['wins'] == 1 else 'successes'}, "
                f"{race['rejections']:,} failures"
                + (f", {race['errors']} errors" if race["errors"] else "")
                + (f", {race['unknown']} unknown" if race["unknown"] else "")
            )
        )
        out.extend(shard_lines(race))
        stopped = stopped_text(race)
        if stopped:
            out.append(Line(stopped, red=True))
        early = early_text(race)
        if early:
            out.append(Line(early, yellow=True))
        replaced = replaced_text(race)
        if replaced:
            out.append(Line(replaced))
        out += [Line(text, yellow=True) for text in race["notes"]]
        contention = contention_text(race)
        if contention:
            out.append(Line(contention, yellow=True))
        confidence = confidence_text(race)
        if confidence:
            out.append(Line(confidence, green=True))
        if race["violation_rate"]:
            out.append(Line(race["violation_rate"], red=True))
        for v in race["violations"][:10]:
            where = "" if v["resource"] is None else f"resource {v['resource']}: "
            if v["round"] is not None and race["rounds"] > 1:
                where = f"round {v['round']}, {where}"
            out.append(
                Line(
                    f"  {where}{v['kind']} (allowed {v['allowed']}, found {v['found']}) {v['detail']}",
                    red=True,
                )
            )
    return out


def quiet_line(races: Sequence[RaceDoc]) -> Line:
    """``-q``: the session in one line. Only ``FAIL`` verdicts count as failures."""
    verdicts = Counter(verdict(r) for r in races)
    requests = sum(r["requests"] for r in races)
    double = sum(r["double_bookings"] for r in races)
    failed = verdicts["FAIL"]
    text = f"race summary: {_plural(len(races), 'race', 'races')}, {requests:,} requests, {failed} FAIL"
    if verdicts["unchecked"]:
        text += f", {verdicts['unchecked']} unchecked"
    if verdicts["INTERRUPTED"]:
        text += f", {verdicts['INTERRUPTED']} interrupted"
    text += f", {double:,} double bookings"
    bad = bool(failed or verdicts["INTERRUPTED"])
    return Line(
        text,
        red=bad,
        green=not bad and not verdicts["unchecked"],
        yellow=not bad and bool(verdicts["unchecked"]),
    )


def summary_lines(
    races: Sequence[RaceDoc],
    *,
    verbosity: int,
    mode: str,
    workers: int = 0,
    serialised: bool = False,
    width: int | None = None,
) -> list[Line]:
    """All lines of the section for the given verbosity and ``--race-summary`` mode.

    ``workers``: how many xdist workers raced; ``serialised``: races against one origin took
    turns across them. ``width``: the terminal's (default: :func:`terminal_width`).
    """
    if mode == "off" or not races:
        return []
    if mode == "auto" and verbosity < 0:
        return [quiet_line(races)]
    width = terminal_width() if width is None else width
    lines = table_lines(races, width) + status_lines(races, width) + operation_lines(races, width)
    lines += workers_lines(workers, serialised, width)
    verbose = mode == "full" or verbosity > 0
    if not verbose:
        lines += note_lines(races, width)
    else:
        lines += resource_lines(races)
    return lines
