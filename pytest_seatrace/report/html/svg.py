"""SVG primitives for the page's charts: the element strings, coordinates and axis ticks."""

from __future__ import annotations

import math

from pytest_seatrace.report.html.markup import esc

CHAR_W = 6.6
"""Width of one character of an 11px SVG label, generously: used to keep labels apart."""


def num(value: float) -> str:
    """Short SVG coordinates: one decimal is sub-pixel already."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def svg_open(cls: str, width: float, height: float, title: str) -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>{esc(title)}</title>"
    )


def svg_text(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    """An SVG label; ``text`` must already be escaped."""
    klass = f' class="{cls}"' if cls else ""
    return f'<text{klass} x="{num(x)}" y="{num(y)}" text-anchor="{anchor}">{text}</text>'


def svg_line(cls: str, x1: float, x2: float, y1: float, y2: float) -> str:
    return f'<line class="{cls}" x1="{num(x1)}" x2="{num(x2)}" y1="{num(y1)}" y2="{num(y2)}"/>'


def nice_step(span: float, ticks: int = 5) -> float:
    """A 1/2/5 × 10^k step giving about ``ticks`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    base: float = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * base:
            return mult * base
    return 10 * base


def tick_values(low: float, high: float, ticks: int = 5) -> list[float]:
    step = nice_step(high - low, ticks)
    first = math.ceil(low / step) * step
    count = int((high - first) / step + 1e-9) + 1
    return [first + i * step for i in range(max(0, min(count, 50)))]


def tick_label(value: float, step: float) -> str:
    digits = 0 if step >= 1 else min(6, -math.floor(math.log10(step)))
    return f"{value:.{digits}f}"


def ms_ticks(low_ns: float, high_ns: float, left: float, width: float) -> list[tuple[float, str]]:
    """The ticks of a milliseconds axis over ``low_ns``..``high_ns``, drawn ``width`` wide from
    ``left``: (x, label) each."""
    span = high_ns - low_ns
    step = nice_step(span / 1e6)
    return [
        (left + width * (tick * 1e6 - low_ns) / span, tick_label(tick, step))
        for tick in tick_values(low_ns / 1e6, high_ns / 1e6)
    ]
