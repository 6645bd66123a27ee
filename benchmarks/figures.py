"""Figures over a race's records: spreads per seat, wins per seat, 5xx; and table cells."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping

from pytest_seatrace.engine.instrument import Outcome, RaceResult, Record

NS_PER_MS = 1_000_000


def nan_median(values: Iterable[float]) -> float:
    """The median of the values that are not NaN (NaN when none is)."""
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def fmt_or_dash(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or ``-`` for NaN (a figure that could not be read)."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def ms(ns: float | None) -> str:
    """Nanoseconds as milliseconds for a table cell."""
    if ns is None or math.isnan(ns):
        return "-"
    return f"{ns / NS_PER_MS:.3f}"


def spreads_by_resource(history: Iterable[Record], stamp: Callable[[Record], int]) -> list[int]:
    """Per (round, resource): last minus first non-zero ``stamp`` (ns); groups of one are skipped."""
    groups: dict[tuple[int, int], tuple[int, int, int]] = {}
    for rec in history:
        value = stamp(rec)
        if not value:
            continue
        key = (rec.round, rec.resource)
        low, high, count = groups.get(key, (value, value, 0))
        groups[key] = (min(low, value), max(high, value), count + 1)
    return [high - low for low, high, count in groups.values() if count > 1]


def client_spreads(result: RaceResult) -> list[int]:
    """Client side: from the return of the first final write to the return of the last."""
    return spreads_by_resource(result.history, lambda rec: rec.sent_ns)


def server_spreads(result: RaceResult) -> list[int]:
    """Server side: first to last ``X-Arrival-Ns`` stamp (taken after the body was read)."""
    return spreads_by_resource(result.history, lambda rec: rec.server_ns)


def count_5xx(status_counts: Mapping[int, int]) -> int:
    """Responses with a 5xx status, from status → count."""
    return sum(count for status, count in status_counts.items() if status >= 500)


def server_errors(result: RaceResult) -> int:
    """Responses with a 5xx status."""
    return count_5xx(result.status_counts)


def winners_per_resource(result: RaceResult) -> list[int]:
    """Acknowledged wins of each resource, in resource order (rounds summed)."""
    wins = [0] * len(result.resources)
    for rec in result.history:
        if rec.outcome is Outcome.WIN:
            wins[rec.resource] += 1
    return wins
