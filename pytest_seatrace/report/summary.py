"""Lines of the ``race summary`` section, from race documents (as merged from xdist workers).

Only makes text; the plugin's hook writes it. Columns follow the seed report's tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_seatrace.core.document import RaceDoc, format_expect, unanswered, verdict

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


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    red: bool = False
    green: bool = False
    bold: bool = False


def format_ms(ns: float | None, digits: int = 1) -> str:
    """Nanoseconds as milliseconds for tables; "-" where nothing was measured."""
    return "-" if ns is None else f"{ns / 1e6:.{digits}f}"


def _expected(race: RaceDoc) -> str:
    """Allowed winners over every resource and every round that ran."""
    rounds = sum(1 for r in race["per_round"] if r["requests"]) or 1
    return format_expect(race["expect"], len(race["resources"]) * rounds)


def _plural(n: int, word: str, plural: str) -> str:
    return f"{n} {word if n == 1 else plural}"


def row_cells(race: RaceDoc) -> list[str]:
    """The figures of one race, between its name and its verdict (terminal and HTML alike)."""
    lat = race["latency"]["all"]
    return [
        f"{len(race['resources'])} × {race['concurrency']}",
        str(race["requests"]),
        f"{_expected(race)} / {race['wins']}",
        str(race["rejections"]),
        str(race["errors"]),
        str(race["unknown"]),
        str(race["double_bookings"]),
        format_ms(lat["med_ns"]),
        format_ms(lat["p95_ns"]),
        format_ms(lat["p99_ns"]),
        format_ms(lat["max_ns"]),
        f"{race['rps']:.0f}",
        format_ms(race["spread"]["median_ns"], 2),
        race["mode"],
    ]


def table_lines(races: Sequence[RaceDoc]) -> list[Line]:
    from tabulate import tabulate

    rows = [[race["name"], *row_cells(race), verdict(race)] for race in races]
    text = tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True, colalign=("left",))
    lines = text.splitlines()
    out = [Line(line) for line in lines[:2]]
    for race, line in zip(races, lines[2:], strict=True):
        good = verdict(race) == "PASS"
        out.append(Line(line, red=not good, green=good))
    return out


def status_lines(races: Sequence[RaceDoc]) -> list[Line]:
    from tabulate import tabulate

    counts: Counter[str] = Counter()
    for race in races:
        counts.update(race["status_counts"])
        no_status = unanswered(race)
        if no_status:
            counts["no response"] += no_status
    total = sum(counts.values()) or 1
    rows = [[code, n, f"{100 * n / total:.2f}%"] for code, n in sorted(counts.items())]
    modes = Counter(race["mode"] for race in races)
    mode_text = ", ".join(f"{mode} ({_plural(n, 'race', 'races')})" for mode, n in sorted(modes.items()))
    return [
        Line(""),
        *[
            Line(line)
            for line in tabulate(rows, headers=("status", "count", "share"), tablefmt="simple").splitlines()
        ],
        Line(""),
        Line(f"start mode: {mode_text}"),
    ]


def resource_lines(races: Sequence[RaceDoc]) -> list[Line]:
    """The seed report's execution pattern: ``Seat 7: 100 VUs → ✓ 1 success, ✗ 99 failures``."""
    out: list[Line] = []
    for race in races:
        out.append(Line(""))
        out.append(Line(f"{race['name']} ({race['mode']}):", bold=True))
        width = max(len(str(r["resource"])) for r in race["by_resource"]) if race["by_resource"] else 0
        per_round = race["rounds"]
        for row in race["by_resource"]:
            clients = row["requests"] // per_round if per_round else row["requests"]
            parts = [
                f"✓ {_plural(row['wins'], 'success', 'successes')}",
                f"✗ {_plural(row['rejections'], 'failure', 'failures')}",
            ]
            if row["errors"]:
                parts.append(f"! {_plural(row['errors'], 'error', 'errors')}")
            if row["unknown"]:
                parts.append(f"? {row['unknown']} unknown")
            label = f"Seat {row['resource']}:".ljust(width + 6)
            rounds = f" over {per_round} rounds" if per_round > 1 else ""
            bad = (
                row["wins"] > race["expect"]["max"] * per_round
                or row["wins"] < race["expect"]["min"] * per_round
            )
            out.append(Line(f"{label} {clients} VUs{rounds} → " + ", ".join(parts), red=bad))
        out.append(
            Line(
                f"Total: {race['requests']:,} requests, "
                f"{race['wins']:,} {'success' if race['wins'] == 1 else 'successes'}, "
                f"{race['rejections']:,} failures"
                + (f", {race['errors']} errors" if race["errors"] else "")
                + (f", {race['unknown']} unknown" if race["unknown"] else "")
            )
        )
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
    failed = sum(1 for r in races if not r["passed"])
    requests = sum(r["requests"] for r in races)
    double = sum(r["double_bookings"] for r in races)
    text = (
        f"race summary: {_plural(len(races), 'race', 'races')}, {requests:,} requests, "
        f"{failed} FAIL, {double:,} double bookings"
    )
    return Line(text, red=bool(failed), green=not failed)


def summary_lines(races: Sequence[RaceDoc], *, verbosity: int, mode: str, workers: int = 0) -> list[Line]:
    """All lines of the section for the given verbosity and ``--race-summary`` mode."""
    if mode == "off" or not races:
        return []
    if mode == "auto" and verbosity < 0:
        return [quiet_line(races)]
    lines = table_lines(races) + status_lines(races)
    if workers > 1:
        lines.append(
            Line(
                f"races ran on {workers} xdist workers at once: their races overlapped and skew timings; "
                "use xdist_group (--dist loadgroup) for timing-sensitive tests"
            )
        )
    if mode == "full" or verbosity > 0:
        lines += resource_lines(races)
    return lines
