"""The page: its head and summary, one section per race, the CSS and the script.

The CSS (``page.css``) and the script (``page.js``) are package data files, read through
:mod:`importlib.resources` and inlined: the page fetches nothing. The script is fixed text with
no data of the report in it; it makes the request tables sortable and filterable, and without
it the page reads the same, the tables in their default order.

Failing races come first (then ``unchecked``, interrupted and passing ones), in the summary and
the sections alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from pytest_seatrace.core.document import RaceDoc, format_expect, status_counts
from pytest_seatrace.core.document import verdict as verdict_word
from pytest_seatrace.report.html.charts import bar_svg, histogram_svg, status_parts
from pytest_seatrace.report.html.history_timeline import history_timelines
from pytest_seatrace.report.html.markup import esc, extra, percentiles, plain_table, wbr_name
from pytest_seatrace.report.html.request_table import (
    MAX_TABLE_ROWS,
    MAX_TABLE_ROWS_TOTAL,
    MIN_TABLE_ROWS,
    request_table,
)
from pytest_seatrace.report.html.tables import (
    operations_table,
    samples_table,
    status_rows,
    status_table,
    violations_table,
    winners_table,
)
from pytest_seatrace.report.html.timeline import timelines
from pytest_seatrace.report.race_table import HEADERS as SUMMARY_HEADERS
from pytest_seatrace.report.race_table import row_cells
from pytest_seatrace.report.wording import format_ms, ordered_statuses, stopped_text


def _asset(name: str) -> str:
    """A package data file of the page; each goes on lines of its own inside its tag."""
    return "\n" + resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


CSS = _asset("page.css")
SCRIPT = _asset("page.js")
"""The page's only script: fixed text, no data of the report in it."""

VERDICT_ORDER = ("FAIL", "unchecked", "INTERRUPTED", "PASS")
"""The order of races in the report: the ones to look at first."""


def ordered(races: Iterable[RaceDoc]) -> list[RaceDoc]:
    """Races to look at first first: ``FAIL``, ``unchecked``, interrupted, then ``PASS``; the
    session's order within each."""
    rank = {word: i for i, word in enumerate(VERDICT_ORDER)}
    return sorted(races, key=lambda race: rank.get(verdict_word(race), len(rank)))


KEY = (
    '<p class="key">'
    + "".join(
        f'<span><i class="sw {o}"></i>{label}</span>'
        for o, label in (
            ("win", "win"),
            ("rejection", "rejection"),
            ("error", "error"),
            ("unknown", "unknown (timed out)"),
            ("early", "early answer: answered before its held bytes were sent (hollow)"),
        )
    )
    + "</p>"
)
"""The one key of outcome colours, above each race's charts."""


# -- summary ----------------------------------------------------------------------------------


