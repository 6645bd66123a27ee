"""Targets and their verdicts: one line per target, and the noise band of a "no wider than" target.

When both sides of a target measure the same thing (the service's own queue, say), one run can
put either side ahead. Such a target is judged on repeats interleaved with each other, pooled,
within a stated band: ``no_wider`` is that rule, ``start_spread`` and ``seed_scenario`` use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.cli import EXIT_BELOW_TARGET, EXIT_INCOMPLETE, EXIT_OK

CAUGHT_SHARE = 0.99
"""The share of runs in which a start must catch the double booking, where a target asks it."""
INTERLEAVED_NOISE = 1.05
"""How much wider than the other side's a server-side median may be and still count as no wider:
on the sample service that spread is the service's own serial work (~0.25 ms a request), the same
for any start that gets every request to it at once, so two equal medians differ by run-to-run
noise (start_spread measured 0.1-2 % apart; the old engine's was 1.8-2 x)."""


@dataclass(frozen=True)
class Check:
    what: str
    met: bool | None
    """None: could not be evaluated."""

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: "NOT EVALUATED"}[self.met]
        return f"target: {self.what}: {verdict}"


def exit_status(checks: Sequence[Check]) -> int:
    """1 when a target was missed, else 2 when one could not be evaluated, else 0."""
    if any(c.met is False for c in checks):
        return EXIT_BELOW_TARGET
    if any(c.met is None for c in checks):
        return EXIT_INCOMPLETE
    return EXIT_OK


def no_wider(measured: float, reference: float, band: float) -> bool | None:
    """``measured`` at most ``band`` x ``reference`` (both medians over interleaved repeats);
    None when either is NaN."""
    if math.isnan(measured) or math.isnan(reference):
        return None
    return measured <= band * reference


def run_to_run_band(per_run: Sequence[float], floor: float) -> float:
    """How far apart one side's own repeats lie: its largest per-run figure over its median
    (at least ``floor``), the band two equal sides can differ by in one run."""
    data = [v for v in per_run if not math.isnan(v)]
    if len(data) < 2:
        return floor
    return max(floor, max(data) / statistics.median(data))
