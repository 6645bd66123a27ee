"""A partition's history as a timeline, in the spirit of Porcupine's visualisation: one row per
client, a bar from call to return coloured by its Jepsen type, the longest linearizable prefix
numbered on its bars, the operations that cannot follow it outlined in red.

Drawn for each entry of the document's ``histories`` whose model did not accept it (the judge
fills ``operations`` only there). A race of 1,000 clients stays bounded: at most
``MAX_ROWS`` rows are drawn (clients with a stuck, won or open-ended operation first, then the
prefix order, then client order), the page says how many were left out, and the drawing sits
in a box that scrolls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pytest_seatrace.core.document import CheckedHistoryDoc, CheckedOperationDoc, RaceDoc
from pytest_seatrace.report.html.markup import esc
from pytest_seatrace.report.html.svg import ms_ticks, num, svg_line, svg_open, svg_text

MAX_ROWS = 200
"""Client rows drawn per history; the rest are counted in a note."""
MAX_HISTORIES = 16
"""Histories drawn per race; the JSON report has them all."""

TYPE_CLASS = {"ok": "win", "fail": "rejection", "info": "unknown"}
"""A Jepsen type's colour: the outcome classes every chart of the page uses."""

HISTORY_KEY = (
    '<p class="key">'
    '<span><i class="sw win"></i>ok</span>'
    '<span><i class="sw rejection"></i>fail (a clean rejection, checked by the model)</span>'
    '<span><i class="sw unknown"></i>info: may have taken effect, open-ended →</span>'
    '<span><i class="sw stuck"></i>cannot follow the prefix</span>'
    "<span><b>3</b> position in the longest linearizable prefix</span>"
    "</p>"
)

VERDICT_WORDS = {False: "not linearizable", None: "unknown (time budget spent)", True: "linearizable"}

Op = CheckedOperationDoc


def history_timelines(race: RaceDoc, anchor: str) -> str:
    """One timeline per history the model did not accept, under a heading of id ``anchor``;
    empty when the race has none (a race without a model, or a document written before
    histories existed)."""
    entries = [h for h in race.get("histories", ()) if h["operations"]]
    if not entries:
        return ""
    drawn = [HistoryTimeline(entry).figure() for entry in entries[:MAX_HISTORIES]]
    more = len(entries) - len(drawn)
    note = f'<p class="note">{more} more histories not drawn; the JSON report has them.</p>' if more else ""
    return f'<h3 id="{esc(anchor)}">History</h3>' + HISTORY_KEY + "".join(drawn) + note


def _label(op: Op) -> str:
    """``book(A1) → 409 taken``: what the client asked and what it saw."""
    given = op.get("input")
    call = f"{op['f']}({'' if given is None else given})"
    response = op.get("response") or ""
    return f"{call} → {response}" if response else call