def summary_table(races: Sequence[RaceDoc]) -> str:
    """One row per race, the columns of the terminal's ``race summary``, in report order."""
    head = "".join(
        f'<th class="{"l" if i == 0 else ""}">{esc(h)}</th>' for i, h in enumerate(SUMMARY_HEADERS)
    )
    rows = []
    for i, race in enumerate(races):
        verdict = verdict_word(race)
        cells = row_cells(race)
        rows.append(
            f'<tr><td class="name"><a href="#race-{i}" title="{esc(race["name"])}">'
            f"{wbr_name(race['name'])}</a></td>"
            + "".join(f"<td>{esc(c)}</td>" for c in cells)
            + f'<td class="verdict {verdict}">{verdict}</td></tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _raced(race: RaceDoc) -> list[tuple[str, object]]:
    """What was raced, so the page explains itself: method, URL, base URL, HTTP version, start."""
    raced = extra(race, "raced")
    if raced is None:
        if extra(race, "samples") is None:
            return []  # a document from before reports said what was raced
        return [("raced", "attempt functions (race.run)")]
    start = str(raced.get("sync", ""))
    if raced.get("hold"):
        start += f", hold: {raced['hold']}"
    facts: list[tuple[str, object]] = [
        ("raced", f"{raced.get('method', '')} {raced.get('url', '')}"),
        ("base URL", raced.get("base_url") or "-"),
        ("HTTP", raced.get("http_version", "")),
        ("start", start),
    ]
    if raced.get("stripped"):
        facts.append(("stripped from the URLs shown", ", ".join(str(x) for x in raced["stripped"])))
    return facts


def _facts(race: RaceDoc) -> str:
    settings = race["settings"]
    spread = race["spread"]
    raced = _raced(race)
    facts: list[tuple[str, object]] = [
        *raced,
        ("mode", race["mode"]),
        ("resources × concurrency", f"{len(race['resources'])} × {race['concurrency']}"),
        ("rounds", race["rounds"]),
        ("winners allowed per resource", format_expect(race["expect"])),
        ("duration", f"{race['duration_s']:.3f} s"),
        ("req/s", f"{race['rps']:.0f}"),
        (
            "start spread median / max",
            f"{format_ms(spread['median_ns'], 3)} / {format_ms(spread['max_ns'], 3)} ms",
        ),
    ]
    if spread["server_median_ns"] is not None:
        server = f"{format_ms(spread['server_median_ns'], 3)} / {format_ms(spread['server_max_ns'], 3)} ms"
        facts.append(("arrival spread at the service", server))
    if race.get("early"):
        facts.append(("early answers", f"{race['early']} of {race['requests']}"))
    if not race.get("checked", True):
        facts.append(("check", "False (a broken rule does not fail the test)"))
    shown: tuple[str, ...] = ("success", "reject", "timeout_s", "allow_errors", "parallel", "seed")
    if not raced:  # else the start fact says the hold point
        shown = ("hold", *shown)
    facts += [(key, settings[key]) for key in shown if key in settings]
    if settings.get("error", "none") != "none":  # error= given: what it made an error
        facts.append(("error", settings["error"]))
    if settings.get("thresholds"):
        facts.append(("thresholds", ", ".join(str(t) for t in settings["thresholds"])))
    if race.get("worker"):
        facts.append(("xdist worker", race["worker"]))
    spans = []
    for k, v in facts:
        long = " long" if len(f"{k}{v}") > 60 else ""
        spans.append(f'<span class="fact{long}">{esc(k)}: <b>{esc(v)}</b></span>')
    return '<p class="meta">' + " · ".join(spans) + "</p>"


def _stopped(race: RaceDoc) -> str:
    """Where and why a race ended before its last wave (a hook failed, Ctrl-C); empty if it ran
    to the end."""
    text = stopped_text(race)
    return f'<p class="note stopped"><b>{esc(text)}</b></p>' if text else ""


def _race_section(index: int, race: RaceDoc, table_rows: int) -> tuple[str, int]:
    """One race's section, and how many request-table rows it used."""
    verdict = verdict_word(race)
    head = [
        f'<section id="race-{index}"><h2>{wbr_name(race["name"])} ',
        f'<span class="verdict {verdict}">{verdict}</span></h2>',
        _facts(race),
        *(f'<p class="note">note: {esc(text)}</p>' for text in race["notes"]),
        _stopped(race),
        "<h3>Violations</h3>",
        violations_table(race),
        history_timelines(race, f"race-{index}-history"),
    ]
    if not race["requests"]:
        note = '<p class="note">This race made no requests: there is nothing to chart.</p>'
        return "".join([*head, note, "</section>"]), 0
    history = race.get("history")
    statuses = status_rows(race)
    outcomes = [
        ("wins", race["wins"], "win"),
        ("rejections", race["rejections"], "rejection"),
        ("errors", race["errors"], "error"),
        ("unknown", race["unknown"], "unknown"),
    ]
    errors: dict[str, int] = race["error_reasons"]
    error_table = (
        "<h3>Error reasons</h3>" + plain_table(("reason", "count"), Counter(errors).most_common())
        if errors
        else ""
    )
    lat = race["latency"]
    lat_rows = [
        (name, group["count"], *(format_ms(v, 2) for v in percentiles(group)))
        for name, group in (("all", lat["all"]), ("winners", lat["winners"]), ("losers", lat["losers"]))
    ]
    status_bar = bar_svg(status_parts(history), "status codes, coloured by outcome") if history else ""
    requests, used = request_table(index, race, table_rows)
    body = [
        KEY,
        '<div class="charts"><figure><figcaption>Latency histogram (final write → response)</figcaption>',
        histogram_svg(race),
        "</figure><figure><figcaption>Latency (ms)</figcaption>",
        plain_table(("requests", "count", "min", "p50", "p90", "p95", "p99", "max"), lat_rows),
        "</figure></div>",
        "<h3>Status breakdown</h3>",
        '<div class="charts"><figure>',
        status_bar,
        bar_svg(outcomes, "outcomes"),
        "</figure><figure>",
        status_table(statuses),
        "</figure><figure>",
        plain_table(("outcome", "count"), [(name, n) for name, n, _ in outcomes]),
        "</figure></div>",
        operations_table(race),
        error_table,
        "<h3>Timeline per resource</h3>",
        timelines(race),
        winners_table(race),
        samples_table(race),
        requests,
        "</section>",
    ]
    return "".join(head + body), used


def render_html(document: dict[str, Any]) -> str:
    """The whole report as one HTML string, from a ``--race-json`` document."""
    races = ordered(document["races"])
    verdicts = Counter(verdict_word(r) for r in races)
    requests = sum(r["requests"] for r in races)
    machine = document.get("machine_info", {})
    meta = " · ".join(
        f"{esc(k)}: {esc(v)}"
        for k, v in (
            ("generated", document.get("datetime", "")),
            ("pytest-seatrace", document.get("plugin_version", "")),
            ("schema", document.get("schema", "")),
            ("seed", document.get("seed", "")),
            ("host", machine.get("node", "")),
            ("python", machine.get("python", "")),
            ("system", f"{machine.get('system', '')} {machine.get('machine', '')}"),
            ("cpus", machine.get("cpu_count", "")),
            ("argv", " ".join(str(a) for a in document.get("argv", []))),
        )
    )
    status: Counter[tuple[str, str]] = Counter()
    for race in races:
        status.update(status_counts(race))
    sections = []
    budget = MAX_TABLE_ROWS_TOTAL
    for i, race in enumerate(races):
        section, used = _race_section(i, race, min(MAX_TABLE_ROWS, max(MIN_TABLE_ROWS, budget)))
        budget -= used
        sections.append(section)
    failed = verdicts["FAIL"]
    counts = f'<b class="verdict {"FAIL" if failed else "PASS"}">&nbsp;{failed} FAIL&nbsp;</b>'
    for word in ("unchecked", "INTERRUPTED"):
        if verdicts[word]:
            counts += f', <b class="verdict {word}">&nbsp;{verdicts[word]} {word}&nbsp;</b>'
    title = f"race report: {len(races)} races, {failed} FAIL"
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
            "<h1>pytest-seatrace race report</h1>",
            f'<p class="meta">{meta}</p>',
            f"<p><b>{len(races)}</b> races, <b>{requests:,}</b> requests, {counts}, "
            f"<b>{sum(r['double_bookings'] for r in races)}</b> double bookings</p>",
            "<h2>Summary</h2>",
            '<p class="note">Failing races first, then unchecked (check=False), interrupted and passing.</p>'
            if races
            else "",
            summary_table(races) if races else '<p class="note">No race ran.</p>',
            status_table(ordered_statuses(status)) if status else "",
            *sections,
            f"<script>{SCRIPT}</script></body></html>",
        ]
    )
