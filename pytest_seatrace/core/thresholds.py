"""Threshold strings such as ``"p95 < 2000ms"``: parsed once at collection, measured on a race's figures."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_seatrace.core.figures import Figures

LATENCY_METRICS = ("min", "avg", "med", "p90", "p95", "p99", "max")
METRICS = (*LATENCY_METRICS, "rps", "errors", "spread")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
TIME_UNITS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9}
GRAMMAR = (
    "'<metric> <op> <value>' with metric one of "
    + ", ".join(METRICS)
    + "; op one of < <= > >= == !=; a time value takes a unit ns, us, ms or s (default ms)"
)

_PATTERN = re.compile(r"^\s*([a-z0-9]+)\s*(<=|>=|==|!=|<|>)\s*([0-9]*\.?[0-9]+)\s*([a-zµ]*)\s*$")


class ThresholdError(ValueError):
    """A threshold string that does not parse; the message names it and the grammar."""


@dataclass(frozen=True, slots=True)
class Threshold:
    text: str
    metric: str
    op: str
    bound: float
    """In nanoseconds for time metrics, else plain."""

    def measure(self, figures: Figures) -> float:
        if self.metric in LATENCY_METRICS:
            return float(getattr(figures.latency.all, self.metric))
        if self.metric == "rps":
            return figures.rps
        if self.metric == "errors":
            return float(figures.errors)
        return figures.spread.max_ns

    def holds(self, value: float) -> bool:
        return not math.isnan(value) and OPERATORS[self.op](value, self.bound)

    def format_value(self, value: float) -> str:
        if self.metric in LATENCY_METRICS or self.metric == "spread":
            return f"{value / 1e6:.3f}ms"
        if self.metric == "rps":
            return f"{value:.1f}"
        return f"{value:g}"


def parse_threshold(text: object) -> Threshold:
    if not isinstance(text, str):
        raise ThresholdError(f"threshold {text!r} is not a string; expected {GRAMMAR}")
    match = _PATTERN.match(text)
    if not match:
        raise ThresholdError(f"threshold {text!r} does not parse; expected {GRAMMAR}")
    metric, op, number, unit = match.groups()
    if metric not in METRICS:
        raise ThresholdError(f"threshold {text!r}: unknown metric {metric!r}; expected {GRAMMAR}")
    value = float(number)
    timed = metric in LATENCY_METRICS or metric == "spread"
    if timed:
        if unit and unit not in TIME_UNITS:
            raise ThresholdError(f"threshold {text!r}: unknown unit {unit!r}; expected {GRAMMAR}")
        value *= TIME_UNITS[unit or "ms"]
    elif unit:
        raise ThresholdError(f"threshold {text!r}: {metric} takes no unit; expected {GRAMMAR}")
    return Threshold(text=text.strip(), metric=metric, op=op, bound=value)
