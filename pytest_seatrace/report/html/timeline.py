"""One timeline per resource: a dot at each request's final write, a line to its response.

Histories of 50,000 requests stay fast and small: a bounded sample per resource (winners
always, up to a bound), a bounded number of resources, and the page says what was left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.report.html.markup import early_column, esc, even_spread, outcome_class
from pytest_seatrace.report.html.svg import ms_ticks, num, svg_line, svg_open, svg_text
from pytest_seatrace.report.wording import format_ms

MAX_DRAWN_PER_RESOURCE = 200
"""Requests drawn per resource timeline; winners are always drawn (up to ``MAX_WINNERS_DRAWN``)."""
MAX_WINNERS_DRAWN = 1000
"""A bound even on winners, for services that let thousands of clients win one resource."""
FIRST_TIMELINES = 32
"""Resources that always get a timeline, in resource order."""
MAX_TIMELINES = 96
"""Timelines per race at most: the first resources plus resources with a violation."""


def _sample(indices: list[int], outcome: list[str], early: list[bool]) -> tuple[list[int], int]:
    """The requests of one resource to draw: every winner, then errors, unknowns and early
    answers, then an even spread of the rest, ``MAX_DRAWN_PER_RESOURCE`` in all. Returns
    (drawn, winners cut)."""
    if len(indices) <= MAX_DRAWN_PER_RESOURCE:
        return list(indices), 0
    wins = [i for i in indices if outcome[i] == "win"]
    cut = max(0, len(wins) - MAX_WINNERS_DRAWN)
    wins = wins[:MAX_WINNERS_DRAWN]
    odd = [i for i in indices if outcome[i] != "win" and (outcome[i] != "rejection" or early[i])]
    rest = [i for i in indices if outcome[i] == "rejection" and not early[i]]
    room = max(0, MAX_DRAWN_PER_RESOURCE - len(wins))
    odd = odd[:room]
    room -= len(odd)
    return sorted(wins + odd + even_spread(rest, room)), cut


def _timeline_resources(race: RaceDoc, present: Sequence[str]) -> tuple[list[str], int]:
    """The first resources plus those with a violation, bounded; returns (chosen, left out)."""
    violated = {str(v["resource"]) for v in race["violations"] if v["resource"] is not None}
    chosen = list(present[:FIRST_TIMELINES])
    for res in present[FIRST_TIMELINES:]:
        if len(chosen) >= MAX_TIMELINES:
            break
        if res in violated:
            chosen.append(res)
    return chosen, len(present) - len(chosen)


TIMELINE_NOTE = (
    '<p class="note">dot: final write sent (an early answer: when its held bytes would have gone) · '
    "line: until the response · x: ms since the race's first send</p>"
)


def timelines(race: RaceDoc) -> str:
    """One SVG per resource: a dot at each request's final write, a line to its response."""
    history = race.get("history")
    if not history:
        return (
            '<p class="note">No request history in this report (a pytest-xdist worker lost it), '
            "so no timelines.</p>"
        )
    sent = history["start_ns"]
    starts = [s for s in sent if s]
    if not starts:
        return '<p class="note">No request was sent, so no timelines.</p>'
    groups: dict[str, list[int]] = {}
    unsent: Counter[str] = Counter()
    for i, res in enumerate(history["resource"]):
        if sent[i]:
            groups.setdefault(res, []).append(i)
        else:
            unsent[res] += 1
    order = [str(r) for r in race["resources"]]
    known = set(order)
    present = [r for r in order if r in groups] + [r for r in groups if r not in known]
    chosen, left_out = _timeline_resources(race, present)
    spreads = race["spread"]["by_resource"]
    timeline = Timeline(history, t0=min(starts))
    figures = [timeline.svg(res, groups[res], unsent[res], spreads.get(res)) for res in chosen]
    note = ""
    if left_out:
        note = (
            f'<p class="note">{left_out} more resources not drawn (the first {FIRST_TIMELINES} and those '
            f"with a violation are, up to {MAX_TIMELINES}); the JSON report has every request.</p>"
        )
    return TIMELINE_NOTE + '<div class="timelines">' + "".join(figures) + "</div>" + note


