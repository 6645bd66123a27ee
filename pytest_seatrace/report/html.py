"""The self-contained HTML report of ``--race-html``: one file, inline CSS, SVG and one small
script, no network.

It is rendered from the same document ``--race-json`` writes, so the two never disagree, and it
must open anywhere (a CI artifact, an air-gapped machine): no script, font, stylesheet or image
is fetched. Every string of the document is escaped: test names, resource ids and response
bodies come from users and services. Charts are SVG made here. The only script is
:data:`SCRIPT`, a fixed text with no data in it: it makes the request tables sortable and
filterable; without it the page reads the same, the tables in their default order.

Failing races come first (then ``unchecked``, interrupted and passing ones), in the summary and
the sections alike. Each outcome has one colour everywhere (:data:`OUTCOMES`): win green,
rejection grey, error red, unknown amber; an early answer (answered before its held bytes were
sent) is drawn hollow. Histories of 50,000 requests stay fast and small: timelines draw a
bounded sample per resource and a bounded number of resources, request tables a bounded number
of rows, and the page says so wherever something was left out.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from pytest_seatrace.core.document import PercentilesDoc, RaceDoc, format_expect, status_counts
from pytest_seatrace.core.document import verdict as _verdict
from pytest_seatrace.report.race_table import HEADERS as SUMMARY_HEADERS
from pytest_seatrace.report.race_table import row_cells
from pytest_seatrace.report.wording import format_ms as _ms
from pytest_seatrace.report.wording import stopped_text

MAX_DRAWN_PER_RESOURCE = 200
"""Requests drawn per resource timeline; winners are always drawn (up to ``MAX_WINNERS_DRAWN``)."""
MAX_WINNERS_DRAWN = 1000
"""A bound even on winners, for services that let thousands of clients win one resource."""
FIRST_TIMELINES = 32
"""Resources that always get a timeline, in resource order."""
MAX_TIMELINES = 96
"""Timelines per race at most: the first resources plus resources with a violation."""
MAX_TABLE_ROWS = 2000
"""Rows of a race's request table at most: winners, then errors, timeouts and early answers,
then an even sample of the rest."""
MAX_TABLE_ROWS_TOTAL = 20_000
"""Rows of every request table together, so a session of many races stays a few MB; races
are served in report order (failing first), each getting at least ``MIN_TABLE_ROWS``."""
MIN_TABLE_ROWS = 200
MAX_VIOLATION_ROWS = 200
MAX_WINNER_RESOURCES = 10
MAX_WINNERS_LISTED = 5
MAX_SAMPLE_RESOURCES = 10
MAX_SAMPLES_LISTED = 5
BODY_SHOWN = 200
HISTOGRAM_BINS = 40
OUTCOMES = ("win", "rejection", "error", "unknown")
"""The outcomes, each with one colour (CSS class of the same name) in every chart and table."""
VERDICT_ORDER = ("FAIL", "unchecked", "INTERRUPTED", "PASS")
"""The order of races in the report: the ones to look at first."""
CHAR_W = 6.6
"""Width of one character of an 11px SVG label, generously: used to keep labels apart."""

CSS = """
:root { color-scheme: light; --win: #1a7f37; --rej: #8c959f; --err: #cf222e; --unk: #bf8700;
  --stat: #0969da; --ink: #1f2328; --mute: #59636e; --line: #d1d9e0; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  margin: 0 auto; padding: 16px 24px 48px; max-width: 1400px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 36px 0 8px;
  padding-top: 12px; border-top: 2px solid var(--line); overflow-wrap: anywhere; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta { color: var(--mute); font-size: 12px; overflow-wrap: anywhere; }
.meta .fact { white-space: nowrap; } .meta .fact.long { white-space: normal; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
td { white-space: nowrap; font-variant-numeric: tabular-nums; }
th { background: var(--bg2); font-weight: 600; }
td.l, th.l { text-align: left; }
td.name { text-align: left; white-space: normal; overflow-wrap: anywhere; min-width: 20em; max-width: 420px; }
td.wrap { white-space: normal; overflow-wrap: anywhere; text-align: left; max-width: 560px; }
td.body { text-align: left; font-family: ui-monospace, monospace; font-size: 12px; max-width: 560px;
  white-space: pre-wrap; word-break: break-all; }
.verdict { color: #fff; font-weight: 600; white-space: nowrap; }
.verdict.PASS { background: var(--win); } .verdict.FAIL { background: var(--err); }
.verdict.unchecked { background: #8250df; } .verdict.INTERRUPTED { background: #424a53; }
span.verdict { padding: 1px 8px; border-radius: 10px; font-size: 13px; }
.note { color: var(--mute); font-size: 12px; margin: 2px 0 8px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px 28px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: var(--mute); margin-bottom: 2px; }
svg { max-width: 100%; height: auto; background: #fff; } svg.bar { display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--mute); }
svg text.pct-label { fill: var(--ink); paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg .axis { stroke: #8c959f; stroke-width: 1; } svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .pct { stroke: var(--ink); stroke-dasharray: 3 3; stroke-width: 1; }
svg .win { fill: var(--win); stroke: var(--win); } svg .rejection { fill: var(--rej); stroke: var(--rej); }
svg .error { fill: var(--err); stroke: var(--err); } svg .unknown { fill: var(--unk); stroke: var(--unk); }
svg .stat { fill: var(--stat); stroke: var(--stat); }
svg g.win line { stroke-width: 2; } svg line { stroke-width: 1; }
svg g.win circle { stroke: #fff; stroke-width: 1; }
svg circle.early { fill: #fff; stroke-width: 1.5; }
svg g.win circle.early { stroke: var(--win); stroke-width: 2; }
.timelines { display: grid; grid-template-columns: repeat(auto-fill, minmax(640px, 1fr)); gap: 12px 24px; }
.key span { display: inline-block; margin-right: 14px; font-size: 12px; white-space: nowrap; }
i.sw { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px;
  vertical-align: -1px; }
i.sw.win { background: var(--win); } i.sw.rejection { background: var(--rej); }
i.sw.error { background: var(--err); } i.sw.unknown { background: var(--unk); }
i.sw.early { background: #fff; border: 2px solid var(--mute); }
.scroll { max-height: 560px; overflow: auto; border: 1px solid var(--line); display: inline-block;
  max-width: 100%; }
.scroll table { margin: 0; } .scroll thead th { position: sticky; top: 0; z-index: 1; }
table.requests tr.win td { font-weight: 600; }
th button { font: inherit; border: 0; background: none; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " ▲"; }
th[aria-sort="descending"] button::after { content: " ▼"; }
.tools { margin: 6px 0; font-size: 13px; } .tools label { margin-right: 12px; }
.tools output { color: var(--mute); }
"""

SCRIPT = """
(function () {
  "use strict";
  function key(row, i) {
    var cell = row.cells[i];
    var k = cell.getAttribute("data-k");
    return k === null ? cell.textContent : k;
  }
  function sortBy(table, i, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var numeric = rows.every(function (r) { return key(r, i) !== "" && !isNaN(Number(key(r, i))); });
    rows.sort(function (a, b) {
      var x = key(a, i), y = key(b, i);
      var d = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, {numeric: true});
      return dir * d || Number(a.getAttribute("data-n")) - Number(b.getAttribute("data-n"));
    });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }
  function text(row) {
    if (row.seatraceText === undefined) {
      row.seatraceText = Array.prototype.map.call(row.cells, function (c) {
        return c.textContent.toLowerCase();
      }).join(" | ");
    }
    return row.seatraceText;
  }
  function filter(box, table) {
    var words = box.querySelector("input").value.toLowerCase().trim();
    var outcome = box.querySelector("select").value;
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var ok = (!words || text(row).indexOf(words) >= 0) &&
        (!outcome || row.getAttribute("data-o") === outcome ||
         (outcome === "early" && row.hasAttribute("data-early")));
      row.hidden = !ok;
      shown += ok ? 1 : 0;
    });
    box.querySelector("output").textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
  }
  Array.prototype.forEach.call(document.querySelectorAll("div.tools"), function (box) {
    var table = document.getElementById(box.getAttribute("data-table"));
    if (!table) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      button.title = "sort by " + th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, i, th); });
    });
    box.querySelector("input").addEventListener("input", function () { filter(box, table); });
    box.querySelector("select").addEventListener("change", function () { filter(box, table); });
    box.hidden = false;
    filter(box, table);
  });
}());
"""
"""The page's only script: fixed text, no data of the report in it."""


def _e(value: object) -> str:
    """Escape anything from the document for text and attribute positions alike."""
    return html.escape(str(value), quote=True)


BREAKS = re.compile(r"(::|/|\[|,)")


def _name(value: object) -> str:
    """A test name or id, escaped, with line-break opportunities after ``::``, ``/``, ``[``."""
    return "".join(
        _e(part) + ("<wbr>" if BREAKS.fullmatch(part) else "") for part in BREAKS.split(str(value))
    )


def _num(value: float) -> str:
    """Short SVG coordinates: one decimal is sub-pixel already."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _svg_open(cls: str, width: float, height: float, title: str) -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>{_e(title)}</title>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    """An SVG label; ``text`` must already be escaped."""
    klass = f' class="{cls}"' if cls else ""
    return f'<text{klass} x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}">{text}</text>'


def _line(cls: str, x1: float, x2: float, y1: float, y2: float) -> str:
    return f'<line class="{cls}" x1="{_num(x1)}" x2="{_num(x2)}" y1="{_num(y1)}" y2="{_num(y2)}"/>'


def _nice_step(span: float, ticks: int = 5) -> float:
    """A 1/2/5 × 10^k step giving about ``ticks`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    base: float = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * base:
            return mult * base
    return 10 * base


def _ticks(low: float, high: float, ticks: int = 5) -> list[float]:
    step = _nice_step(high - low, ticks)
    first = math.ceil(low / step) * step
    count = int((high - first) / step + 1e-9) + 1
    return [first + i * step for i in range(max(0, min(count, 50)))]


def _tick_label(value: float, step: float) -> str:
    digits = 0 if step >= 1 else min(6, -math.floor(math.log10(step)))
    return f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], left: Sequence[int] = (0,)) -> str:
    """A plain table; cells are escaped here, so callers pass raw values."""
    head = "".join(f'<th class="{"l" if i in left else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = [
        "<tr>"
        + "".join(f'<td class="{"l" if i in left else ""}">{_e(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kind(outcome: object) -> str:
    """The outcome's CSS class; anything unknown to this report counts as an error."""
    return outcome if isinstance(outcome, str) and outcome in OUTCOMES else "error"


def _early_column(history: dict[str, list[Any]]) -> list[bool]:
    """The history's ``early`` column; documents written before it existed have none."""
    early = history.get("early")
    return [bool(x) for x in early] if early else [False] * len(history["start_ns"])


def ordered(races: Iterable[RaceDoc]) -> list[RaceDoc]:
    """Races to look at first first: ``FAIL``, ``unchecked``, interrupted, then ``PASS``; the
    session's order within each."""
    rank = {word: i for i, word in enumerate(VERDICT_ORDER)}
    return sorted(races, key=lambda race: rank.get(_verdict(race), len(rank)))


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


def _summary(races: Sequence[RaceDoc]) -> str:
    """One row per race, the columns of the terminal's ``race summary``, in report order."""
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(SUMMARY_HEADERS))
    rows = []
    for i, race in enumerate(races):
        verdict = _verdict(race)
        cells = row_cells(race)
        rows.append(
            f'<tr><td class="name"><a href="#race-{i}" title="{_e(race["name"])}">'
            f"{_name(race['name'])}</a></td>"
            + "".join(f"<td>{_e(c)}</td>" for c in cells)
            + f'<td class="verdict {verdict}">{verdict}</td></tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _status_order(code: str) -> tuple[bool, int, str]:
    """Status codes in numeric order, then "no response"."""
    return (not code.isdigit(), int(code) if code.isdigit() else 0, code)


StatusRow = tuple[str, str, int]
"""(status or ``no response``, what the bodies said, count)."""


def _status_rows(race: RaceDoc) -> list[StatusRow]:
    return _ordered_status(status_counts(race))


def _ordered_status(counts: Counter[tuple[str, str]]) -> list[StatusRow]:
    """Statuses in numeric order, then "no response"; a status's most frequent reason first."""
    rows = sorted(counts.items(), key=lambda item: (*_status_order(item[0][0]), -item[1], item[0][1]))
    return [(code, reason, n) for (code, reason), n in rows]


def _status_table(rows: Sequence[StatusRow]) -> str:
    """Status, count and share; with a reason column when a body said something."""
    total = sum(n for _, _, n in rows) or 1
    if any(reason for _, reason, _ in rows):
        shown = [(code, reason, n, f"{100 * n / total:.2f}%") for code, reason, n in rows]
        return _table(("status", "reason", "count", "share"), shown, left=(0, 1))
    return _table(("status", "count", "share"), [(code, n, f"{100 * n / total:.2f}%") for code, _, n in rows])


def _operations(race: RaceDoc) -> str:
    """A race that mixed operations: its outcomes and statuses per operation."""
    ops = race.get("by_operation")
    if not ops:
        return ""
    rows = [
        (
            op["operation"],
            op["requests"],
            op["wins"],
            op["rejections"],
            op["errors"],
            op["unknown"],
            ", ".join(f"{code} ×{n}" for code, n in op["status_counts"].items()) or "-",
        )
        for op in ops
    ]
    headers = ("operation", "requests", "wins", "rejections", "errors", "unknown", "statuses")
    return "<h3>Per operation</h3>" + _table(headers, rows, left=(0, 6))


# -- charts -----------------------------------------------------------------------------------


def _status_parts(history: dict[str, list[Any]]) -> list[tuple[str, int, str]]:
    """Status codes as bar parts, each coloured by the outcome its requests got (a 201 that a
    ``success=`` rule rejected is grey): (label, count, outcome) in status order."""
    pairs = Counter(
        (str(status) if status else "no response", _kind(outcome))
        for status, outcome in zip(history["status"], history["outcome"], strict=True)
    )
    order = {o: i for i, o in enumerate(OUTCOMES)}
    keys = sorted(pairs, key=lambda k: (_status_order(k[0]), order[k[1]]))
    ways = Counter(label for label, _ in keys)
    return [
        (label if ways[label] == 1 else f"{label} {kind}", pairs[label, kind], kind) for label, kind in keys
    ]


def _bar_svg(parts: Sequence[tuple[str, int, str]], label: str) -> str:
    """A horizontal stacked bar: (label, count, css class) per part; a part's text only where
    it fits under the part."""
    width, height, left = 560, 46, 4
    total = sum(n for _, n, _ in parts) or 1
    x = float(left)
    out = [_svg_open("bar", width, height, label)]
    for name, count, cls in parts:
        w = (width - 2 * left) * count / total
        if count:
            text = f"{name} {count:,}"
            out.append(
                f'<rect class="{cls}" x="{_num(x)}" y="4" width="{_num(max(w, 1))}" height="18">'
                f"<title>{_e(text)} ({100 * count / total:.1f}%)</title></rect>"
            )
            if w >= CHAR_W * len(text) + 6:
                out.append(_text(x + 3, 38, _e(text)))
        x += w
    out.append("</svg>")
    return "".join(out)


def _latencies(history: dict[str, list[Any]]) -> dict[str, list[int]]:
    """Latency (end - sent) per outcome, of requests that were sent and got an outcome in time."""
    out: dict[str, list[int]] = {o: [] for o in OUTCOMES}
    columns = zip(history["start_ns"], history["end_ns"], history["outcome"], strict=True)
    for sent, end, outcome in columns:
        if sent and outcome != "unknown" and end >= sent:
            out[_kind(outcome)].append(end - sent)
    return out


def _place_labels(marks: Sequence[tuple[float, str]], right_edge: float) -> list[tuple[float, int, str, str]]:
    """Percentile labels that never overlap: each beside its line (left of it near the right
    edge), in the first row where it clears the labels already there. Returns (x, row, anchor,
    text) per label."""
    placed: list[tuple[float, int, str, str]] = []
    row_ends: list[list[tuple[float, float]]] = []
    for x, text in sorted(marks):
        w = CHAR_W * len(text)
        anchor, a, b = ("start", x + 3, x + 3 + w) if x + 3 + w <= right_edge else ("end", x - 3 - w, x - 3)
        row = 0
        while row < len(row_ends) and any(a < hi + 4 and lo < b + 4 for lo, hi in row_ends[row]):
            row += 1
        if row == len(row_ends):
            row_ends.append([])
        row_ends[row].append((a, b))
        placed.append((x + 3 if anchor == "start" else x - 3, row, anchor, text))
    return placed


def _histogram_svg(race: RaceDoc) -> str:
    """Stacked latency histogram of the history; percentile bars when the history was lost;
    a sentence when nothing was measured."""
    history = race.get("history")
    if not history:
        return _percentile_svg(race)
    by_outcome = _latencies(history)
    values = [v for vals in by_outcome.values() for v in vals]
    if not values:
        return '<p class="note">No request got its response in time: no latency to draw.</p>'
    low, high = min(values), max(values)
    if high == low:
        high = low + 1000
    span = high - low
    bins = HISTOGRAM_BINS
    counts = {o: [0] * bins for o in by_outcome}
    for outcome, vals in by_outcome.items():
        column = counts[outcome]
        for v in vals:
            column[min(bins - 1, int((v - low) * bins / span))] += 1
    peak = max(sum(c[b] for c in counts.values()) for b in range(bins)) or 1
    width, height = 640, 270
    left, right, top, bottom = 44, 12, 48, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    base_y = top + plot_h
    bar_w = plot_w / bins
    out = [_svg_open("histogram", width, height, "latency histogram")]
    for tick in _ticks(0, peak, 4):
        y = base_y - plot_h * tick / peak
        out.append(_line("grid", left, width - right, y, y) + _text(left - 4, y + 4, str(int(tick)), "end"))
    for b in range(bins):
        stacked = 0
        x = left + b * bar_w
        lo_ms, hi_ms = (low + span * b / bins) / 1e6, (low + span * (b + 1) / bins) / 1e6
        for outcome in OUTCOMES:
            n = counts[outcome][b]
            if not n:
                continue
            h = plot_h * n / peak
            y = base_y - plot_h * (stacked + n) / peak
            out.append(
                f'<rect class="{outcome}" x="{_num(x + 0.5)}" y="{_num(y)}" '
                f'width="{_num(max(bar_w - 1, 0.5))}" height="{_num(max(h, 0.5))}">'
                f"<title>{lo_ms:.2f}–{hi_ms:.2f} ms: {n} {outcome}</title></rect>"
            )
            stacked += n
    step = _nice_step((high - low) / 1e6)
    for tick in _ticks(low / 1e6, high / 1e6):
        x = left + plot_w * (tick * 1e6 - low) / span
        out.append(
            _line("axis", x, x, base_y, base_y + 4) + _text(x, base_y + 16, _tick_label(tick, step), "middle")
        )
    out.append(_line("axis", left, width - right, base_y, base_y))
    out.append(_text(left + plot_w / 2, height - 4, "latency (ms)", "middle"))
    lat = race["latency"]["all"]
    marks = []
    for value, name in ((lat["med_ns"], "p50"), (lat["p95_ns"], "p95"), (lat["p99_ns"], "p99")):
        if value is not None and low <= value <= high:
            marks.append((left + plot_w * (value - low) / span, f"{name} {_ms(value, 1)}"))
    for x, row, anchor, text in _place_labels(marks, width - 2):
        y = 12 + 14 * row
        line_x = x - 3 if anchor == "start" else x + 3
        out.append(
            f'<line class="pct" x1="{_num(line_x)}" x2="{_num(line_x)}" y1="{_num(y - 9)}" y2="{base_y}">'
            f"<title>{_e(text)} ms</title></line>" + _text(x, y, _e(text), anchor, "pct-label")
        )
    out.append("</svg>")
    return "".join(out)


def _pcts(group: PercentilesDoc) -> list[float | None]:
    """min, p50, p90, p95, p99, max: the columns of every latency table and chart."""
    return [
        group["min_ns"],
        group["med_ns"],
        group["p90_ns"],
        group["p95_ns"],
        group["p99_ns"],
        group["max_ns"],
    ]


def _percentile_svg(race: RaceDoc) -> str:
    """Without a history only the percentiles are known: one bar each (none measured: a note)."""
    names = ("min", "p50", "p90", "p95", "p99", "max")
    rows = list(zip(names, _pcts(race["latency"]["all"]), strict=True))
    if all(v is None for _, v in rows):
        return '<p class="note">No latency was measured.</p>'
    peak = max((v for _, v in rows if v is not None), default=0.0) or 1.0
    width, row_h, left = 640, 22, 44
    height = row_h * len(rows) + 8
    out = [_svg_open("percentiles", width, height, "latency percentiles (no request history)")]
    for i, (name, value) in enumerate(rows):
        y = 4 + i * row_h
        out.append(_text(left - 6, y + 14, name, "end"))
        if value is not None:
            w = (width - left - 90) * value / peak
            out.append(
                f'<rect class="stat" x="{left}" y="{y + 3}" width="{_num(max(w, 0.5))}" '
                f'height="{row_h - 6}"/>' + _text(left + w + 4, y + 14, f"{_ms(value, 2)} ms")
            )
    out.append("</svg>")
    return "".join(out)


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
    return sorted(wins + odd + _spread(rest, room)), cut


def _spread(items: list[int], room: int) -> list[int]:
    """``room`` items evenly spread over ``items`` (all of them when they fit)."""
    if len(items) <= room:
        return items
    return [items[int(k * len(items) / room)] for k in range(room)] if room > 0 else []


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


def _timelines(race: RaceDoc) -> str:
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
    timeline = _Timeline(history, t0=min(starts))
    figures = [timeline.svg(res, groups[res], unsent[res], spreads.get(res)) for res in chosen]
    note = ""
    if left_out:
        note = (
            f'<p class="note">{left_out} more resources not drawn (the first {FIRST_TIMELINES} and those '
            f"with a violation are, up to {MAX_TIMELINES}); the JSON report has every request.</p>"
        )
    return TIMELINE_NOTE + '<div class="timelines">' + "".join(figures) + "</div>" + note


class _Timeline:
    """Draws resources of one race on a shared time origin (the race's first final write)."""

    WIDTH, LEFT, RIGHT, TOP, BOTTOM = 640, 14, 14, 8, 30

    def __init__(self, history: dict[str, list[Any]], t0: int) -> None:
        self.sent: list[int] = history["start_ns"]
        self.end: list[int] = history["end_ns"]
        self.outcome: list[str] = history["outcome"]
        self.status: list[int] = history["status"]
        self.client: list[int] = history["client"]
        self.round: list[int] = history.get("round") or [1] * len(self.sent)
        self.early = _early_column(history)
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
            return _num(left + plot_w * (ns - self.t0 - lo) / span)

        groups: dict[str, list[str]] = {o: [] for o in ("rejection", "error", "unknown", "win")}
        multi_round = any(self.round[i] != 1 for i in drawn)
        for k, i in enumerate(drawn):
            y = _num(top + row * (k + 0.5))
            kind = _kind(outcome[i])
            x1, x2 = x_of(sent[i]), x_of(max(end[i], sent[i]))
            where = f" round {self.round[i]}" if multi_round else ""
            what = self.status[i] or "no response"
            how = ", early answer" if early[i] else ""
            label = f"client {self.client[i]}{where}: {what} {kind}{how}, {_ms(end[i] - sent[i], 2)} ms"
            radius = 4 if kind == "win" else 3 if early[i] else 2
            hollow = ' class="early"' if early[i] else ""
            groups[kind].append(
                f'<line x1="{x1}" x2="{x2}" y1="{y}" y2="{y}"/>'
                f'<circle{hollow} cx="{x1}" cy="{y}" r="{radius}"><title>{_e(label)}</title></circle>'
            )
        caption = f"Resource <b>{_e(resource)}</b>: {len(indices) + unsent} requests"
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
            caption += f" · start spread {_ms(spread_ns, 3)} ms"
        out = [
            f"<figure><figcaption>{caption}</figcaption>",
            _svg_open("timeline", self.WIDTH, height, f"timeline of resource {resource}"),
        ]
        step = _nice_step(span / 1e6)
        for tick in _ticks(lo / 1e6, hi / 1e6):
            x = left + plot_w * (tick * 1e6 - lo) / span
            out.append(
                _line("grid", x, x, top, base_y) + _text(x, base_y + 14, _tick_label(tick, step), "middle")
            )
        out.append(_line("axis", left, self.WIDTH - self.RIGHT, base_y, base_y))
        out.append(_text(self.WIDTH - self.RIGHT, height - 3, "ms since the race started", "end"))
        for kind, elements in groups.items():  # winners last, on top
            if elements:
                out.append(f'<g class="{kind}">{"".join(elements)}</g>')
        out.append("</svg></figure>")
        return "".join(out)


# -- the request table ------------------------------------------------------------------------


REQUEST_COLUMNS = (
    ("sent ms", "when its final write went out, ms since the race's first send"),
    ("client", "client number within its resource"),
    ("resource", "resource id"),
    ("round", "round"),
    ("status", "HTTP status (- for none)"),
    ("outcome", "how the response counted"),
    ("latency ms", "final write to complete response"),
    ("arrival ms", "the service's X-Arrival-Ns stamp, ms since the race's first arrival there"),
    ("early", "answered before its held bytes were sent"),
    ("reason", "why it is an error or unknown, else what a rejection's body said"),
)
LEFT_COLUMNS = ("resource", "outcome", "early", "reason")
EARLY_MARK = '<i class="sw early"></i>early'
OUTCOME_FILTERS = (("", "any"), *((o, o) for o in OUTCOMES), ("early", "early answers"))


def _table_rows(history: dict[str, list[Any]], cap: int) -> tuple[list[int], int]:
    """The requests a table shows, at most ``cap``: winners, then errors, unknowns and early
    answers, then an even sample of the rest; in sending order. Returns (rows, priority rows)."""
    outcome, early = history["outcome"], _early_column(history)
    everyone = range(len(outcome))
    if len(everyone) <= cap:
        rows, first = list(everyone), []
    else:
        first = [i for i in everyone if outcome[i] == "win"]
        first += [i for i in everyone if outcome[i] != "win" and (outcome[i] != "rejection" or early[i])]
        first = first[:cap]
        chosen = set(first)
        rows = first + _spread([i for i in everyone if i not in chosen], cap - len(first))
    sent, rounds = history["start_ns"], history.get("round") or [1] * len(outcome)
    rows.sort(key=lambda i: (rounds[i], sent[i] or math.inf, i))
    return rows, len(first)


def _requests(index: int, race: RaceDoc, cap: int) -> tuple[str, int]:
    """The race's table of requests (sortable and filterable with the script), and its rows."""
    history = race.get("history")
    if not history or not history["start_ns"]:
        return "", 0
    total = len(history["start_ns"])
    rows, first = _table_rows(history, cap)
    sent, end, server = history["start_ns"], history["end_ns"], history.get("server_ns") or [0] * total
    t0 = min((s for s in sent if s), default=0)
    s0 = min((s for s in server if s), default=0)
    early = _early_column(history)
    reasons = history.get("reason") or [""] * total  # older documents have no reasons
    out = []
    for n, i in enumerate(rows):
        kind = _kind(history["outcome"][i])
        marks = f' data-o="{kind}" class="{kind}"' + (" data-early" if early[i] else "")
        status = history["status"][i]
        sent_cell = (
            f'<td data-k="{(sent[i] - t0) / 1e6:.4f}">{(sent[i] - t0) / 1e6:.3f}</td>'
            if sent[i]
            else '<td data-k="-1">-</td>'
        )
        latency = (
            f'<td data-k="{end[i] - sent[i]}">{_ms(end[i] - sent[i], 2)}</td>'
            if sent[i] and end[i] >= sent[i]
            else '<td data-k="-1">-</td>'
        )
        arrival = (
            f'<td data-k="{(server[i] - s0) / 1e6:.4f}">{(server[i] - s0) / 1e6:.3f}</td>'
            if server[i]
            else '<td data-k="-1">-</td>'
        )
        out.append(
            f'<tr data-n="{n}"{marks}>{sent_cell}<td>{_e(history["client"][i])}</td>'
            f'<td class="l">{_e(history["resource"][i])}</td><td>{_e(history["round"][i])}</td>'
            f'<td data-k="{_e(status or 0)}">{_e(status or "-")}</td>'
            f'<td class="l"><i class="sw {kind}"></i>{_e(history["outcome"][i])}</td>{latency}{arrival}'
            f'<td class="l">{EARLY_MARK if early[i] else ""}</td><td class="wrap">{_e(reasons[i])}</td></tr>'
        )
    if len(rows) == total:
        note = f"All {total:,} requests, in sending order."
    else:
        note = (
            f"{len(rows):,} of {total:,} requests (at most {cap:,} rows here): "
            f"{first:,} winners, errors, timeouts and early answers first, then an even sample of the "
            "rest, in sending order. The JSON report has every request."
        )
    head = "".join(
        f'<th class="{"l" if name in LEFT_COLUMNS else ""}" title="{_e(tip)}">{_e(name)}</th>'
        for name, tip in REQUEST_COLUMNS
    )
    options = "".join(f'<option value="{v}">{_e(label)}</option>' for v, label in OUTCOME_FILTERS)
    tools = (
        f'<div class="tools" data-table="req-{index}" hidden>'
        '<label>filter <input type="search" placeholder="client, resource, status…"></label>'
        f"<label>outcome <select>{options}</select></label><output></output></div>"
    )
    table = (
        f'<div class="scroll"><table class="requests" id="req-{index}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(out)}</tbody></table></div>"
    )
    return f'<h3>Requests</h3><p class="note">{note}</p>{tools}{table}', len(rows)


# -- per race ---------------------------------------------------------------------------------


def _violations(race: RaceDoc) -> str:
    violations = race["violations"]
    if not violations:
        return '<p class="note">No violations.</p>'
    rows = [
        (
            v["kind"],
            "-" if v["resource"] is None else v["resource"],
            "-" if v["round"] is None else v["round"],
            v["allowed"],
            v["found"],
            v["detail"],
        )
        for v in violations[:MAX_VIOLATION_ROWS]
    ]
    more = len(violations) - len(rows)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"wrap" if i in (1, 5) else "l" if i == 0 else ""}">{_e(c)}</td>'
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    heads = ("violation", "resource", "round", "allowed", "found", "detail")
    head = "".join(f'<th class="{"l" if i in (0, 1, 5) else ""}">{h}</th>' for i, h in enumerate(heads))
    text = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    rate = race["violation_rate"]
    if rate:
        text = f'<p class="note">{_e(rate)}</p>' + text
    if more > 0:
        text += f'<p class="note">and {more} more violations (see the JSON report)</p>'
    return text


def _winners(race: RaceDoc) -> str:
    """Who won the resources that broke the rule, with the start of what the service said."""
    violated = []
    for v in race["violations"]:
        res = v["resource"]
        if res is not None and res not in violated and race["winners"].get(res):
            violated.append(res)
    if not violated:
        return ""
    rows = []
    for res in violated[:MAX_WINNER_RESOURCES]:
        wins = race["winners"][res]
        for w in wins[:MAX_WINNERS_LISTED]:
            body = w["body"]
            body = body[:BODY_SHOWN] + ("…" if len(body) > BODY_SHOWN else "")
            rows.append(
                f'<tr><td class="wrap">{_e(res)}</td><td>{_e(w["client"])}</td><td>{_e(w["round"])}</td>'
                f"<td>{_e(w['status'])}</td><td>{_ms(w['latency_ns'], 2)}</td>"
                f'<td class="body">{_e(body)}</td></tr>'
            )
        if len(wins) > MAX_WINNERS_LISTED:
            rows.append(
                f'<tr><td class="wrap">{_e(res)}</td><td colspan="5" class="l">'
                f"and {len(wins) - MAX_WINNERS_LISTED} more winners</td></tr>"
            )
    more = len(violated) - MAX_WINNER_RESOURCES
    note = f'<p class="note">and {more} more resources with violations</p>' if more > 0 else ""
    return (
        "<h3>Winners of the resources that broke the rule</h3><table><thead><tr>"
        '<th class="l">resource</th><th>client</th><th>round</th><th>status</th><th>latency ms</th>'
        f'<th class="l">body (start)</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{note}'
    )


def _extra(race: RaceDoc, key: str) -> Any:
    """A key that documents written by older versions lack (``raced``, ``samples``)."""
    return cast("Mapping[str, Any]", race).get(key)


def _raced(race: RaceDoc) -> list[tuple[str, object]]:
    """What was raced, so the page explains itself: method, URL, base URL, HTTP version, start."""
    raced = _extra(race, "raced")
    if raced is None:
        if _extra(race, "samples") is None:
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


def _samples(race: RaceDoc) -> str:
    """A few responses per resource, losers included: what the service said, in its words."""
    samples = _extra(race, "samples")
    if not samples:
        return ""
    violated = [str(v["resource"]) for v in race["violations"] if v["resource"] is not None]
    order = list(dict.fromkeys([*violated, *(str(r) for r in race["resources"]), *map(str, samples)]))
    listed = [res for res in order if samples.get(res)]
    rows = []
    for res in listed[:MAX_SAMPLE_RESOURCES]:
        for sample in samples[res][:MAX_SAMPLES_LISTED]:
            kind = _kind(sample.get("outcome"))
            body = str(sample.get("body", ""))[:BODY_SHOWN]
            rows.append(
                f'<tr><td class="wrap">{_e(res)}</td><td>{_e(sample.get("client", ""))}</td>'
                f"<td>{_e(sample.get('round', ''))}</td><td>{_e(sample.get('status') or '-')}</td>"
                f'<td class="l"><i class="sw {kind}"></i>{_e(sample.get("outcome", ""))}</td>'
                f"<td>{_ms(sample.get('latency_ns'), 2)}</td>"
                f'<td class="l">{EARLY_MARK if sample.get("early") else ""}</td>'
                f'<td class="body">{_e(body)}</td><td class="wrap">{_e(sample.get("reason", ""))}</td></tr>'
            )
    more = len(listed) - MAX_SAMPLE_RESOURCES
    note = f'<p class="note">and {more} more resources (see the JSON report)</p>' if more > 0 else ""
    heads = (
        "resource",
        "client",
        "round",
        "status",
        "outcome",
        "latency ms",
        "early",
        "body (start)",
        "reason",
    )
    left = ("resource", "outcome", "early", "body (start)", "reason")
    head = "".join(f'<th class="{"l" if h in left else ""}">{h}</th>' for h in heads)
    return (
        '<h3>Sample responses</h3><p class="note">The first responses seen per resource, losers '
        f"included (violating resources first, {MAX_SAMPLE_RESOURCES} resources at most).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
    )


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
            f"{_ms(spread['median_ns'], 3)} / {_ms(spread['max_ns'], 3)} ms",
        ),
    ]
    if spread["server_median_ns"] is not None:
        server = f"{_ms(spread['server_median_ns'], 3)} / {_ms(spread['server_max_ns'], 3)} ms"
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
        spans.append(f'<span class="fact{long}">{_e(k)}: <b>{_e(v)}</b></span>')
    return '<p class="meta">' + " · ".join(spans) + "</p>"


def _stopped(race: RaceDoc) -> str:
    """Where and why a race ended before its last wave (a hook failed, Ctrl-C); empty if it ran
    to the end."""
    text = stopped_text(race)
    return f'<p class="note stopped"><b>{_e(text)}</b></p>' if text else ""


def _race_section(index: int, race: RaceDoc, table_rows: int) -> tuple[str, int]:
    """One race's section, and how many request-table rows it used."""
    verdict = _verdict(race)
    head = [
        f'<section id="race-{index}"><h2>{_name(race["name"])} ',
        f'<span class="verdict {verdict}">{verdict}</span></h2>',
        _facts(race),
        *(f'<p class="note">note: {_e(text)}</p>' for text in race["notes"]),
        _stopped(race),
        "<h3>Violations</h3>",
        _violations(race),
    ]
    if not race["requests"]:
        note = '<p class="note">This race made no requests: there is nothing to chart.</p>'
        return "".join([*head, note, "</section>"]), 0
    history = race.get("history")
    status_rows = _status_rows(race)
    outcomes = [
        ("wins", race["wins"], "win"),
        ("rejections", race["rejections"], "rejection"),
        ("errors", race["errors"], "error"),
        ("unknown", race["unknown"], "unknown"),
    ]
    errors: dict[str, int] = race["error_reasons"]
    error_table = (
        "<h3>Error reasons</h3>" + _table(("reason", "count"), Counter(errors).most_common())
        if errors
        else ""
    )
    lat = race["latency"]
    lat_rows = [
        (name, group["count"], *(_ms(v, 2) for v in _pcts(group)))
        for name, group in (("all", lat["all"]), ("winners", lat["winners"]), ("losers", lat["losers"]))
    ]
    status_bar = _bar_svg(_status_parts(history), "status codes, coloured by outcome") if history else ""
    requests, used = _requests(index, race, table_rows)
    body = [
        KEY,
        '<div class="charts"><figure><figcaption>Latency histogram (final write → response)</figcaption>',
        _histogram_svg(race),
        "</figure><figure><figcaption>Latency (ms)</figcaption>",
        _table(("requests", "count", "min", "p50", "p90", "p95", "p99", "max"), lat_rows),
        "</figure></div>",
        "<h3>Status breakdown</h3>",
        '<div class="charts"><figure>',
        status_bar,
        _bar_svg(outcomes, "outcomes"),
        "</figure><figure>",
        _status_table(status_rows),
        "</figure><figure>",
        _table(("outcome", "count"), [(name, n) for name, n, _ in outcomes]),
        "</figure></div>",
        _operations(race),
        error_table,
        "<h3>Timeline per resource</h3>",
        _timelines(race),
        _winners(race),
        _samples(race),
        requests,
        "</section>",
    ]
    return "".join(head + body), used


def render_html(document: dict[str, Any]) -> str:
    """The whole report as one HTML string, from a ``--race-json`` document."""
    races = ordered(document["races"])
    verdicts = Counter(_verdict(r) for r in races)
    requests = sum(r["requests"] for r in races)
    machine = document.get("machine_info", {})
    meta = " · ".join(
        f"{_e(k)}: {_e(v)}"
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
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
            "<h1>pytest-seatrace race report</h1>",
            f'<p class="meta">{meta}</p>',
            f"<p><b>{len(races)}</b> races, <b>{requests:,}</b> requests, {counts}, "
            f"<b>{sum(r['double_bookings'] for r in races)}</b> double bookings</p>",
            "<h2>Summary</h2>",
            '<p class="note">Failing races first, then unchecked (check=False), interrupted and passing.</p>'
            if races
            else "",
            _summary(races) if races else '<p class="note">No race ran.</p>',
            _status_table(_ordered_status(status)) if status else "",
            *sections,
            f"<script>{SCRIPT}</script></body></html>",
        ]
    )
