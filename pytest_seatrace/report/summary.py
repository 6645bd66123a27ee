"""Lines of the ``race summary`` section, from race documents (as merged from xdist workers).

Only makes text; the session's controller writes it. The race table itself (fitting the
terminal's width) is :mod:`pytest_seatrace.report.race_table`; here are the lines around it: the
status breakdown, per-operation tables, notes, xdist workers and shards, ``-v``'s per-resource
pattern and ``-q``'s one line.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Sequence

from pytest_seatrace.core.config import DEFAULT_RESOURCE_LABEL
from pytest_seatrace.core.document import RaceDoc, status_counts, verdict
from pytest_seatrace.core.reasons import shorten
from pytest_seatrace.report.race_table import (
    NAME_FLOOR,
    Line,
    elide_middle,
    render,
    table_lines,
    terminal_width,
)
from pytest_seatrace.report.wording import (
    GOOD,
    OPERATION_HEADERS,
    STOPPED,
    WARNING,
    format_ms,
    ordered_statuses,
    plural,
    race_notes,
    share,
    statuses_text,
)

MAX_NOTES = 10
"""At most this many per-race notes (early answers, confidence) are listed."""

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
    order = ordered_statuses(counts)
    shares = {key: share(n, total) for key, n in counts.items()}
    if any(reason for _, reason in counts):
        others = (
            max(len("status"), *(len(code) for code, _ in counts))
            + max(len("count"), *(len(str(n)) for n in counts.values()))
            + max(len("share"), *(len(text) for text in shares.values()))
        )
        room = max(REASON_FLOOR, width - others - 3 * 2)
        cells = [[code, shorten(reason, room), str(n), shares[code, reason]] for code, reason, n in order]
        table, _ = render(("status", "reason", "count", "share"), cells, (True, False, True, True))
    else:
        rows = [[code, n, shares[code, reason]] for code, reason, n in order]
        table = tabulate(rows, headers=("status", "count", "share"), tablefmt="simple").splitlines()
    return [
        Line(""),
        *[Line(line) for line in table],
        Line(""),
        Line(f"start mode: {start_modes(races)}"),
    ]


def start_modes(races: Sequence[RaceDoc]) -> str:
    """Each start that ran, its races, and why ``auto`` chose it when it said:
    ``last-byte (2 races), single-datagram (1 race; HTTP/3 offered by Alt-Svc h3=:8443)``."""
    counts = Counter(race["mode"] for race in races)
    whys: dict[str, dict[str, None]] = {}
    for race in races:
        raced = race.get("raced")
        if raced and raced.get("why"):
            whys.setdefault(race["mode"], {})[str(raced["why"])] = None
    parts = [
        f"{mode} ({'; '.join((plural(n, 'race'), *whys.get(mode, ())))})"
        for mode, n in sorted(counts.items())
    ]
    return ", ".join(parts)


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
                statuses_text(op["status_counts"]),
            ]
            for op in ops
        ]
        lines, total = render(OPERATION_HEADERS, rows, (False, True, True, True, True, True, False))
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


def note_lines(races: Sequence[RaceDoc], width: int) -> list[Line]:
    """Per-race notes under the table: where a race stopped, early answers, replaced connections,
    how the responses were classified, a service that saw a far narrower race than was sent,
    and what clean rounds showed."""
    notes = [(race, tone, text) for race in races for tone, text in race_notes(race)]
    if not notes:
        return []
    out = [Line("")]
    for race, tone, text in notes[:MAX_NOTES]:
        name = elide_middle(race["name"], max(NAME_FLOOR, width // 2))
        out += [Line(t, yellow=tone in (STOPPED, WARNING)) for t in _wrap(f"{name}: {text}", width)]
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
        model = race["settings"].get("model")
        out.append(Line(f"{race['name']} ({race['mode']}{f', model {model}' if model else ''}):", bold=True))
        broken = {v["resource"] for v in race["violations"]}
        label_of = _resource_label(race)
        labels = [f"{label_of(str(r['resource']))}:" for r in race["by_resource"]]
        width = max((len(label) for label in labels), default=0)
        per_round = race["rounds"]
        for label, row in zip(labels, race["by_resource"], strict=True):
            clients = row["requests"] // per_round if per_round else row["requests"]
            parts = [f"✓ {plural(row['wins'], 'success', 'successes')}"]
            if row["rejections"]:
                parts.append(f"✗ {plural(row['rejections'], 'failure')}")
            if row["errors"]:
                parts.append(f"! {plural(row['errors'], 'error')}")
            if row["unknown"]:
                parts.append(f"? {row['unknown']} unknown")
            rounds = f" over {per_round} rounds" if per_round > 1 else ""
            bad = (
                row["resource"] in broken  # with a model, expect= may not have been judged
                if model
                else row["wins"] > race["expect"]["max"] * per_round
                or row["wins"] < race["expect"]["min"] * per_round
            )
            out.append(Line(f"{label.ljust(width)} {clients} VUs{rounds} → " + ", ".join(parts), red=bad))
        out.append(
            Line(
                f"Total: {race['requests']:,} requests, "
                f"{plural(race['wins'], 'success', 'successes', grouped=True)}, "
                f"{race['rejections']:,} failures"
                + (f", {race['errors']} errors" if race["errors"] else "")
                + (f", {race['unknown']} unknown" if race["unknown"] else "")
            )
        )
        out.extend(shard_lines(race))
        out += [
            Line(text, red=tone == STOPPED, yellow=tone == WARNING, green=tone == GOOD)
            for tone, text in race_notes(race)
        ]
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
    text = f"race summary: {plural(len(races), 'race')}, {requests:,} requests, {failed} FAIL"
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