class Timeline:
    """Draws resources of one race on a shared time origin (the race's first final write)."""

    WIDTH, LEFT, RIGHT, TOP, BOTTOM = 640, 14, 14, 8, 30

    def __init__(self, history: dict[str, list[Any]], t0: int) -> None:
        self.sent: list[int] = history["start_ns"]
        self.end: list[int] = history["end_ns"]
        self.outcome: list[str] = history["outcome"]
        self.status: list[int] = history["status"]
        self.client: list[int] = history["client"]
        self.round: list[int] = history.get("round") or [1] * len(self.sent)
        self.early = early_column(history)
        self.t0 = t0

    def svg(self, resource: str, indices: list[int], unsent: int, spread_ns: int | None) -> str:
        sent, end, outcome, early = self.sent, self.end, self.outcome, self.early
        drawn, cut = _sample(indices, outcome, early)
        drawn.sort(key=sent.__getitem__)
        lo = min(sent[i] for i in drawn) - self.t0
        hi = max(max(end[i], sent[i]) for i in drawn) - self.t0
        if hi <= lo:
            hi = lo + 1000
        span = hi - lo
        n = len(drawn)
        left, top, plot_w = self.LEFT, self.TOP, self.WIDTH - self.LEFT - self.RIGHT
        plot_h = min(240.0, max(48.0, n * 4.0))
        row = plot_h / n
        height = int(top + plot_h + self.BOTTOM)
        base_y = top + plot_h

        def x_of(ns: int) -> str:
            return num(left + plot_w * (ns - self.t0 - lo) / span)

        groups: dict[str, list[str]] = {o: [] for o in ("rejection", "error", "unknown", "win")}
        multi_round = any(self.round[i] != 1 for i in drawn)
        for k, i in enumerate(drawn):
            y = num(top + row * (k + 0.5))
            kind = outcome_class(outcome[i])
            x1, x2 = x_of(sent[i]), x_of(max(end[i], sent[i]))
            where = f" round {self.round[i]}" if multi_round else ""
            what = self.status[i] or "no response"
            how = ", early answer" if early[i] else ""
            label = f"client {self.client[i]}{where}: {what} {kind}{how}, {format_ms(end[i] - sent[i], 2)} ms"
            radius = 4 if kind == "win" else 3 if early[i] else 2
            hollow = ' class="early"' if early[i] else ""
            groups[kind].append(
                f'<line x1="{x1}" x2="{x2}" y1="{y}" y2="{y}"/>'
                f'<circle{hollow} cx="{x1}" cy="{y}" r="{radius}"><title>{esc(label)}</title></circle>'
            )
        caption = f"Resource <b>{esc(resource)}</b>: {len(indices) + unsent} requests"
        if n < len(indices):
            caption += f", {n} drawn"
        if cut:
            caption += f", {cut} winners not drawn"
        if unsent:
            caption += f", {unsent} never sent"
        answered_early = sum(1 for i in indices if early[i])
        if answered_early:
            caption += f", {answered_early} answered early"
        if spread_ns is not None:
            caption += f" · start spread {format_ms(spread_ns, 3)} ms"
        out = [
            f"<figure><figcaption>{caption}</figcaption>",
            svg_open("timeline", self.WIDTH, height, f"timeline of resource {resource}"),
        ]
        for x, text in ms_ticks(lo, hi, left, plot_w):
            out.append(svg_line("grid", x, x, top, base_y) + svg_text(x, base_y + 14, text, "middle"))
        out.append(svg_line("axis", left, self.WIDTH - self.RIGHT, base_y, base_y))
        out.append(svg_text(self.WIDTH - self.RIGHT, height - 3, "ms since the race started", "end"))
        for kind, elements in groups.items():  # winners last, on top
            if elements:
                out.append(f'<g class="{kind}">{"".join(elements)}</g>')
        out.append("</svg></figure>")
        return "".join(out)