class HistoryTimeline:
    """Lays out one partition's operations: rows, the time scale, one bar per operation."""

    WIDTH, LEFT, RIGHT, TOP, BOTTOM, ROW, BAR = 1240, 84, 24, 26, 8, 17, 13

    def __init__(self, entry: CheckedHistoryDoc) -> None:
        self.entry = entry
        ops: list[Op] = list(entry["operations"])
        self.by_client: dict[int, list[Op]] = {}
        for op in ops:
            self.by_client.setdefault(int(op["client"]), []).append(op)
        instants = [op["call_ms"] for op in ops]
        instants += [ret for op in ops if (ret := op["return_ms"]) is not None]
        self.lo = min(instants)
        hi = max(instants)
        self.hi = hi if hi > self.lo else self.lo + 1.0
        self.plot_w = self.WIDTH - self.LEFT - self.RIGHT

    def rows(self) -> list[int]:
        """The clients drawn, in client order: all of them up to ``MAX_ROWS``, else the ones
        that explain the verdict first."""
        clients = sorted(self.by_client)
        if len(clients) <= MAX_ROWS:
            return clients

        def rank(client: int) -> tuple[int, float, int]:
            ops = self.by_client[client]
            telling = any(op.get("stuck") or op["type"] != "fail" for op in ops)
            order = min((float(n) for op in ops if (n := op["order"])), default=math.inf)
            return (0 if telling else 1, order, client)

        return sorted(sorted(clients, key=rank)[:MAX_ROWS])

    def x(self, ms: float) -> float:
        return self.LEFT + self.plot_w * (ms - self.lo) / (self.hi - self.lo)

    def bar(self, op: Op, y: float) -> str:
        """One operation: its bar, its prefix number, its hover text."""
        x1 = self.x(op["call_ms"])
        ret = op["return_ms"]
        open_ended = ret is None
        x2 = self.WIDTH - self.RIGHT if ret is None else self.x(ret)
        width = max(x2 - x1, 2.0)
        cls = TYPE_CLASS.get(op["type"], "error") + (" stuck" if op.get("stuck") else "")
        cls += " open" if open_ended else ""
        returned = "never (+∞: may take effect at any later time)" if ret is None else f"{ret:.3f} ms"
        order = op.get("order")
        place = f"#{order} of the longest linearizable prefix" if order else ""
        if op.get("stuck"):
            place = "cannot follow the longest linearizable prefix"
        hover = (
            f"client {op['client']} · process {op['process']} · {op['op']}\n{_label(op)} ({op['type']})\n"
            f"call {op['call_ms']:.3f} ms · return {returned}" + (f"\n{place}" if place else "")
        )
        parts = [
            f'<g class="op {cls}"><title>{esc(hover)}</title>',
            f'<rect x="{num(x1)}" y="{num(y)}" width="{num(width)}" height="{self.BAR}" rx="2"/>',
        ]
        if open_ended:
            parts.append(svg_text(x2 + 2, y + self.BAR - 1, "→", cls="arrow"))
        if order:
            parts.append(svg_text(x1 + 3, y + self.BAR - 3, esc(order), cls="order"))
        if op.get("stuck"):
            parts.append(svg_text(x2 + 4, y + self.BAR - 2, "✕ cannot follow the prefix", cls="stuck"))
        parts.append("</g>")
        return "".join(parts)

    def figure(self) -> str:
        """The caption, then the time axis (it stays in view while the rows scroll) and the rows."""
        clients = self.rows()
        height = len(clients) * self.ROW + self.BOTTOM
        ticks = ms_ticks(self.lo * 1e6, self.hi * 1e6, self.LEFT, self.plot_w)
        axis = [svg_open("history-axis", self.WIDTH, self.TOP, "time axis in ms since the race started")]
        axis += [svg_text(x, self.TOP - 8, text, "middle") for x, text in ticks]
        axis.append(svg_text(self.LEFT - 14, self.TOP - 8, "ms", "end") + "</svg>")
        out = [svg_open("history", self.WIDTH, height, f"history of resource {self.entry['resource']}")]
        out += [svg_line("grid", x, x, 0, height - self.BOTTOM) for x, _ in ticks]
        for row, client in enumerate(clients):
            y = row * self.ROW
            bars = "".join(self.bar(op, y + 2) for op in self.by_client[client])
            label = svg_text(self.LEFT - 6, y + self.ROW - 4, f"client {client}", "end")
            out.append(f'<g class="row" data-client="{client}">{label}{bars}</g>')
        out.append("</svg>")
        drawing = "".join(axis + out)
        return f'<figure>{self.caption(len(clients))}<div class="scroll history">{drawing}</div></figure>'

    def caption(self, drawn: int) -> str:
        entry = self.entry
        ops: Sequence[Op] = entry["operations"]
        stuck = sorted({int(op["client"]) for op in ops if op.get("stuck")})
        verdict = VERDICT_WORDS.get(entry.get("valid"), "unknown")
        text = (
            f"Round {esc(entry['round'])}, resource <b>{esc(entry['resource'])}</b>, model "
            f"<code>{esc(entry['model'])}</code>: <b>{esc(verdict)}</b> · {len(ops)} operations of "
            f"{len(self.by_client)} clients"
        )
        if stuck:
            named = ", ".join(str(c) for c in stuck[:5]) + (
                f" and {len(stuck) - 5} more" if len(stuck) > 5 else ""
            )
            text += f" · cannot follow the prefix: client {named}"
        if drawn < len(self.by_client):
            text += f" · {drawn} clients drawn (those that explain the verdict first)"
        text += f" · checked in {float(entry.get('elapsed_s', 0.0)) * 1e3:.1f} ms"
        explanation = entry.get("explanation") or ""
        why = f'<p class="note explanation">{esc(explanation)}</p>' if explanation else ""
        return f"<figcaption>{text}</figcaption>{why}"
