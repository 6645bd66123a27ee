"""The page's charts of one race: a stacked latency histogram (percentile bars without a
history) and stacked bars of statuses and outcomes, drawn as SVG here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.report.html.markup import OUTCOMES, esc, outcome_class, percentiles
from pytest_seatrace.report.html.svg import CHAR_W, ms_ticks, num, svg_line, svg_open, svg_text, tick_values
from pytest_seatrace.report.wording import format_ms, status_key

HISTOGRAM_BINS = 40


def status_parts(history: dict[str, list[Any]]) -> list[tuple[str, int, str]]:
    """Status codes as bar parts, each coloured by the outcome its requests got (a 201 that a
    ``success=`` rule rejected is grey): (label, count, outcome) in status order."""
    pairs = Counter(
        (str(status) if status else "no response", outcome_class(outcome))
        for status, outcome in zip(history["status"], history["outcome"], strict=True)
    )
    order = {o: i for i, o in enumerate(OUTCOMES)}
    keys = sorted(pairs, key=lambda k: (status_key(k[0]), order[k[1]]))
    ways = Counter(label for label, _ in keys)
    return [
        (label if ways[label] == 1 else f"{label} {kind}", pairs[label, kind], kind) for label, kind in keys
    ]


def bar_svg(parts: Sequence[tuple[str, int, str]], label: str) -> str:
    """A horizontal stacked bar: (label, count, css class) per part; a part's text only where
    it fits under the part."""
    width, height, left = 560, 46, 4
    total = sum(n for _, n, _ in parts) or 1
    x = float(left)
    out = [svg_open("bar", width, height, label)]
    for name, count, cls in parts:
        w = (width - 2 * left) * count / total
        if count:
            text = f"{name} {count:,}"
            out.append(
                f'<rect class="{cls}" x="{num(x)}" y="4" width="{num(max(w, 1))}" height="18">'
                f"<title>{esc(text)} ({100 * count / total:.1f}%)</title></rect>"
            )
            if w >= CHAR_W * len(text) + 6:
                out.append(svg_text(x + 3, 38, esc(text)))
        x += w
    out.append("</svg>")
    return "".join(out)


def _latencies(history: dict[str, list[Any]]) -> dict[str, list[int]]:
    """Latency (end - sent) per outcome, of requests that were sent and got an outcome in time."""
    out: dict[str, list[int]] = {o: [] for o in OUTCOMES}
    columns = zip(history["start_ns"], history["end_ns"], history["outcome"], strict=True)
    for sent, end, outcome in columns:
        if sent and outcome != "unknown" and end >= sent:
            out[outcome_class(outcome)].append(end - sent)
    return out


def place_labels(marks: Sequence[tuple[float, str]], right_edge: float) -> list[tuple[float, int, str, str]]:
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


def histogram_svg(race: RaceDoc) -> str:
    """Stacked latency histogram of the history; percentile bars when the history was lost;
    a sentence when nothing was measured."""
    history = race.get("history")
    if not history:
        return percentile_svg(race)
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
    out = [svg_open("histogram", width, height, "latency histogram")]
    for tick in tick_values(0, peak, 4):
        y = base_y - plot_h * tick / peak
        out.append(
            svg_line("grid", left, width - right, y, y) + svg_text(left - 4, y + 4, str(int(tick)), "end")
        )
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
                f'<rect class="{outcome}" x="{num(x + 0.5)}" y="{num(y)}" '
                f'width="{num(max(bar_w - 1, 0.5))}" height="{num(max(h, 0.5))}">'
                f"<title>{lo_ms:.2f}–{hi_ms:.2f} ms: {n} {outcome}</title></rect>"
            )
            stacked += n
    for x, text in ms_ticks(low, high, left, plot_w):
        out.append(svg_line("axis", x, x, base_y, base_y + 4) + svg_text(x, base_y + 16, text, "middle"))
    out.append(svg_line("axis", left, width - right, base_y, base_y))
    out.append(svg_text(left + plot_w / 2, height - 4, "latency (ms)", "middle"))
    lat = race["latency"]["all"]
    marks = []
    for value, name in ((lat["med_ns"], "p50"), (lat["p95_ns"], "p95"), (lat["p99_ns"], "p99")):
        if value is not None and low <= value <= high:
            marks.append((left + plot_w * (value - low) / span, f"{name} {format_ms(value, 1)}"))
    for x, row, anchor, text in place_labels(marks, width - 2):
        y = 12 + 14 * row
        line_x = x - 3 if anchor == "start" else x + 3
        out.append(
            f'<line class="pct" x1="{num(line_x)}" x2="{num(line_x)}" y1="{num(y - 9)}" y2="{base_y}">'
            f"<title>{esc(text)} ms</title></line>" + svg_text(x, y, esc(text), anchor, "pct-label")
        )
    out.append("</svg>")
    return "".join(out)


def percentile_svg(race: RaceDoc) -> str:
    """Without a history only the percentiles are known: one bar each (none measured: a note)."""
    names = ("min", "p50", "p90", "p95", "p99", "max")
    rows = list(zip(names, percentiles(race["latency"]["all"]), strict=True))
    if all(v is None for _, v in rows):
        return '<p class="note">No latency was measured.</p>'
    peak = max((v for _, v in rows if v is not None), default=0.0) or 1.0
    width, row_h, left = 640, 22, 44
    height = row_h * len(rows) + 8
    out = [svg_open("percentiles", width, height, "latency percentiles (no request history)")]
    for i, (name, value) in enumerate(rows):
        y = 4 + i * row_h
        out.append(svg_text(left - 6, y + 14, name, "end"))
        if value is not None:
            w = (width - left - 90) * value / peak
            out.append(
                f'<rect class="stat" x="{left}" y="{y + 3}" width="{num(max(w, 0.5))}" '
                f'height="{row_h - 6}"/>' + svg_text(left + w + 4, y + 14, f"{format_ms(value, 2)} ms")
            )
    out.append("</svg>")
    return "".join(out)
